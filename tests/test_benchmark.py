"""Tests of naturalspeech2_jax.evaluation.benchmark and launch/benchmark.py (smoke mode).

Timings are never asserted (the machines are shared and noisy): only that every figure is there,
finite and of the right kind.
"""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from naturalspeech2_jax.evaluation import benchmark

REPO = pathlib.Path(__file__).resolve().parents[1]

TRAIN_KEYS = (
    "step_time_s",
    "examples_per_s",
    "compile_s",
    "flops_per_step",
    "mfu",
    "memory_per_device",
    "params",
)


def _benchmark_cli():
    spec = importlib.util.spec_from_file_location("benchmark_cli", REPO / "launch" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compiled_costs_count_matmul_flops_and_memory():
    n = 64
    x = jnp.ones((n, n), jnp.float32)
    compiled = jax.jit(lambda a, b: a @ b).lower(x, x).compile()
    costs = benchmark.compiled_costs(compiled)
    assert costs["flops"] == pytest.approx(2 * n**3, rel=0.05)
    memory = benchmark.compiled_memory(compiled)
    assert memory["peak_bytes"] >= 3 * n * n * 4 - memory.get("alias_bytes", 0)


def test_reference_peak_choice():
    assert benchmark.nominal_bf16_peak("NVIDIA H100 80GB HBM3") == pytest.approx(989e12)
    assert benchmark.nominal_bf16_peak("TPU v5 lite") == pytest.approx(197e12)
    assert benchmark.nominal_bf16_peak("cpu") is None
    cpu = {"matmul_f32_flops_per_s": 5e10}
    assert benchmark.reference_peak(cpu) == (5e10, "measured_f32_matmul")
    gpu = {"matmul_f32_flops_per_s": 5e13, "matmul_bf16_flops_per_s": 6e14}
    assert benchmark.reference_peak(gpu) == (6e14, "measured_bf16_matmul")
    gpu["nominal_bf16_peak_flops_per_s"] = 9.89e14
    assert benchmark.reference_peak(gpu) == (9.89e14, "nominal_bf16_peak")


def test_missing_task_is_a_note_not_an_error():
    config, why = benchmark.load_task_config("no_such_task", "smoke")
    assert config is None and "configs/no_such_task.py" in why
    config, why = benchmark.load_task_config("loop_test", "smoke")
    assert why is None and config.task == "loop_test"


class _FakeSynthesizer:
    """Stands in for NaturalSpeech 2: latent frames from the sampler's step count."""

    latent_dim = 4

    def synthesize(self, phonemes, token_mask, prompt, prompt_mask, rng, *, sampler, steps, **kw):
        if sampler == "broken":
            raise RuntimeError("no such sampler")
        frames = kw["max_frames"]
        z = jnp.zeros((1, frames, self.latent_dim))
        for _ in range(steps):
            z = z + 1.0
        return {"latent": z, "durations": kw["durations"]}


def test_inference_rtf_rows_per_sampler_and_steps():
    out = benchmark.benchmark_inference(
        _FakeSynthesizer(), samplers=["euler", "broken"], step_counts=[1, 3], seconds=0.5
    )
    assert out["audio_seconds"] == pytest.approx(out["frames"] * 200 / 16000)
    rows = {(r["sampler"], r["steps"]): r for r in out["rows"]}
    assert set(rows) == {("euler", 1), ("euler", 3), ("broken", 1), ("broken", 3)}
    assert rows[("euler", 3)]["rtf"] > 0 and math.isfinite(rows[("euler", 3)]["rtf"])
    assert "no such sampler" in rows[("broken", 1)]["error"]


def test_cli_smoke_writes_json_with_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--out", str(out), "--smoke", "--tasks", "loop_test,no_such_task"]
    assert _benchmark_cli().main(argv) == 0
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


def test_random_codec_dataset_and_assets_for_speed_runs(tmp_path):
    from naturalspeech2_jax.data import pipeline
    from naturalspeech2_jax.models import ns2_task, random_codec

    out = random_codec.random_codes_dataset(tmp_path)
    assert json.loads((out / ns2_task.CODEC_FILE).read_text())["codec_checkpoint"] == "random"
    source = pipeline.open_split(str(out), "train")
    ex = source[0]
    assert ex["codes"].shape == (len(ex["log_f0"]), 16)
    assert ex["codes"].min() >= 0 and ex["codes"].max() < 1024
    assert random_codec.random_codes_dataset(tmp_path) == out  # built once, then reused
    assets = ns2_task.load_codec_assets("random", str(out))
    assert assets.codebooks.shape == (16, 1024, 256) and assets.checkpoint == "random"
    assert assets.decode(np.zeros((2, 5, 256), np.float32)).shape == (2, 1000)
