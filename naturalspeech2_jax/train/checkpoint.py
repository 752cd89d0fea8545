"""Checkpoints: one Orbax CheckpointManager per run under ``<workdir>/checkpoints``.

Each checkpoint holds three items:
- ``state``: the whole TrainState (params, optimizer, EMA, rest, step, RNG, NaN counter);
- ``data``: the data iterator position of this process (grain's per-process handler) plus the
  process count it was saved with (so a resume on another topology can reposition by step);
- ``meta``: JSON with the config and anything the task adds (phoneme vocabulary version, codec
  statistics path, ...).

Orbax writes into a temporary directory and renames it when complete, so a process killed while
writing leaves the previous checkpoint intact (tmp directories are cleaned on the next start).
The state is restored into an abstract target that carries the *current* shardings, so a run saved
on 8 devices resumes on 1, on a (2, 2) mesh, or on 2 processes.

A checkpoint damaged after it was written (a truncated array file, a cut JSON file) raises
``DamagedCheckpointError`` from ``restore``; the loop then resumes from the next newest step and
``set_aside`` moves the damaged one to ``<workdir>/damaged_checkpoints/`` (kept for inspection,
and out of the way of the step the resumed run will save again).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from naturalspeech2_jax.train.restore import absolute, read_meta

log = logging.getLogger(__name__)


class DamagedCheckpointError(RuntimeError):
    """One item of one checkpoint step cannot be read back."""

    def __init__(self, step: int, item: str, reason: str):
        super().__init__(f"checkpoint {step} is damaged ({item}: {reason})")
        self.step, self.item, self.reason = step, item, reason


class CheckpointMismatchError(ValueError):
    """The newest checkpoint is intact but holds another model or optimizer than the config
    builds (a changed size, layer layout or optimizer): a resume would fail on every step, and
    its steps are not damage to set aside."""


def _leaves_by_path(tree: Any) -> dict[str, tuple[int, ...]]:
    """``{"params/encoder/kernel": shape}`` for the arrays of a state or its saved metadata."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape = getattr(leaf, "shape", None)
        if shape is None:
            continue
        keys = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path]
        out["/".join(str(k) for k in keys)] = tuple(int(d) for d in shape)
    return out


def layout_difference(saved: Any, wanted: Any) -> str | None:
    """The first difference between two state trees, in words (None when they agree)."""
    a, b = _leaves_by_path(saved), _leaves_by_path(wanted)
    for path in sorted(b):
        if path not in a:
            return f"{path} is not in it"
        if a[path] != b[path]:
            return f"{path} has shape {list(a[path])} there, {list(b[path])} in this config"
    extra = sorted(set(a) - set(b))
    return f"it has {extra[0]}, which this config does not" if extra else None


def short_reason(exc: BaseException, root: epath.Path | str = "", name: str = "") -> str:
    """A one-line cause from an Orbax/TensorStore/JSON error: the file it names (else ``name``)
    and the last clause of the message (TensorStore errors run to kilobytes of JSON specs)."""
    text = str(exc).split(" [tensorstore_spec")[0].strip() or type(exc).__name__
    files = re.findall(r'file "([^"]+)"', text)
    clause = text.splitlines()[0].rsplit(": ", 1)[-1].strip()
    if isinstance(exc, json.JSONDecodeError):
        clause = f"invalid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
    if len(clause) > 160:
        clause = clause[:157] + "..."
    if files:
        name = files[-1]
        prefix = str(root).rstrip("/") + "/"
        if root and name.startswith(prefix):
            name = name[len(prefix) :]
    return f"{name}: {clause}" if name else clause


def _drop_abandoned_read_noise(unraisable: Any, previous: Any) -> None:
    """When one array read of a damaged checkpoint fails, Orbax closes its event loop while the
    other reads are in flight; each then reports 'Event loop is closed' as an unraisable
    exception (a traceback per array). Those say nothing the damage message does not."""
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return
    previous(unraisable)


def _install_read_noise_filter() -> Any:
    """Install the filter above; returns the hook it replaced (to put back after a clean read)."""
    previous = sys.unraisablehook
    if getattr(previous, "_ns2_read_noise_filter", False):
        return previous
    hook = lambda u: _drop_abandoned_read_noise(u, previous)  # noqa: E731
    hook._ns2_read_noise_filter = True
    sys.unraisablehook = hook
    return previous


