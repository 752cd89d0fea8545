"""Devices, meshes and shardings: one code path from 1 CPU to a TPU pod.

Models only name *logical* axes on their parameters (``nnx.with_partitioning(init, ("embed",
"mlp"))``). This module maps those names onto the physical mesh axes ``("data", "fsdp", "model")``
with rules that live in the config, builds the mesh from the config (``-1`` = the rest of the
devices), turns host-local batches into global arrays, and knows which process writes files.

Multi-host: ``jax.distributed.initialize()`` is called only when asked for, by flag or by the
environment variable ``NS2_DISTRIBUTED=1`` (coordinator, process count and id then come from
JAX's usual environment variables or the cluster auto-detection).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# Variables carry their logical axis names as metadata only; the train state is placed on the mesh
# explicitly (jit with out_shardings), so Flax must not try to shard each variable as it is created.
flax.config.update("flax_always_shard_variable", False)

MESH_AXES = ("data", "fsdp", "model")

# Logical axis -> mesh axes. The batch is split over data *and* fsdp (fsdp is data parallelism that
# also shards parameters); parameters shard their "embed" dimension over fsdp and their wide
# dimension (mlp, heads, ...) over model. Anything unnamed, or named here with None, is replicated.
# A convolution's input channels ("conv_in") also go over fsdp: the codec's kernels name no
# "embed" axis, and without this rule fsdp would leave every codec parameter replicated (a mesh
# axis is used once per array, so a kernel with both names shards only the first over fsdp).
# "layers" is the leading axis of a scanned stack (models/scan.py): replicated, so each layer's
# slice shards like an unscanned layer's parameters.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("channels", "model"),
    ("conv_in", "fsdp"),
    ("kernel", None),
    ("vocab", None),
    ("codebook", None),
    ("length", None),
    ("queries", None),
    ("layers", None),
)

log = logging.getLogger(__name__)


def maybe_initialize_distributed(requested: bool = False) -> None:
    """Start multi-host JAX when requested by flag or by ``NS2_DISTRIBUTED=1``; else do nothing.

    Extra environment: ``NS2_COORDINATOR`` (host:port), ``NS2_NUM_PROCESSES``, ``NS2_PROCESS_ID``
    for clusters without auto-detection (for example two local processes in a test).
    """
    if not (requested or os.environ.get("NS2_DISTRIBUTED", "0") == "1"):
        return
    if jax.distributed.is_initialized():
        return
    kwargs: dict[str, Any] = {}
    if "NS2_COORDINATOR" in os.environ:
        kwargs = dict(
            coordinator_address=os.environ["NS2_COORDINATOR"],
            num_processes=int(os.environ["NS2_NUM_PROCESSES"]),
            process_id=int(os.environ["NS2_PROCESS_ID"]),
        )
    if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
        # CPU collectives across processes need gloo (the default CPU backend has none).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    log.info(
        "jax.distributed: process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def is_main_process() -> bool:
    """Only process 0 writes logs, metrics, samples and config files."""
    return jax.process_index() == 0


def resolve_mesh_shape(mesh_cfg: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """Sizes for ``MESH_AXES`` from a config mapping; at most one axis may be -1 (the rest)."""
    unknown = set(mesh_cfg) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"mesh config has unknown axes {sorted(unknown)}; use {MESH_AXES}.")
    sizes = [int(mesh_cfg.get(a, 1)) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh config {dict(mesh_cfg)} has more than one -1 axis; keep one.")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(
                f"mesh {dict(mesh_cfg)} does not divide {num_devices} devices; change the sizes."
            )
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"mesh {dict(mesh_cfg)} needs {math.prod(sizes)} devices but {num_devices} are "
            "available; set one axis to -1 or match the device count."
        )
    return tuple(sizes)


def make_mesh(mesh_cfg: Mapping[str, int], devices: Sequence[Any] | None = None) -> Mesh:
    """The (data, fsdp, model) mesh over all (or the given) devices, with Auto axis types."""
    devices = list(devices) if devices is not None else jax.devices()
    shape = resolve_mesh_shape(mesh_cfg, len(devices))
    types = (AxisType.Auto,) * len(MESH_AXES)
    if len(devices) == jax.device_count() and devices == jax.devices():
        return jax.make_mesh(shape, MESH_AXES, axis_types=types)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=types)


def rules_from_config(rules: Iterable[Sequence[Any]] | None) -> tuple[tuple[str, Any], ...]:
    """Logical-axis rules from a config list (``[["embed", "fsdp"], ...]``), or the defaults."""
    if not rules:
        return DEFAULT_RULES
    out = []
    for rule in rules:
        name, target = rule[0], rule[1]
        if isinstance(target, list):
            target = tuple(target)
        out.append((str(name), target))
    return tuple(out)


def _mesh_axis_size(mesh: Mesh, axes: Any) -> int:
    if axes is None:
        return 1
    if isinstance(axes, str):
        return mesh.shape[axes]
    return math.prod(mesh.shape[a] for a in axes)


def logical_to_mesh_spec(
    logical: Sequence[str | None] | None,
    shape: Sequence[int],
    mesh: Mesh,
    rules: Sequence[tuple[str, Any]],
) -> P:
    """Mesh PartitionSpec for an array with the given logical axis names and shape.

    A dimension that the mapped mesh axes do not divide is split over the longest prefix of them
    that does (a batch of 2 on data=2 x fsdp=4 goes over data only), else replicated (a conv kernel
    of width 3 cannot be split 2 ways), so any model runs on any mesh; a mesh axis is used at most
    once per array.
    """
    if not logical:
        return P()
    mesh_axes = nn.logical_to_mesh_axes(tuple(logical), rules)
    used: set[str] = set()
    spec = []
    for dim, axes in zip(shape, mesh_axes, strict=False):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        names = tuple(a for a in names if a not in used and mesh.shape.get(a, 1) > 1)
        while names and dim % _mesh_axis_size(mesh, names):
            names = names[:-1]
        used.update(names)
        spec.append((names[0] if len(names) == 1 else names) if names else None)
    return P(*spec)


# The mesh and rules that ``constrain`` applies while a train step is traced (a stack: nested
# steps, e.g. a benchmark inside a test, restore the outer one).
_ACTIVATION_CONTEXT: list[tuple[Mesh, tuple[tuple[str, Any], ...]]] = []


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: Sequence[tuple[str, Any]]):
    """Within this block, ``constrain`` pins activations to ``mesh`` by logical axis names."""
    _ACTIVATION_CONTEXT.append((mesh, tuple(rules)))
    try:
        yield
    finally:
        _ACTIVATION_CONTEXT.pop()


def constrain(x: jax.Array, logical: Sequence[str | None]) -> jax.Array:
    """Sharding constraint on an activation by logical axis names; a no-op outside a train step.

    Without it XLA propagates *parameter* shardings into activations: an fsdp-sharded embedding
    makes the residual stream split along channels, and every layer then all-gathers the batch
    (the SPMD partitioner warns "involuntary full rematerialization"). Pinning the residual
    stream to (batch, length, embed) keeps activations split by examples, parameters gathered
    per layer: what FSDP means. Hidden layers name "mlp"/"heads" so a model axis splits them.
    """
    if not _ACTIVATION_CONTEXT:
        return x
    mesh, rules = _ACTIVATION_CONTEXT[-1]
    spec = logical_to_mesh_spec(logical, x.shape, mesh, rules)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


# Logical names of the common activation layouts.
ACT_EMBED = ("batch", "length", "embed")  # residual streams [B, T, C]
ACT_MLP = ("batch", "length", "mlp")  # wide hidden layers [B, T, F]
ACT_HEADS = ("batch", "length", "heads", None)  # attention q/k/v [B, T, H, D]
ACT_CHANNELS = ("batch", "length", "channels")  # codec conv activations [B, T, C]


def logical_shardings(
    abstract_tree: Any, logical_specs: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]]
) -> Any:
    """NamedShardings for every array of ``abstract_tree``, given a tree of logical specs."""

    def one(x, spec):
        return NamedSharding(mesh, logical_to_mesh_spec(spec, x.shape, mesh, rules))

    return jax.tree.map(one, abstract_tree, logical_specs, is_leaf=lambda s: s is None)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int = 1, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES):
    """Sharding of a batch array: leading axis over the batch mesh axes, the rest replicated."""
    axes = dict(rules).get("batch", ("data", "fsdp"))
    axes = tuple(a for a in ((axes,) if isinstance(axes, str) else axes) if mesh.shape[a] > 1)
    lead = axes if len(axes) > 1 else (axes[0] if axes else None)
    return NamedSharding(mesh, P(lead, *([None] * (ndim - 1))))


def batch_parallelism(mesh: Mesh, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> int:
    """How many ways the batch is split: the global batch must be a multiple of this."""
    axes = dict(rules).get("batch", ("data", "fsdp"))
    return _mesh_axis_size(mesh, axes)


def host_batch_to_global(
    batch: Mapping[str, np.ndarray], mesh: Mesh, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES
) -> dict[str, jax.Array]:
    """Turn this host's slice of the batch into global arrays sharded along the batch axes."""
    return {
        k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v), rules), v)
        for k, v in batch.items()
    }
