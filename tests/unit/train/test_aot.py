"""Ahead-of-time compilation for a TPU topology from a CPU-only machine (``train/aot.py``)."""

from __future__ import annotations

import importlib.util
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from naturalspeech2_jax.train import aot


def test_compile_topology_targets_tpu_chips_or_names_the_missing_libtpu():
    """With libtpu installed, a sharded program compiles for 4 TPU v5e chips on this CPU-only
    machine; without it (CI), the error says what to install."""
    if importlib.util.find_spec("libtpu") is None:
        with pytest.raises(ValueError, match=r"jax\[tpu\]"):
            aot.topology_devices("v5e:2x2")
        return
    devices = aot.topology_devices("v5e:2x2")
    assert len(devices) == 4 and devices[0].platform == "tpu"
    mesh = Mesh(np.asarray(devices), ("data",))
    x = jax.ShapeDtypeStruct(
        (64, 256), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec("data"))
    )
    compiled = jax.jit(lambda a: jnp.sum(a @ a.T)).lower(x).compile()
    assert compiled.memory_analysis().argument_size_in_bytes == 16 * 256 * 4  # one shard


def test_time_steps_times_a_scanned_step_with_its_traced_flops(tmp_path, monkeypatch):
    """The report's model FLOPs count a scanned step's loop bodies once per iteration (XLA's
    count has them once), and ``--profile`` hands the compiled step, its state and batch to the
    op profiler (``train/op_profile.py``: its breakdown of a scanned step is asserted in
    tests/unit/benchmarks/test_reference_speed.py; tracing it again here was 20-40 s of CI)."""
    from naturalspeech2_jax.benchmarks import reference_speed as rs
    from naturalspeech2_jax.train import loop

    config = rs.bench_config(ce_rvq=True, smoke=True, overrides=[
        "model.scan_layers=true", "model.wn_layers=12", "model.pred_layers=6"])  # fmt: skip
    trainer = loop.Trainer(config, str(tmp_path / "wd"))
    compiled, report = aot.compile_report(trainer)
    assert report["model_flops_per_step"] > 1.5 * report["flops_per_step"]  # 2 WaveNet blocks
    calls = []

    def profile(compiled_, state, batch, directory):
        calls.append(directory)
        assert compiled_ is compiled and set(batch) == set(trainer.abstract_batch())
        assert jax.tree.structure(state) == jax.tree.structure(trainer.abstract)
        return {"top_kinds": [{"kind": "fusion(dot)", "ms_per_step": 1.0}]}

    monkeypatch.setattr(aot, "profile_steps", profile)
    out = aot.time_steps(trainer, compiled, 1, report, profile_dir=str(tmp_path / "prof"))
    assert out["step_time_s"] > 0 and 0 < out["mfu"] < 1.5
    assert calls == [str(tmp_path / "prof")] and out["profile"]["top_kinds"]
    assert math.isfinite(out["losses"]["model/loss"])
