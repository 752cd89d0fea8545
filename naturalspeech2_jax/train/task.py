"""What a model brings to the generic training loop: the ``Task`` interface and its registry.

The loop (``train/loop.py``) owns everything generic: meshes, sharded state, optimizers, EMA,
mixed precision, gradient accumulation, NaN guard, checkpoints, metrics, profiling. A task owns what
is specific to one model: how to build it, its losses, its data and its evaluation.

A task may train several parameter groups with separate optimizers (a GAN's generator and
discriminator): each ``ParamGroup`` selects its parameters with an NNX filter and has its own loss;
the groups are updated one after the other inside the same jitted step. Variables that are not
``nnx.Param`` (EMA codebooks, counters) form the model's "rest" state, which losses may update in
place; the loop carries it from step to step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import numpy as np
from flax import nnx

# loss_fn(model, batch, rng, step) -> (scalar loss, dict of scalar metrics). Runs inside jit.
LossFn = Callable[[nnx.Module, Mapping[str, jax.Array], jax.Array, jax.Array], tuple[Any, dict]]


@dataclasses.dataclass(frozen=True)
class ParamGroup:
    """A set of parameters trained by one loss and one optimizer config."""

    name: str
    filter: Any  # an NNX filter selecting nnx.Param variables of this group
    loss_fn: LossFn
    optim: Mapping[str, Any]


class DataIterator(Protocol):
    """A host-local batch iterator whose position can be saved and restored (grain's protocol)."""

    def __next__(self) -> dict[str, np.ndarray]: ...

    def get_state(self) -> dict: ...

    def set_state(self, state: dict) -> None: ...


class Task(Protocol):
    """The model-specific half of training (``train/testing.py`` is a complete small one)."""

    config: Any

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        """Construct the model; parameters name logical axes. Called under jit/eval_shape."""

    def param_groups(self) -> list[ParamGroup]:
        """The parameter groups in update order (one group for ordinary models)."""

    def train_iterator(
        self, *, seed: int, local_batch_size: int, process_index: int, process_count: int
    ) -> DataIterator:
        """This host's share of every global batch, in a topology-independent order."""

    def evaluate(self, model: nnx.Module, step: int, workdir: str) -> dict[str, float]:
        """Periodic evaluation on the host (samples, plots, metrics); may return {}."""

    def param_count_groups(self, model: nnx.Module) -> dict[str, int]:
        """Parameter counts per named module for ``--dry_run`` (without ``total``)."""

    # Optional: ``finalize(model, workdir)`` runs once after the last step, with the EMA weights
    # (e.g. the codec stores its latent statistics beside the checkpoint).


_REGISTRY: dict[str, Callable[[Any], Task]] = {}


def register_task(name: str) -> Callable:
    """Decorator: make a task class constructible from ``config.task`` = ``name``."""

    def wrap(cls):
        _REGISTRY[name] = cls
        return cls

    return wrap


def make_task(config: Any) -> Task:
    """Instantiate the task that ``config.task`` names (importing the model packages first)."""
    from naturalspeech2_jax.train import testing  # noqa: F401  (registers the loop test task)

    for module in ("naturalspeech2_jax.models.codec_task", "naturalspeech2_jax.models.ns2_task"):
        try:
            __import__(module)
        except ModuleNotFoundError as e:  # the model issues add these modules
            if e.name != module:
                raise
    name = config.task
    if name not in _REGISTRY:
        raise ValueError(
            f"config.task={name!r} is not a known task; choose one of {sorted(_REGISTRY)}."
        )
    return _REGISTRY[name](config)


def count_params_by_top_module(model: nnx.Module) -> dict[str, int]:
    """Parameter count per top-level attribute of the model (the default ``--dry_run`` grouping)."""
    counts: dict[str, int] = {}
    params = nnx.state(model, nnx.Param)
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        top = str(getattr(path[0], "key", path[0]))
        counts[top] = counts.get(top, 0) + int(np.prod(leaf.shape))
    return counts
