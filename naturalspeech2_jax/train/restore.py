"""Parameters-only restore: a run's trained weights into a built model, nothing else.

Inference needs the weights a run ships (its EMA when it kept one, else the raw parameters) and
the model's non-parameter variables (EMA codebooks, counters). A training checkpoint also holds
the optimizer moments (2x the parameters for Adam), the data-iterator position and the RNG;
restoring those through a ``Trainer`` (as inference once did) costs their memory and a jitted
train step. ``restore_params`` reads only the subtrees it needs from the Orbax checkpoint
(``partial_restore``), with no optimizer, no ``Trainer`` and no jit:

    model = nnx.eval_shape(lambda: NaturalSpeech2(cfg, shape, rngs=nnx.Rngs(0)))  # no memory
    model, step = restore_params("runs/ns2", model)

A checkpoint's ``state`` item is the ``TrainState`` pytree: ``params/<group>/<path>/value``,
``ema/<group>/<path>/value`` (or ``ema: None``) and ``rest/<path>/value``, where ``<path>`` is the
variable's path in the trained model and ``<group>`` its parameter group. A model that is a part
of the trained one (the codec inside the codec GAN) names that part with ``prefix``. A model whose
variables can live under another layout names the conversions with ``checkpoint_layouts()``
(NaturalSpeech 2: layer stacks looped, ``layers/0/...``, or scanned, one stacked ``layers/...``),
and a checkpoint written in that other layout is converted as it is read.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

log = logging.getLogger(__name__)


class RestoreError(FileNotFoundError):
    """A run directory without a usable checkpoint, or one that does not fit the model."""


def absolute(path: str | os.PathLike) -> epath.Path:
    """Local paths made absolute, URIs (gs://) kept: Orbax refuses relative paths ("Checkpoint
    path should be absolute"), and a user types ``--checkpoint work/quickstart/ns2``."""
    return epath.Path(path if "://" in str(path) else os.path.abspath(os.fspath(path)))


def checkpoints_dir(workdir: str | os.PathLike) -> epath.Path:
    """``<workdir>/checkpoints``: where a run's Orbax checkpoints live."""
    return absolute(workdir) / "checkpoints"


def latest_step(workdir: str | os.PathLike) -> int | None:
    """The newest complete checkpoint step of a run, or None (no checkpoints yet)."""
    directory = checkpoints_dir(workdir)
    if not directory.is_dir():
        return None
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        return manager.latest_step()
    finally:
        manager.close()


def restore_meta(workdir: str | os.PathLike, step: int) -> dict:
    """The JSON ``meta`` item of a run's checkpoint: its config and what its task added."""
    return read_meta(checkpoints_dir(workdir), step)


def read_meta(checkpoints: epath.Path, step: int) -> dict:
    """The JSON ``meta`` item of checkpoint ``step`` in an Orbax checkpoints directory."""
    item = checkpoints / str(step) / "meta"
    path = item / "metadata"
    if path.exists():
        return json.loads(path.read_text())
    return dict(ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(item))


def _key(k: Any) -> Any:
    """A tree path entry as the key of a nested dict (an int for a layer of a list)."""
    return getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))


def _node(tree: Any, path: Sequence[str]) -> Any:
    """The subtree of a nested-dict metadata tree at ``path``, or None where there is none."""
    for k in path:
        if not isinstance(tree, dict) or k not in tree:
            return None
        tree = tree[k]
    return tree


