"""What a model brings to the generic training loop: the ``Task`` interface and its lookup.

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
import importlib
import pkgutil
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
    """The model-specific half of training (``tasks/loop_test.py`` is a complete small one)."""

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


TASKS_PACKAGE = "naturalspeech2_jax.tasks"


def make_task(config: Any) -> Task:
    """The task ``config.task`` names: module ``naturalspeech2_jax.tasks.<name>``, whose ``Task``
    attribute is constructed with the config (as big_vision finds its models by module name)."""
    name = str(config.task)
    available = sorted(
        m.name for m in pkgutil.iter_modules(importlib.import_module(TASKS_PACKAGE).__path__)
    )
    if name not in available:
        raise ValueError(
            f"config.task={name!r} is not a module of {TASKS_PACKAGE}; choose one of {available}."
        )
    module = importlib.import_module(f"{TASKS_PACKAGE}.{name}")
    if not hasattr(module, "Task"):
        raise ValueError(f"{module.__file__} defines no `Task`; config.task={name!r} is no task.")
    return module.Task(config)


def count_params_by_top_module(model: nnx.Module) -> dict[str, int]:
    """Parameter count per top-level attribute of the model (the default ``--dry_run`` grouping)."""
    counts: dict[str, int] = {}
    params = nnx.state(model, nnx.Param)
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        top = str(getattr(path[0], "key", path[0]))
        counts[top] = counts.get(top, 0) + int(np.prod(leaf.shape))
    return counts
