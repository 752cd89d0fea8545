"""What XLA says of a compiled program (FLOPs, memory) and the peak that utilisation is quoted
against (the chip's nominal bf16 peak, else a measured matmul)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from naturalspeech2_jax.train import compiled as compiled_lib


def test_compiled_costs_count_matmul_flops_and_memory():
    n = 64
    x = jnp.ones((n, n), jnp.float32)
    compiled = jax.jit(lambda a, b: a @ b).lower(x, x).compile()
    costs = compiled_lib.compiled_costs(compiled)
    assert costs["flops"] == pytest.approx(2 * n**3, rel=0.05)
    memory = compiled_lib.compiled_memory(compiled)
    assert memory["peak_bytes"] >= 3 * n * n * 4 - memory.get("alias_bytes", 0)


def test_reference_peak_choice():
    assert compiled_lib.nominal_bf16_peak("NVIDIA H100 80GB HBM3") == pytest.approx(989e12)
    assert compiled_lib.nominal_bf16_peak("TPU v5 lite") == pytest.approx(197e12)
    assert compiled_lib.nominal_bf16_peak("cpu") is None
    cpu = {"matmul_f32_flops_per_s": 5e10}
    assert compiled_lib.reference_peak(cpu) == (5e10, "measured_f32_matmul")
    gpu = {"matmul_f32_flops_per_s": 5e13, "matmul_bf16_flops_per_s": 6e14}
    assert compiled_lib.reference_peak(gpu) == (6e14, "measured_bf16_matmul")
    gpu["nominal_bf16_peak_flops_per_s"] = 9.89e14
    assert compiled_lib.reference_peak(gpu) == (9.89e14, "nominal_bf16_peak")


@pytest.mark.accelerator
def test_accelerator_matmul_reference_is_below_the_chips_nominal_peak():
    """On a GPU/TPU the reference measures a bf16 matmul too; a known chip's measured rate is a
    sane fraction of its data-sheet peak (what MFU is quoted against)."""
    reference = compiled_lib.matmul_reference()
    assert reference["platform"] != "cpu" and reference["matmul_n"] == 8192
    bf16 = reference["matmul_bf16_flops_per_s"]
    assert bf16 > 0 and reference["matmul_f32_flops_per_s"] > 0
    nominal = reference["nominal_bf16_peak_flops_per_s"]
    peak, name = compiled_lib.reference_peak(reference)
    if nominal is None:  # a chip missing from BF16_PEAK_TFLOPS: the measured bf16 matmul
        assert (peak, name) == (bf16, "measured_bf16_matmul")
    else:
        assert (peak, name) == (nominal, "nominal_bf16_peak")
        assert 0.05 * nominal < bf16 < 1.1 * nominal, (bf16, nominal)
