"""The train state as one pytree, created already sharded on the mesh.

``TrainState`` holds, per parameter group, the parameters and optimizer state, plus the model's
non-parameter variables ("rest"), an optional parameter EMA, the step, the base RNG key and the
count of consecutive non-finite steps. It is a plain pytree (no module objects), so it crosses the
jit boundary, is donated, and is saved by Orbax as is.

Shardings come from the logical axis names that parameters carry as metadata; optimizer moments
carry the same metadata (they mirror the parameters), everything else is replicated. The state is
built by ``jax.jit(init, out_shardings=...)`` so no device ever holds an unsharded copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from naturalspeech2_jax import parallel
from naturalspeech2_jax.train.task import ParamGroup


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: dict[str, nnx.State]
    opt_state: dict[str, Any]
    rest: nnx.State
    ema: dict[str, nnx.State] | None
    rng: jax.Array  # raw uint32 key data (plain array: checkpoints need no key types)
    nonfinite: jax.Array  # consecutive steps whose update was skipped for NaN/Inf


def split_model(model: nnx.Module, groups: Sequence[ParamGroup]):
    """(graphdef, {group: params}, rest): every nnx.Param must fall in exactly one group."""
    graphdef, *parts = nnx.split(model, *[g.filter for g in groups], ...)
    params = {g.name: p for g, p in zip(groups, parts[:-1], strict=True)}
    leftover = nnx.state(parts[-1], nnx.Param)
    if jax.tree.leaves(leftover):
        raise ValueError("some nnx.Param variables belong to no parameter group; fix the filters.")
    return graphdef, params, parts[-1]


def merge_model(graphdef, groups: Sequence[ParamGroup], params: dict, rest) -> nnx.Module:
    return nnx.merge(graphdef, *[params[g.name] for g in groups], rest, copy=True)


def make_init_fn(
    build_model: Callable[[nnx.Rngs], nnx.Module],
    groups: Sequence[ParamGroup],
    txs: dict[str, optax.GradientTransformation],
    ema_decay: float,
    param_dtype: Any = jnp.float32,
) -> Callable[[jax.Array], TrainState]:
    """A pure function seed-key -> fresh TrainState (to be jitted with out_shardings).

    Floating parameters are stored in ``param_dtype`` (the master weights of the precision policy)
    whatever dtype the modules created them in.
    """

    def init(key: jax.Array) -> TrainState:
        init_key, run_key = jax.random.split(key)
        model = build_model(nnx.Rngs(params=init_key, dropout=init_key))
        _, params, rest = split_model(model, groups)
        params = jax.tree.map(
            lambda x: x.astype(param_dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params
        )
        opt_state = {g.name: txs[g.name].init(params[g.name]) for g in groups}
        ema = jax.tree.map(jnp.copy, params) if ema_decay > 0 else None
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=opt_state,
            rest=rest,
            ema=ema,
            rng=jax.random.key_data(run_key),
            nonfinite=jnp.zeros((), jnp.int32),
        )

    return init


def _is_var(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def _logical_names(var: nnx.Variable) -> tuple | None:
    meta = var.get_metadata()
    return meta.get("out_sharding") or meta.get("sharding_names") or meta.get("sharding")


def state_shardings(abstract: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> Any:
    """A NamedSharding for every array of an abstract state (same tree structure)."""

    def one(x):
        if _is_var(x):
            shape = x.get_value().shape
            spec = parallel.logical_to_mesh_spec(_logical_names(x), shape, mesh, rules)
            return x.replace(NamedSharding(mesh, spec))
        return NamedSharding(mesh, jax.sharding.PartitionSpec())

    return jax.tree.map(one, abstract, is_leaf=_is_var)


def with_shardings(abstract: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs that carry their target sharding (an Orbax restore target)."""
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )


def param_count(tree: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(tree))
