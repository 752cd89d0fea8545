"""``launch/benchmark.py --smoke`` end to end: every figure is there, finite and of the right kind
(timings are never asserted: the machines are shared and noisy)."""

from __future__ import annotations

import json

import numpy as np

from tests.helpers import load_script

TRAIN_KEYS = (
    "step_time_s",
    "examples_per_s",
    "compile_s",
    "flops_per_step",
    "mfu",
    "memory_per_device",
    "params",
)


def test_cli_smoke_writes_json_with_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--out", str(out), "--smoke", "--tasks", "loop_test,no_such_task"]
    assert load_script("benchmark").main(argv) == 0
    result = json.loads(out.read_text())
    reference = result["reference"]
    assert reference["matmul_f32_flops_per_s"] > 0
    assert reference["matmul_f32_flops_per_s"] == max(
        reference["matmul_f32_flops_per_s_start"], reference["matmul_f32_flops_per_s_end"]
    )
    assert result["reference"]["utilisation_against"]["name"] in (
        "measured_f32_matmul",
        "measured_bf16_matmul",
        "nominal_bf16_peak",
    )
    (row,) = result["train"]
    assert row["task"] == "loop_test" and row["preset"] == "smoke"
    for key in TRAIN_KEYS:
        assert row[key] is not None, key
    assert 0 < row["mfu"] < 1.5  # a tiny model on a noisy machine: sane, not asserted tightly
    assert row["flops_per_step"] > 0 and row["memory_per_device"]["peak_bytes"] > 0
    assert np.isfinite(row["step_time_s"]) and row["compile_s"] > 0
    assert [s["task"] for s in result["skipped"]] == ["no_such_task"]
    assert "ns2" in result["inference_note"]
    pipe = result["pipeline"]
    assert "skipped" not in pipe, pipe
    for kind in ("crop", "bucket"):
        assert pipe[kind]["examples_per_s"] > 0
        assert 1 <= pipe[kind]["distinct_batch_shapes"] <= 2
    sphinx = result["sphinx_alignment"]
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        assert "skipped" in sphinx
    else:
        assert "skipped" not in sphinx, sphinx
        assert sphinx["utterances"] == 8 and sphinx["utterances_per_s"] > 0
        # against the embedded corpus's exact timings
        assert sphinx["boundary_error_median_ms"] <= 25.0 and sphinx["failures"] <= 1
