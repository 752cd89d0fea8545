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
from naturalspeech2_jax.train import cpu_profile


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
    """One CE-RVQ mode (CI time), with scanned stacks: the FLOPs come from the looped twin,
    since XLA's cost analysis counts a scanned body once."""
    out = tmp_path / "r.json"
    profile = tmp_path / "profile"
    monkeypatch.setattr(sys, "argv", ["reference_speed"])
    # No inference timings here (they are the same code as benchmarks/speed.py's): CI time.
    argv = ["--smoke", "--steps", "2", "--no_inference", "--ce_rvq", "on", "--out", str(out)]
    # Deeper encoders than smoke's one layer, so that the scanned stacks repeat their block.
    deeper = ["--set", "model.enc_layers=4", "--set", "model.prompt_layers=4"]
    perf = tmp_path / "perf"
    rs.main([*argv, "--set", "model.scan_layers=true", *deeper, "--profile", str(profile),
             "--perf", str(perf)])  # fmt: skip
    result = json.loads(out.read_text())
    assert result["reference"] == rs.REFERENCE and result["before"] == rs.BEFORE
    assert set(result["modes"]) == {"on"}
    r = result["modes"]["on"]
    s = r["summary"]
    for key in ("step_s", "frames_per_s", "compile_s", "peak_rss_gib", "forward_s",
                "forward_backward_s", "gflop_per_step", "flop_utilisation"):  # fmt: skip
        assert math.isfinite(s[key]) and s[key] > 0, (key, s[key])
    t = r["raw"]["training"]
    sh, step = t["shapes"], t["step"]["median_s"]  # unrounded
    assert s["frames_per_s"] == pytest.approx(sh["batch"] * sh["frames"] / step, 0.01)
    assert s["reference_frames_per_s"] == rs.REFERENCE["on"]["frames_per_s"]
    assert s["step_spread_s"][0] <= s["step_s"] <= s["step_spread_s"][1]
    assert s["minor_faults_per_step"] >= 0 and s["system_cpu_s_per_step"] >= 0
    # The scanned program's own count misses all but one block per stack.
    assert t["model_flops"] > 1.2 * t["lowered_flops"] > 0
    # The profile names where the step's time goes: op kinds and this package's source lines,
    # with the optimised HLO beside it.
    ops = json.loads((profile / "on" / "ops.json").read_text())
    assert ops["by_kind"] and ops["by_source"] and ops["by_name"]
    assert any(row["source"].startswith(("models/", "diffusion/", "tasks/", "train/"))
               for row in ops["by_source"]), ops["by_source"]  # fmt: skip
    assert "HloModule" in (profile / "on" / "hlo.txt").read_text()[:2000]
    # perf's CPU samples per class of code, or the one reason it cannot sample here (CI
    # machines may have no perf).
    cpu = t["cpu_profile"]
    if cpu_profile.unavailable():
        assert s["cpu_share"] == cpu["error"] == cpu_profile.unavailable()
    else:
        assert sum(s["cpu_share"].values()) == pytest.approx(1.0, abs=0.02)
        assert cpu["onednn_kernels_named"] and (perf / "on" / "report.txt").exists()


def test_inference_reports_euler_150_and_the_default_sampler_beside_it():
    """Smoke sizes: the denoiser step from two Euler step counts, and the default sampler's own
    rows (the ones issue 25's RTF target is about), each with a real-time factor."""
    inf = rs.measure_inference(rs.bench_config(ce_rvq=True, smoke=True), smoke=True)
    assert "error" not in inf, inf
    # A difference of two timings: at smoke sizes noise can make it negative, so only finite.
    assert math.isfinite(inf["denoiser_step_s"]) and inf["audio_seconds"] > 0
    default = f"{rs.DEFAULT_SAMPLER}2"
    for key in ("euler4", default):
        assert inf[f"{key}_s"] > 0
        assert inf[f"{key}_rtf"] == pytest.approx(inf[f"{key}_s"] / inf["audio_seconds"], 0.01)
    assert "euler1_s" not in inf  # the one-step row only serves the per-step figure
    summary = rs.summarise("on", {"training": _fake_training(), "matmul": {
        "matmul_f32_flops_per_s": 1e11}, "inference": inf})  # fmt: skip
    assert summary["euler4_rtf"] == round(inf["euler4_rtf"], 3)
    assert summary[f"{default}_rtf"] == round(inf[f"{default}_rtf"], 3)


def _fake_training() -> dict:
    step = {"median_s": 1.0, "min_s": 0.9, "max_s": 1.1}
    return {"step": step, "forward": step, "forward_backward": step, "compile_s": 1.0,
            "shapes": rs.SMOKE_SHAPES, "model_flops": 1e9, "peak_rss_gib_after_training": 1.0,
            "xla": {"memory": {"peak_bytes": 2**30}}}  # fmt: skip