def _set(tree: dict, path: Sequence[str], value: Any) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def _plan(
    target: dict,
    saved: Any,
    source: str,
    groups: Sequence[str],
    prefix: Sequence[str],
    path: epath.Path,
    workdir: Any,
    sharding: jax.sharding.Sharding,
) -> tuple[dict, list[tuple[str, tuple, tuple[str, ...]]]]:
    """(restore item, [(kind, model path, checkpoint path)]) of the nested dicts ``target``
    ({"param": ..., "rest": ...}) in the saved tree; RestoreError naming the first misfit."""
    item: dict = {}
    where: list[tuple[str, tuple, tuple[str, ...]]] = []  # (kind, model path, checkpoint path)
    for kind in ("param", "rest"):
        for p, leaf in jax.tree_util.tree_flatten_with_path(target[kind])[0]:
            mpath = tuple(_key(k) for k in p)
            name = "/".join(str(k) for k in mpath)
            tail = (*prefix, *(str(k) for k in mpath), "value")
            if kind == "param":
                found = [g for g in groups if _node(saved, (source, g, *tail)) is not None]
                if len(found) != 1:
                    how = "in several parameter groups of" if found else "missing from"
                    raise RestoreError(
                        f"parameter {name} is {how} {path}; is {workdir} a run of this model?"
                    )
                cpath = (source, found[0], *tail)
            else:
                cpath = ("rest", *tail)
                if _node(saved, cpath) is None:
                    raise RestoreError(
                        f"variable {name} is missing from {path}; is {workdir} a run of this model?"
                    )
            meta = _node(saved, cpath)
            if tuple(meta.shape) != tuple(leaf.shape):
                raise RestoreError(
                    f"{name} has shape {tuple(meta.shape)} in {path} but "
                    f"{tuple(leaf.shape)} in the model; build the model with the run's config."
                )
            _set(item, cpath, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding))
            where.append((kind, mpath, cpath))
    return item, where


def restore_params(
    workdir: str | os.PathLike,
    model: nnx.Module,
    *,
    step: int | None = None,
    ema: bool = True,
    prefix: Sequence[str] = (),
    sharding: jax.sharding.Sharding | None = None,
) -> tuple[nnx.Module, int]:
    """(model with the run's weights, step). ``model`` may be abstract (``nnx.eval_shape``).

    ``ema``: the EMA weights when the run kept them (what one evaluates and ships), else the raw
    parameters. ``step``: default the latest. ``prefix``: the path of ``model`` inside the
    trained model (``("codec",)`` for the codec of a codec run). Arrays land on ``sharding``
    (default: the first local device).
    """
    step = latest_step(workdir) if step is None else int(step)
    if step is None:
        raise RestoreError(f"{checkpoints_dir(workdir)} holds no checkpoint; train the run first.")
    path = checkpoints_dir(workdir) / str(step) / "state"
    if not path.exists():
        raise RestoreError(f"{path} does not exist; pick a step of {checkpoints_dir(workdir)}.")
    saved = ocp.PyTreeCheckpointer().metadata(path).item_metadata.tree
    source = "ema" if ema and saved.get("ema") else "params"
    groups = sorted(saved[source])
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    pure = {"param": nnx.to_pure_dict(params), "rest": nnx.to_pure_dict(rest)}
    # The model's own layout first, then any other layout it converts from: a model may define
    # ``checkpoint_layouts()``, pairs of pure functions (model tree -> saved tree, saved tree ->
    # model tree) on nested dicts; NS2 converts between looped and scanned layer stacks.
    layouts = [(None, None), *getattr(model, "checkpoint_layouts", list)()]
    errors: list[RestoreError] = []
    for to_saved, back in layouts:
        target = pure if to_saved is None else {k: to_saved(v) for k, v in pure.items()}
        try:
            item, where = _plan(target, saved, source, groups, prefix, path, workdir, sharding)
            from_saved = back
            break
        except RestoreError as e:
            errors.append(e)
    else:
        raise errors[0]
    restore_args = ocp.checkpoint_utils.construct_restore_args(item)
    restored = ocp.PyTreeCheckpointer().restore(
        path, args=ocp.args.PyTreeRestore(item, restore_args=restore_args, partial_restore=True)
    )
    out: dict = {"param": {}, "rest": {}}
    for kind, mpath, cpath in where:
        _set(out[kind], mpath, _node(restored, cpath))
    if from_saved is not None:
        log.info("converted the checkpoint's layout to the model's (e.g. looped -> scanned layers)")
        out = {k: from_saved(v) for k, v in out.items()}
    nnx.replace_by_pure_dict(params, out["param"])
    nnx.replace_by_pure_dict(rest, out["rest"])
    log.info("restored %s weights of %s at step %d", source, workdir, step)
    return nnx.merge(graphdef, params, rest), step
