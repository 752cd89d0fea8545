"""Ahead-of-time compilation of the real train step: memory and FLOPs for a mesh, then step time.

``compile_report(trainer)`` lowers the jitted step of a ``Trainer`` for its abstract state and the
task's largest batch (``Task.abstract_batch``), compiles it for the trainer's mesh and reads XLA's
memory analysis (per device: arguments + outputs + temporaries - donated aliases) and cost
analysis (FLOPs of the per-device program; times the device count for the whole step), and the
matmul and convolution FLOPs of the traced step (``train/flops.py``: the count that is right for
scanned layer stacks, whose loop bodies XLA counts once; model FLOP utilisation uses it). Nothing
is allocated, so a TPU-pod mesh can be checked on CPU with simulated devices, or, better, for
the compile-only devices of a real TPU topology (``topology_devices``; XLA's TPU compiler, so the
memory is that of the chips, and it needs libtpu but no TPU).

``time_steps(trainer, compiled, n)`` then allocates the state and a synthetic batch of that shape
and times ``n`` steps: the same program, on whatever backend runs it (``profile_dir``: and
writes where their time goes). Model FLOP utilisation is
quoted against the nominal bf16 peak of the chip when known (``train/compiled.py``), else
against a matmul measured in the same run.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from naturalspeech2_jax.train import compiled as xla
from naturalspeech2_jax.train import state as state_lib
from naturalspeech2_jax.train.flops import traced_flops
from naturalspeech2_jax.train.op_profile import profile_steps


def compile_report(trainer: Any) -> tuple[Any, dict[str, Any]]:
    """(compiled step, report) for the trainer's config and mesh; see the module docstring."""
    start = time.perf_counter()
    lowered = trainer.lower_step()
    lower_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    memory = xla.compiled_memory(compiled)
    flops = xla.compiled_costs(compiled)["flops"]
    n_dev = trainer.mesh.devices.size
    batch = trainer.abstract_batch()
    state = state_lib.with_shardings(trainer.abstract, trainer.shardings)
    # A cond's cheapest branch (the codec's GAN branch is off before its start step).
    model_flops = traced_flops(trainer.step_fn, state, batch, branches="min")
    device = trainer.mesh.devices.flat[0]  # a compile-only TPU device under --compile_topology
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(trainer.abstract.params))
    report = {
        "task": trainer.config.task,
        "preset": trainer.config.get("preset", ""),
        "platform": device.platform,
        "device_kind": device.device_kind,
        "devices": int(n_dev),
        "mesh": {k: int(v) for k, v in trainer.mesh.shape.items()},
        "global_batch": int(trainer.config.batch_size),
        "batch_shapes": {k: list(v.shape) for k, v in batch.items()},
        "compute_dtype": trainer.config.precision.compute_dtype,
        "param_dtype": trainer.config.precision.param_dtype,
        "params": int(params),
        "lower_s": round(lower_s, 2),
        "compile_s": round(compile_s, 2),
        "memory_per_device_bytes": memory["peak_bytes"],
        "memory_per_device": memory,
        "flops_per_step_per_device": flops,
        "flops_per_step": flops * n_dev if flops is not None else None,
        # XLA counts a while loop's body once, so for scanned stacks the above is a fraction of
        # the work; this counts the traced matmuls and convolutions, scans times their length.
        "model_flops_per_step": model_flops,
        "model_flops_per_step_per_device": model_flops / n_dev,
    }
    return compiled, report


def topology_devices(name: str) -> list[Any]:
    """The compile-only devices of a TPU topology such as ``v5p:2x2x2`` (8 chips), ``v5e:2x4``,
    ``v6e:2x4`` or ``v4:2x2x1`` (v4 and tpu7x count cores), for compiling on a machine without
    TPUs. Needs the libtpu that jax[tpu] pins (``pip install "jax[tpu]==$JAX_VERSION"``)."""
    # Only libtpu's compiler is used: no GCE metadata server to ask, and no chip to lock (its
    # lockfile otherwise stops a second compile, or a test, while one runs).
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    from jax.experimental.topologies import get_topology_desc

    try:
        return list(get_topology_desc(topology_name=name, platform="tpu").devices)
    except Exception as e:  # noqa: BLE001 - missing libtpu or an unknown name: say which
        raise ValueError(
            f"cannot build TPU topology {name!r} ({type(e).__name__}: {str(e)[:200]}); install "
            f'libtpu with `pip install "jax[tpu]=={jax.__version__}"` and name a topology like '
            "v5p:2x2x2, v5e:2x4 or v6e:2x4."
        ) from None


def synthetic_batch(abstract_batch: dict[str, jax.ShapeDtypeStruct], seed: int = 0) -> dict:
    """Global arrays of the batch's shapes: masks all ones, other floats N(0, 0.1), integers 0
    (valid phoneme/code ids). Values do not change a dense program's cost, only its numbers."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, s in abstract_batch.items():
        if "mask" in k:
            host = np.ones(s.shape, s.dtype)
        elif jnp.issubdtype(s.dtype, jnp.floating):
            host = (0.1 * rng.standard_normal(s.shape)).astype(s.dtype)
        else:
            host = np.zeros(s.shape, s.dtype)
        out[k] = jax.make_array_from_callback(s.shape, s.sharding, lambda idx, h=host: h[idx])
    return out


def time_steps(
    trainer: Any,
    compiled: Any,
    steps: int,
    report: dict[str, Any],
    profile_dir: str | None = None,
) -> dict[str, Any]:
    """Measured step time (median of ``steps`` after one warm-up) and model FLOP utilisation;
    with ``profile_dir``, three more steps traced there and broken down per HLO instruction,
    op kind and source line (``ops.json``; the top of each under ``profile``)."""
    state = jax.jit(trainer.init_fn, out_shardings=trainer.shardings)(trainer.key)
    batch = synthetic_batch(trainer.abstract_batch())
    state, metrics = compiled(state, batch)  # warm-up (first-run allocations, autotuning)
    jax.block_until_ready((state, metrics))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    reference = xla.matmul_reference()
    peak, peak_name = xla.reference_peak(reference)
    per_device = report.get("model_flops_per_step_per_device")
    out = {
        "step_time_s": step_s,
        "step_times_s": [round(t, 4) for t in times],
        "examples_per_s": int(trainer.config.batch_size) / step_s,
        "peak_flops_per_s_per_device": peak,
        "peak_reference": peak_name,
    }
    if per_device is not None:
        out["model_flops_per_s_per_device"] = per_device / step_s
        out["mfu"] = per_device / step_s / peak
    losses = {k: float(v) for k, v in jax.device_get(metrics).items() if k.endswith("/loss")}
    out["losses"] = losses
    if profile_dir:
        out["profile"] = profile_steps(compiled, state, batch, profile_dir)
    return out
