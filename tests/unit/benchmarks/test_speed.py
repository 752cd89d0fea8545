"""Tests of naturalspeech2_jax.benchmarks.speed (the CLI end to end: tests/integration).

Timings are never asserted (the machines are shared and noisy): only that every figure is there,
finite and of the right kind.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import pytest

from naturalspeech2_jax.benchmarks import speed
from naturalspeech2_jax.train import compiled


def test_compiled_program_figures_are_re_exported():
    for name in ("compiled_costs", "compiled_memory", "matmul_reference", "reference_peak",
                 "nominal_bf16_peak", "BF16_PEAK_TFLOPS", "matmul_flops_per_second"):  # fmt: skip
        assert getattr(speed, name) is getattr(compiled, name), name
    assert speed.time_calls is compiled.time_calls


def test_missing_task_is_a_note_not_an_error():
    config, why = speed.load_task_config("no_such_task", "smoke")
    assert config is None and "configs/no_such_task.py" in why
    config, why = speed.load_task_config("loop_test", "smoke")
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
    out = speed.benchmark_inference(
        _FakeSynthesizer(), samplers=["euler", "broken"], step_counts=[1, 3], seconds=0.5
    )
    assert out["audio_seconds"] == pytest.approx(out["frames"] * 200 / 16000)
    rows = {(r["sampler"], r["steps"]): r for r in out["rows"]}
    assert set(rows) == {("euler", 1), ("euler", 3), ("broken", 1), ("broken", 3)}
    assert rows[("euler", 3)]["rtf"] > 0 and math.isfinite(rows[("euler", 3)]["rtf"])
    assert "no such sampler" in rows[("broken", 1)]["error"]