class Checkpointer:
    """Save/restore of (state, data iterator, meta) with keep-N and async writes."""

    def __init__(self, directory: str | epath.Path, *, keep: int = 3, async_writes: bool = True):
        self.directory = absolute(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            enable_async_checkpointing=async_writes,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "data": grain.checkpoint.CheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(
        self,
        step: int,
        state: Any,
        data_iterator: Any | None,
        meta: Mapping[str, Any],
        *,
        force: bool = False,
    ) -> bool:
        args = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(dict(meta))}
        if data_iterator is not None:
            args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        return self.manager.save(step, args=ocp.args.Composite(**args), force=force)

    def restore_state(self, step: int, abstract_state: Any) -> Any:
        """Restore the train state into ``abstract_state`` (ShapeDtypeStructs with shardings)."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        return self.manager.restore(step, args=args)["state"]

    def restore(
        self, step: int, abstract_state: Any, data_iterator: Any | None
    ) -> tuple[Any, bool]:
        """(state, whether the data position was restored) of ``step``, every item checked.

        Raises ``DamagedCheckpointError`` naming the item (state, meta, data) that cannot be read;
        the data iterator is only touched once the state and meta have been read back.
        """
        root = self.directory / str(step)
        previous_hook = _install_read_noise_filter()
        try:
            state = self.restore_state(step, abstract_state)
        except Exception as e:  # noqa: BLE001 (any failure to read back means damage)
            # The filter stays: reads abandoned by the failure may still report after this.
            raise DamagedCheckpointError(step, "state", short_reason(e, root / "state")) from e
        sys.unraisablehook = previous_hook
        try:
            self.restore_meta(step)
        except Exception as e:  # noqa: BLE001
            reason = short_reason(e, root / "meta", "metadata")
            raise DamagedCheckpointError(step, "meta", reason) from e
        return state, self.restore_data(step, data_iterator)

    def set_aside(self, step: int) -> epath.Path:
        """Move the damaged checkpoint ``step`` to ``<workdir>/damaged_checkpoints/<step>``."""
        target = self.directory.parent / "damaged_checkpoints" / str(step)
        if target.exists():
            target = target.parent / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        target.parent.mkdir(parents=True, exist_ok=True)
        (self.directory / str(step)).rename(target)
        return target

    def reload(self) -> None:
        """Re-read the list of steps from disk (after ``set_aside``)."""
        self.manager.reload()

    def has_ema(self, step: int) -> bool:
        """Whether the state saved at ``step`` carries EMA weights (the run had ema_decay > 0)."""
        return self.manager.item_metadata(step)["state"]["ema"] is not None

    def check_layout(self, step: int, abstract_state: Any) -> None:
        """``CheckpointMismatchError`` when ``step``'s saved state tree (read from its metadata,
        no arrays) differs from ``abstract_state``; unreadable metadata is left to ``restore``,
        which reports it as damage."""
        try:
            saved = self.manager.item_metadata(step)["state"]
        except Exception:  # noqa: BLE001 - damage, reported by restore()
            return
        if saved is None:
            return
        difference = layout_difference(saved, abstract_state)
        if difference:
            raise CheckpointMismatchError(
                f"checkpoint {step} in {self.directory} holds another model or optimizer than "
                f"this config builds ({difference}); resume with the config the run was "
                f"started with ({self.directory.parent / 'config.json'}; a changed layer layout "
                "is --config.model.scan_layers), or pass another --workdir."
            )

    def restore_meta(self, step: int) -> dict:
        return read_meta(self.directory, step)

    def restore_data(self, step: int, data_iterator: Any | None) -> bool:
        """Restore this process's iterator position; False if none was saved for this topology.

        The saved position is checked to be readable JSON even without an iterator (``None``);
        a damaged one raises ``DamagedCheckpointError``.
        """
        item = self.directory / str(step) / "data"
        expected = item / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if not expected.exists():
            return False
        try:
            json.loads(expected.read_text())
            if data_iterator is not None:
                self.manager.restore(
                    step,
                    args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(data_iterator)),
                )
        except Exception as e:  # noqa: BLE001
            reason = short_reason(e, item, expected.name)
            raise DamagedCheckpointError(step, "data", reason) from e
        return True

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
