"""train/step.py: the NaN/Inf guard sees a bad gradient of one parameter when the loss is
finite (the check reads the global gradient norm, one reduction per leaf shared with clipping)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from naturalspeech2_jax.train import state as state_lib
from naturalspeech2_jax.train.optim import make_optimizer
from naturalspeech2_jax.train.step import make_train_step
from naturalspeech2_jax.train.task import ParamGroup


class _TwoParams(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.a = nnx.Param(jnp.ones((3,)))
        self.b = nnx.Param(jnp.zeros((4,)))


@jax.custom_vjp
def _zero_with_gradient(b, g):
    """0 forward; ``g`` (any value, Inf and NaN too) as the gradient of every element of b."""
    return jnp.zeros_like(b)


_zero_with_gradient.defvjp(
    lambda b, g: (jnp.zeros_like(b), g),
    lambda g, ct: (ct * 0 + g, jnp.zeros_like(g)),
)


def _loss(model, batch, rng, step):
    """(a - 2)^2 plus a term that is 0 but gives b the gradient batch["g"]: the loss stays
    finite whatever that gradient is."""
    a, b = model.a[...], model.b[...]
    return jnp.sum((a - 2.0) ** 2) + jnp.sum(_zero_with_gradient(b, batch["g"])), {}


@pytest.mark.parametrize("g,finite", [(0.5, True), (np.inf, False), (np.nan, False)])
def test_a_non_finite_gradient_of_one_parameter_skips_the_update(g, finite):
    group = ParamGroup("all", nnx.Param, _loss, dict(lr=0.1, clip_norm=1.0, warmup_steps=0))
    txs = {"all": make_optimizer(group.optim, 10)}
    init = state_lib.make_init_fn(_TwoParams, [group], txs, ema_decay=0.0)
    state = init(jax.random.key(0))
    graphdef, _, _ = state_lib.split_model(_TwoParams(nnx.Rngs(0)), [group])
    step = jax.jit(make_train_step(graphdef, [group], txs))
    new, metrics = step(state, {"g": jnp.float32(g)})
    assert np.isfinite(float(metrics["all/loss"]))  # only the gradient of b is bad
    assert int(metrics["nonfinite_skipped"]) == (not finite)
    moved = [not np.allclose(new.params["all"][k], state.params["all"][k]) for k in "ab"]
    assert moved == [finite, finite] and int(new.step) == 1
    for leaf in jax.tree.leaves((new.params, new.opt_state)):
        assert np.isfinite(np.asarray(leaf, np.float64)).all()
