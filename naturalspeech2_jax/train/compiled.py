"""What XLA says of a compiled program, and the peak it is measured against.

``compiled_costs`` (FLOPs and bytes accessed per device, XLA's cost analysis) and
``compiled_memory`` (arguments, outputs, temporaries: XLA's memory analysis) read a compiled step;
``matmul_reference`` measures the FLOP/s of a large matmul on this machine in this run and
``reference_peak`` picks what model FLOP utilisation is quoted against (a chip's nominal dense
bf16 peak when known, :data:`BF16_PEAK_TFLOPS`). Used by ahead-of-time compilation
(``train/aot.py``) and the speed benchmarks (``benchmarks/speed.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

log = logging.getLogger(__name__)

# Nominal dense bfloat16 peak per chip, TFLOP/s (vendor data sheets), matched on device_kind.
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,  # SXM; PCIe is 756
    "A100": 312.0,
    "L4": 121.0,
    "A10": 125.0,
    "V100": 125.0,
    "TPU v4": 275.0,
    "TPU v5 lite": 197.0,
    "TPU v5e": 197.0,
    "TPU v5p": 459.0,
    "TPU v5": 459.0,
    "TPU v6 lite": 918.0,
    "TPU v6e": 918.0,
}


def nominal_bf16_peak(device_kind: str) -> float | None:
    """Nominal dense bf16 FLOP/s of an accelerator chip, or None when unknown (or a CPU)."""
    kind = device_kind.upper()
    for name in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if name.upper() in kind:
            return BF16_PEAK_TFLOPS[name] * 1e12
    return None


def time_calls(fn: Callable[[], Any], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def matmul_flops_per_second(n: int, dtype: Any, repeats: int = 3, device: Any = None) -> float:
    """Measured FLOP/s of an [n, n] @ [n, n] matmul (2 n^3 FLOPs) after a warm-up call."""
    device = device or jax.devices()[0]
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.device_put(jax.random.normal(key_a, (n, n), jnp.float32).astype(dtype), device)
    b = jax.device_put(jax.random.normal(key_b, (n, n), jnp.float32).astype(dtype), device)
    f = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(f(a, b))
    best = min(time_calls(lambda: f(a, b), repeats))
    return 2.0 * n**3 / best


def matmul_reference(smoke: bool = False) -> dict[str, Any]:
    """Reference FLOP/s on the first device: float32 matmul always, bf16 too on accelerators."""
    device = jax.devices()[0]
    accelerator = device.platform != "cpu"
    n = 8192 if accelerator else (512 if smoke else 2048)
    out: dict[str, Any] = {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "num_devices": jax.device_count(),
        "matmul_n": n,
        "matmul_f32_flops_per_s": matmul_flops_per_second(n, jnp.float32, device=device),
    }
    if accelerator:
        out["matmul_bf16_flops_per_s"] = matmul_flops_per_second(n, jnp.bfloat16, device=device)
        out["nominal_bf16_peak_flops_per_s"] = nominal_bf16_peak(device.device_kind)
    return out


def reference_peak(reference: Mapping[str, Any]) -> tuple[float, str]:
    """The FLOP/s that utilisation is quoted against, and its name.

    CPU: the measured float32 matmul. Accelerator: the nominal bf16 peak when known, else the
    measured bf16 matmul.
    """
    nominal = reference.get("nominal_bf16_peak_flops_per_s")
    if nominal:
        return float(nominal), "nominal_bf16_peak"
    if reference.get("matmul_bf16_flops_per_s"):
        return float(reference["matmul_bf16_flops_per_s"]), "measured_bf16_matmul"
    return float(reference["matmul_f32_flops_per_s"]), "measured_f32_matmul"


def compiled_costs(compiled: Any) -> dict[str, float | None]:
    """FLOPs and bytes accessed of a compiled program (XLA cost analysis; per device program)."""
    try:
        cost = compiled.cost_analysis()
    except Exception as e:  # noqa: BLE001 - some backends do not implement it
        log.warning("cost analysis unavailable: %s", e)
        return {"flops": None, "bytes_accessed": None}
    if isinstance(cost, Sequence) and not isinstance(cost, Mapping):
        cost = cost[0] if cost else {}
    cost = cost or {}
    flops = cost.get("flops")
    accessed = cost.get("bytes accessed")
    return {
        "flops": float(flops) if flops is not None else None,
        "bytes_accessed": float(accessed) if accessed is not None else None,
    }


def compiled_memory(compiled: Any) -> dict[str, int | None]:
    """Compiled memory analysis in bytes; ``peak_bytes`` = arguments + outputs + temporaries -
    aliased (donated) bytes, the program's footprint on one device."""
    try:
        mem = compiled.memory_analysis()
    except Exception as e:  # noqa: BLE001 - some backends do not implement it
        log.warning("memory analysis unavailable: %s", e)
        mem = None
    if mem is None:
        return {"peak_bytes": None}
    fields = {
        "argument_bytes": "argument_size_in_bytes",
        "output_bytes": "output_size_in_bytes",
        "temp_bytes": "temp_size_in_bytes",
        "alias_bytes": "alias_size_in_bytes",
        "generated_code_bytes": "generated_code_size_in_bytes",
    }
    out = {k: int(getattr(mem, attr, 0) or 0) for k, attr in fields.items()}
    out["peak_bytes"] = (
        out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
    )
    peak = getattr(mem, "peak_memory_in_bytes", None)
    if peak:
        out["xla_peak_memory_in_bytes"] = int(peak)
    return out
