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
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from naturalspeech2_jax.train.restore import absolute, read_meta

log = logging.getLogger(__name__)


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

    def has_ema(self, step: int) -> bool:
        """Whether the state saved at ``step`` carries EMA weights (the run had ema_decay > 0)."""
        return self.manager.item_metadata(step)["state"]["ema"] is not None

    def restore_meta(self, step: int) -> dict:
        return read_meta(self.directory, step)

    def restore_data(self, step: int, data_iterator: Any) -> bool:
        """Restore this process's iterator position; False if none was saved for this topology."""
        item = self.directory / str(step) / "data"
        expected = item / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if not expected.exists():
            return False
        self.manager.restore(
            step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(data_iterator))
        )
        return True

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
