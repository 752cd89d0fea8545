"""A small, complete task for exercising the generic loop (meshes, resume, multi-host, precision).

It is a real model on real gradients, just small: a 1-D convolution + MLP regressor with dropout,
logical axis names on every parameter, and a non-parameter variable updated in place (a running
mean of the targets, like the codec's EMA codebooks), trained on a deterministic synthetic
regression set. The loop's tests and ``configs/loop_test.py`` use it; real models bring their own
task in ``naturalspeech2_jax/models``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from naturalspeech2_jax.data.loader import make_batch_iterator
from naturalspeech2_jax.train.task import ParamGroup, count_params_by_top_module


def _dense(din: int, dout: int, axes: tuple, rngs: nnx.Rngs) -> nnx.Linear:
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(), axes)
    bias = nnx.with_partitioning(nnx.initializers.zeros_init(), (axes[1],))
    return nnx.Linear(din, dout, kernel_init=init, bias_init=bias, rngs=rngs)


class ConvRegressor(nnx.Module):
    """conv(features) -> MLP -> one value per frame; tracks a running mean of its targets."""

    def __init__(self, features: int, hidden: int, dropout: float, *, rngs: nnx.Rngs):
        kinit = nnx.with_partitioning(
            nnx.initializers.lecun_normal(), ("kernel", "conv_in", "embed")
        )
        self.conv = nnx.Conv(features, hidden, kernel_size=(3,), kernel_init=kinit, rngs=rngs)
        self.up = _dense(hidden, 4 * hidden, ("embed", "mlp"), rngs)
        self.down = _dense(4 * hidden, hidden, ("mlp", "embed"), rngs)
        self.head = _dense(hidden, 1, ("embed", None), rngs)
        self.dropout = nnx.Dropout(dropout)
        self.target_mean = nnx.BatchStat(jnp.zeros((), jnp.float32))

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        h = jax.nn.gelu(self.conv(x))
        h = h + self.down(self.dropout(jax.nn.gelu(self.up(h)), rngs=rngs))
        return self.head(h)[..., 0]


def synthetic_examples(n: int, length: int, features: int, seed: int = 0) -> list[dict]:
    """Deterministic regression examples: y = sin(x @ w) summed with a neighbour-frame term."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(features,)).astype(np.float32)
    out = []
    for _ in range(n):
        x = rng.normal(size=(length, features)).astype(np.float32)
        y = np.sin(x @ w) + 0.5 * np.roll(x[:, 0], 1)
        out.append({"x": x, "y": y.astype(np.float32)})
    return out


class LoopTestTask:
    """Task wrapper: model, loss, data and evaluation for ``ConvRegressor``."""

    def __init__(self, config):
        self.config = config
        m = config.model
        self.examples = synthetic_examples(int(config.data.num_examples), m.length, m.features)

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        m = self.config.model
        return ConvRegressor(m.features, m.hidden, m.dropout, rngs=rngs)

    def loss(self, model, batch, rng, step):
        pred = model(batch["x"], rngs=nnx.Rngs(dropout=rng))
        mse = jnp.mean((pred - batch["y"]) ** 2)
        model.target_mean[...] = 0.9 * model.target_mean[...] + 0.1 * jnp.mean(batch["y"])
        return mse, {"mse": mse, "target_mean": model.target_mean[...]}

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("model", nnx.Param, self.loss, self.config.optim)]

    def train_iterator(self, *, seed, local_batch_size, process_index, process_count):
        return make_batch_iterator(
            self.examples,
            seed=seed,
            local_batch_size=local_batch_size,
            process_index=process_index,
            process_count=process_count,
        )

    def evaluate(self, model, step, workdir):
        batch = {k: np.stack([e[k] for e in self.examples[:8]]) for k in ("x", "y")}
        pred = model(jnp.asarray(batch["x"]))
        return {"mse": float(jnp.mean((pred - batch["y"]) ** 2))}

    def param_count_groups(self, model) -> dict[str, int]:
        return count_params_by_top_module(model)


Task = LoopTestTask  # what train.task.make_task instantiates for config.task == "loop_test"
