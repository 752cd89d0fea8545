"""Tests of naturalspeech2_jax.benchmarks.reference_speed (the issue-25 comparison with PyTorch).

The CLI runs end to end on the smoke sizes (one worker process per CE-RVQ mode). Timings are never
asserted: only that every column of the issue's table is there, finite, and consistent with the
others (frames/s from the step time, the reference beside it).
"""

from __future__ import annotations

import json
import math
import sys

import pytest

from naturalspeech2_jax.benchmarks import reference_speed as rs


def test_config_is_the_reference_size_and_ce_rvq_off_zeroes_its_weight():
    on = rs.bench_config(ce_rvq=True)
    off = rs.bench_config(ce_rvq=False)
    m = on.model
    assert (m.dim, m.heads, m.vocab_size, m.enc_layers, m.pred_layers, m.wn_layers) == (
        256, 8, 100, 4, 12, 12,
    )  # fmt: skip
    assert m.w_ce_rvq > 0 and off.model.w_ce_rvq == 0
    assert rs.bench_config(ce_rvq=True, overrides=["model.heads=4"]).model.heads == 4


def test_bad_arguments_are_one_sentence():
    for argv, words in ((["--ce_rvq", "maybe"], "--ce_rvq"), (["--steps", "0"], "--steps")):
        with pytest.raises(SystemExit) as e:
            rs.main(argv)
        assert str(e.value).startswith("error:") and words in str(e.value)


@pytest.mark.slow
def test_smoke_run_reports_every_column_of_the_table(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    profile = tmp_path / "profile"
    monkeypatch.setattr(sys, "argv", ["reference_speed"])
    # No inference timings here (they are the same code as benchmarks/speed.py's): CI time.
    argv = ["--smoke", "--steps", "2", "--no_inference", "--out", str(out), "--profile"]
    rs.main([*argv, str(profile)])
    result = json.loads(out.read_text())
    assert result["reference"] == rs.REFERENCE and result["before"] == rs.BEFORE
    assert set(result["modes"]) == {"on", "off"}
    for mode, r in result["modes"].items():
        s = r["summary"]
        for key in ("step_s", "frames_per_s", "compile_s", "peak_rss_gib", "forward_s",
                    "forward_backward_s"):  # fmt: skip
            assert math.isfinite(s[key]) and s[key] > 0, (mode, key, s[key])
        sh = r["raw"]["training"]["shapes"]
        step = r["raw"]["training"]["step"]["median_s"]  # unrounded
        assert s["frames_per_s"] == pytest.approx(sh["batch"] * sh["frames"] / step, 0.01)
        assert s["reference_frames_per_s"] == rs.REFERENCE[mode]["frames_per_s"]
        assert s["step_spread_s"][0] <= s["step_s"] <= s["step_spread_s"][1]
        # The profile names where the step's time goes: op kinds and this package's source lines.
        ops = json.loads((profile / mode / "ops.json").read_text())
        assert ops["by_kind"] and ops["by_source"]
        assert any(row["source"].startswith(("models/", "diffusion/", "tasks/", "train/"))
                   for row in ops["by_source"]), ops["by_source"]  # fmt: skip
    # CE-RVQ off skips the codebook distances: fewer FLOPs in its step.
    on, off = (result["modes"][m]["raw"]["training"]["xla"]["flops"] for m in ("on", "off"))
    assert 0 < off < on
