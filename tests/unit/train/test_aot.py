"""Ahead-of-time compilation for a TPU topology from a CPU-only machine (``train/aot.py``)."""

from __future__ import annotations

import importlib.util

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
