"""The pure training step: ``step(state, batch) -> (state, metrics)``, shared by every model.

Inside one jitted call, for each parameter group in order: compute that group's loss and gradients
(optionally accumulated over micro-batches with a scan), clip and apply its optimizer. Then update
the parameter EMA and skip the whole update if any loss or gradient is NaN/Inf (counting the
consecutive skips so the host can stop the run). The mixed-precision policy casts floating
parameters to the compute dtype for the forward pass; master weights and optimizer state stay in
the parameter dtype. The per-step RNG is ``fold_in(base_key, step)``, so resuming at step k replays
exactly the randomness of an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from naturalspeech2_jax.train.state import TrainState, merge_model
from naturalspeech2_jax.train.task import ParamGroup

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_from_name(name: str) -> Any:
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(_DTYPES)}.")
    return _DTYPES[name]


def cast_floats(tree: Any, dtype: Any) -> Any:
    """Cast floating arrays of a pytree (parameters for the forward pass) to ``dtype``."""

    def cast(x):
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(cast, tree)


def _split_micro(batch: dict, accum: int) -> dict:
    """[B, ...] -> [accum, B/accum, ...] with micro-batch i = rows i, i+accum, ... so that every
    micro-batch stays spread over all devices of the batch axis."""

    def split(x):
        if x.shape[0] % accum:
            raise ValueError(f"batch size {x.shape[0]} is not a multiple of grad_accum={accum}.")
        return jnp.swapaxes(x.reshape(x.shape[0] // accum, accum, *x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def make_train_step(
    graphdef: Any,
    groups: Sequence[ParamGroup],
    txs: dict[str, optax.GradientTransformation],
    *,
    compute_dtype: Any = jnp.float32,
    grad_accum: int = 1,
    ema_decay: float = 0.0,
):
    """Build the pure step function for these groups; jit it with shardings and donation."""

    def group_update(state_params, rest, opt_state, group, batch, key, step):
        def loss_of(p_group, rest, micro, k):
            params = {**state_params, group.name: p_group}
            model = merge_model(graphdef, groups, cast_floats(params, compute_dtype), rest)
            loss, metrics = group.loss_fn(model, micro, k, step)
            new_rest = nnx.state(model, nnx.Not(nnx.Param))
            return loss.astype(jnp.float32), (metrics, new_rest)

        grad_fn = jax.value_and_grad(loss_of, has_aux=True)
        p_group = state_params[group.name]
        if grad_accum == 1:
            (loss, (metrics, rest)), grads = grad_fn(p_group, rest, batch, key)
        else:
            micro = _split_micro(batch, grad_accum)
            keys = jax.random.split(key, grad_accum)

            def body(carry, xs):
                g_sum, rest = carry
                mb, k = xs
                (loss, (metrics, rest)), g = grad_fn(p_group, rest, mb, k)
                return (jax.tree.map(jnp.add, g_sum, g), rest), (loss, metrics)

            zeros = jax.tree.map(jnp.zeros_like, p_group)
            (g_sum, rest), (losses, metrics) = jax.lax.scan(body, (zeros, rest), (micro, keys))
            grads = jax.tree.map(lambda g: g / grad_accum, g_sum)
            loss, metrics = jnp.mean(losses), jax.tree.map(jnp.mean, metrics)
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, p_group)
        updates, opt_state = txs[group.name].update(grads, opt_state, p_group)
        new_p = optax.apply_updates(p_group, updates)
        metrics = {f"{group.name}/{k}": v for k, v in metrics.items()}
        metrics[f"{group.name}/loss"] = loss
        grad_norm = optax.tree.norm(grads)
        metrics[f"{group.name}/grad_norm"] = grad_norm
        # A NaN or Inf anywhere makes the global norm NaN or Inf (so does a finite gradient
        # above ~1e19, whose square overflows: a diverged step, skipped as well). The norm's
        # per-leaf reductions are shared with the metric and the clipping; a separate is-finite
        # reduction per leaf made XLA:CPU compile the step's update 3.5x slower (151 leaves at
        # smoke size: 18.4 s against 5.2 s; docs/experiments/speed.md).
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        return new_p, rest, opt_state, metrics, finite

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        params, opt_states, rest = dict(state.params), dict(state.opt_state), state.rest
        metrics: dict[str, jax.Array] = {}
        finite = jnp.array(True)
        for i, group in enumerate(groups):
            p, rest, o, m, ok = group_update(
                params,
                rest,
                opt_states[group.name],
                group,
                batch,
                jax.random.fold_in(key, i),
                state.step,
            )
            params[group.name], opt_states[group.name] = p, o
            metrics.update(m)
            finite &= ok
        ema = state.ema
        if ema is not None:
            ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
        new = state.replace(
            step=state.step + 1, params=params, opt_state=opt_states, rest=rest, ema=ema
        )
        # NaN/Inf guard: keep the old state (but advance the step so the data moves on).
        keep = lambda n, o: jax.tree.map(lambda a, b: jnp.where(finite, a, b), n, o)
        new = new.replace(
            params=keep(new.params, state.params),
            opt_state=keep(new.opt_state, state.opt_state),
            rest=keep(new.rest, state.rest),
            ema=keep(new.ema, state.ema) if ema is not None else None,
            nonfinite=jnp.where(finite, 0, state.nonfinite + 1),
        )
        metrics["nonfinite_skipped"] = (~finite).astype(jnp.int32)
        metrics["nonfinite_consecutive"] = new.nonfinite  # not donated: the host may read it later
        return new, metrics

    return train_step
