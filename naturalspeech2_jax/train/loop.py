"""The generic training loop used by every model (codec, NS2, aligner).

Reads as: set up devices -> build the task -> create or restore the sharded state -> loop over
steps (data, jitted step, metrics, evaluation, checkpoints) -> save and close. Resume order: a
checkpoint in the workdir, else ``config.init_from`` (weights only), else a fresh start, so
running the same command again continues the run. SIGTERM or Ctrl-C saves and exits cleanly.
A damaged newest checkpoint (truncated array or JSON file) is reported in one warning, moved to
``<workdir>/damaged_checkpoints/`` and the run resumes from the next newest intact one. ``run()``
holds ``<workdir>/.lock`` (``workdir_lock.py``), so a second run on the same work directory stops
at once and names the first.

Config keys read here (see ``configs/common.py``): seed, total_steps, batch_size (global),
grad_accum, mesh, axis_rules, precision.{param_dtype,compute_dtype}, ema_decay, log_every,
eval_every, checkpoint_every, keep_checkpoints, async_checkpoints, max_nonfinite_steps,
profile_steps, profile_start, init_from, task.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils
from tqdm import tqdm

from naturalspeech2_jax import parallel
from naturalspeech2_jax.models import conv as conv_lib
from naturalspeech2_jax.train import state as state_lib
from naturalspeech2_jax.train.checkpoint import Checkpointer, DamagedCheckpointError
from naturalspeech2_jax.train.metrics import MetricWriter
from naturalspeech2_jax.train.optim import make_optimizer
from naturalspeech2_jax.train.step import dtype_from_name, make_train_step
from naturalspeech2_jax.train.task import Task, make_task
from naturalspeech2_jax.train.workdir_lock import WorkdirLock

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """Raised when too many consecutive steps produced NaN/Inf losses or gradients."""


class TrainingInterrupted(Exception):
    """SIGTERM/SIGINT stopped training before ``config.total_steps``; the checkpoint of ``step``
    was saved, so the same command resumes. Raised (not returned) so that whatever follows
    training (the quickstart's next stages, alignment after the aligner) does not run on an
    unfinished model. ``exit_status``: what a command line exits with (``cli.one_line_errors``;
    128 + SIGINT, the shell's status for an interrupted job)."""

    exit_status = 130

    def __init__(self, step: int, total: int, workdir: str):
        self.step, self.total, self.workdir = step, total, workdir
        super().__init__(
            f"training in {workdir} stopped by a signal at step {step} of {total} (checkpoint "
            "saved); run the same command again to resume."
        )


class NoIntactCheckpointError(FileNotFoundError):
    """Every checkpoint in the work directory is damaged: nothing to resume from (a
    FileNotFoundError like ``restore.RestoreError``, so ``launch/train.py`` prints it on one
    line)."""


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop saves a checkpoint and returns at the next step."""

    def __init__(self):
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame):
        log.warning("signal %d received: saving a checkpoint and stopping", signum)
        self.requested = True

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def config_to_dict(config: Any) -> dict:
    """JSON-safe dict of an ml_collections config (or a plain mapping)."""
    if hasattr(config, "to_json_best_effort"):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(dict(config), default=str))


class Trainer:
    """Holds everything the loop needs; ``run()`` trains to ``config.total_steps``."""

    def __init__(
        self,
        config: Any,
        workdir: str | epath.Path,
        task: Task | None = None,
        devices: Any = None,
    ):
        """``devices``: the mesh's devices (default: ``config.num_devices`` of ``jax.devices()``,
        all when 0); ahead-of-time compilation passes the compile-only devices of a TPU topology
        (``launch/train.py --compile_topology``)."""
        parallel.maybe_initialize_distributed(bool(config.get("distributed", False)))
        self.config = config
        self.workdir = epath.Path(workdir)
        self.task = task or make_task(config)
        n_dev = int(config.get("num_devices", 0))
        if devices is None:
            devices = jax.devices()[:n_dev] if n_dev else None
        self.mesh = parallel.make_mesh(dict(config.mesh), devices)
        precision = config.get("precision", {})
        # The convolution weight gradient, "auto" resolved for the mesh's platform (a TPU
        # topology compiled ahead of time from a CPU host gets the TPU's choice).
        conv_lib.set_weight_grad(
            str(precision.get("conv_weight_grad", "auto")),
            platform=self.mesh.devices.flat[0].platform,
        )
        self.rules = parallel.rules_from_config(config.get("axis_rules"))
        total = int(config.total_steps)
        self.groups = self.task.param_groups()
        self.txs = {g.name: make_optimizer(g.optim, total) for g in self.groups}
        self.ema_decay = float(config.get("ema_decay", 0.0))
        self.init_fn = state_lib.make_init_fn(
            self.task.build_model,
            self.groups,
            self.txs,
            self.ema_decay,
            dtype_from_name(precision.get("param_dtype", "float32")),
        )
        self.key = jax.random.key(int(config.seed))
        self.abstract = jax.eval_shape(self.init_fn, self.key)
        self.shardings = state_lib.state_shardings(self.abstract, self.mesh, self.rules)
        abstract_model = nnx.eval_shape(lambda: self.task.build_model(nnx.Rngs(0)))
        self.graphdef, _, _ = state_lib.split_model(abstract_model, self.groups)

        global_batch = int(config.batch_size)
        ways = parallel.batch_parallelism(self.mesh, self.rules)
        if global_batch % ways or global_batch % jax.process_count():
            raise ValueError(
                f"batch_size={global_batch} must be a multiple of the batch parallelism {ways} "
                f"and of the process count {jax.process_count()}; change config.batch_size."
            )
        self.local_batch = global_batch // jax.process_count()
        step_fn = make_train_step(
            self.graphdef,
            self.groups,
            self.txs,
            compute_dtype=dtype_from_name(precision.get("compute_dtype", "float32")),
            grad_accum=int(config.get("grad_accum", 1)),
            ema_decay=self.ema_decay,
        )
        mesh, rules = self.mesh, self.rules

        def sharded_step(state, batch):
            # Active while the step is traced: models pin activations with parallel.constrain.
            with parallel.activation_sharding(mesh, rules):
                return step_fn(state, batch)

        self.step_fn = jax.jit(sharded_step, out_shardings=(self.shardings, None), donate_argnums=0)

    @functools.cached_property
    def checkpointer(self) -> Checkpointer:
        """Created on first use, so ``--compile_only`` and benchmarks touch no work directory."""
        return Checkpointer(
            self.workdir / "checkpoints",
            keep=int(self.config.get("keep_checkpoints", 3)),
            async_writes=bool(self.config.get("async_checkpoints", True)),
        )

    # ----------------------------------------------------------------------------- AOT
    def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
        """The largest global batch the step sees, as ShapeDtypeStructs with batch shardings."""
        make = getattr(self.task, "abstract_batch", None)
        if make is None:
            raise ValueError(
                f"task {self.config.task!r} has no abstract_batch(global_batch); add one to its "
                "Task class to compile it ahead of time."
            )
        return {
            k: jax.ShapeDtypeStruct(
                v.shape,
                v.dtype,
                sharding=parallel.batch_sharding(self.mesh, len(v.shape), self.rules),
            )
            for k, v in make(int(self.config.batch_size)).items()
        }

    def lower_step(self) -> jax.stages.Lowered:
        """The train step lowered for the abstract state and batch: nothing is allocated."""
        state = state_lib.with_shardings(self.abstract, self.shardings)
        return self.step_fn.lower(state, self.abstract_batch())

    # ----------------------------------------------------------------------------- state
    def restore_or_init(self, data_iterator: Any) -> state_lib.TrainState:
        """Workdir checkpoint (the newest intact one), then ``init_from`` (weights only), then a
        fresh state."""
        target = state_lib.with_shardings(self.abstract, self.shardings)
        steps = sorted(self.checkpointer.all_steps(), reverse=True)
        if steps:
            return self._resume(steps, target, data_iterator)
        fresh = jax.jit(self.init_fn, out_shardings=self.shardings)(self.key)
        init_from = self.config.get("init_from")
        if init_from:
            source = Checkpointer(epath.Path(init_from) / "checkpoints", async_writes=False)
            step = source.latest_step()
            if step is None:
                raise FileNotFoundError(
                    f"init_from={init_from} has no checkpoint under checkpoints/; train it first "
                    "or clear config.init_from."
                )
            # The source may have kept EMA weights when this run does not, or the reverse (a
            # fine-tune that turns EMA on): restore what it saved, and start this run's EMA from
            # the source's EMA, else from its trained weights.
            source_ema = source.has_ema(step)
            old = source.restore_state(
                step, target.replace(ema=target.params if source_ema else None)
            )
            source.close()
            ema = None
            if fresh.ema is not None:
                ema = old.ema if source_ema else jax.tree.map(jnp.copy, old.params)
            fresh = fresh.replace(params=old.params, rest=old.rest, ema=ema)
            log.info("initialised weights from %s (step %d)", init_from, step)
        return fresh

    def _resume(self, steps: list[int], target: Any, data_iterator: Any) -> state_lib.TrainState:
        """The newest intact checkpoint of ``steps`` (newest first); damaged newer ones are
        reported in one warning and moved aside, so the resumed run can save those steps again."""
        directory = self.checkpointer.directory
        # Another model or optimizer is not damage: say so, and move nothing.
        self.checkpointer.check_layout(steps[0], target)
        damaged: list[DamagedCheckpointError] = []
        for step in steps:
            try:
                state, data_restored = self.checkpointer.restore(step, target, data_iterator)
            except DamagedCheckpointError as e:
                damaged.append(e)
                continue
            if damaged:
                self._set_aside(damaged, step)
            if data_iterator is not None and not data_restored:
                self._reposition(step, data_iterator)
            log.info("resumed from %s at step %d", directory, step)
            return state
        raise NoIntactCheckpointError(
            f"no checkpoint in {directory} can be restored ({_damage_list(damaged)}); delete "
            f"{self.workdir} to start afresh or pass another --workdir."
        )

    def _set_aside(self, damaged: list[DamagedCheckpointError], step: int) -> None:
        """Warn once, then move the damaged steps to ``<workdir>/damaged_checkpoints/``."""
        aside = self.workdir / "damaged_checkpoints"
        which = "checkpoint" if len(damaged) == 1 else "checkpoints"
        verb = "is" if len(damaged) == 1 else "are"
        log.warning(
            "%s %s in %s %s damaged (%s); resuming from step %d instead (the damaged files are "
            "kept, moved to %s).",
            which,
            ", ".join(str(e.step) for e in damaged),
            self.checkpointer.directory,
            verb,
            _damage_list(damaged, with_step=len(damaged) > 1),
            step,
            aside,
        )
        if parallel.is_main_process():
            for e in damaged:
                self.checkpointer.set_aside(e.step)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("ns2_set_aside_damaged_checkpoints")
        self.checkpointer.reload()

    @staticmethod
    def _reposition(step: int, data_iterator: Any) -> None:
        # Saved with another process count: the default iterators are indexed by global step,
        # so repositioning by step reproduces the same global batches.
        log.warning("no data-iterator state for this topology; repositioning by step %d", step)
        data_iterator.set_state({"next_index": step})

    def meta(self) -> dict:
        meta = {"config": config_to_dict(self.config), "process_count": jax.process_count()}
        extra = getattr(self.task, "checkpoint_meta", None)
        if extra is not None:
            meta.update(extra())
        return meta

    def eval_model(self, state: state_lib.TrainState) -> nnx.Module:
        """The model with EMA weights when kept (the weights one evaluates and ships)."""
        params = state.ema if state.ema is not None else state.params
        return state_lib.merge_model(self.graphdef, self.groups, params, state.rest)

    # ----------------------------------------------------------------------------- loop
    def run(self) -> state_lib.TrainState:
        """Train to ``config.total_steps``, holding the work directory's lock (process 0 only:
        the other processes of a multi-process job share its run)."""
        lock = WorkdirLock(self.workdir) if parallel.is_main_process() else None
        if lock is not None:
            lock.acquire()
        try:
            return self._run()
        finally:
            if lock is not None:
                lock.release()

    def _run(self) -> state_lib.TrainState:
        cfg = self.config
        total = int(cfg.total_steps)
        data_iterator = self.task.train_iterator(
            seed=int(cfg.seed),
            local_batch_size=self.local_batch,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        state = self.restore_or_init(data_iterator)
        step = int(state.step)
        if parallel.is_main_process():
            self.workdir.mkdir(parents=True, exist_ok=True)
            (self.workdir / "config.json").write_text(json.dumps(self.meta()["config"], indent=1))
        writer = MetricWriter(self.workdir, resume_step=step)
        log_every = int(cfg.get("log_every", 50))
        eval_every = int(cfg.get("eval_every", 0))
        ckpt_every = int(cfg.get("checkpoint_every", 1000))
        max_bad = int(cfg.get("max_nonfinite_steps", 20))
        profile_steps = int(cfg.get("profile_steps", 0))
        profile_start = int(cfg.get("profile_start", 10))
        pbar = tqdm(
            total=total,
            initial=step,
            disable=not parallel.is_main_process(),
            unit="step",
            dynamic_ncols=True,
            mininterval=2.0,
        )
        last_saved = step
        window_start, window_steps = time.perf_counter(), 0
        prev_nonfinite = None
        with _StopFlag() as stop:
            while step < total:
                if profile_steps and step == profile_start and parallel.is_main_process():
                    jax.profiler.start_trace(str(self.workdir / "profile"))
                batch = parallel.host_batch_to_global(next(data_iterator), self.mesh, self.rules)
                state, metrics = self.step_fn(state, batch)
                step += 1
                window_steps += 1
                pbar.update(1)
                if profile_steps and step == profile_start + profile_steps:
                    jax.block_until_ready(state)
                    if parallel.is_main_process():
                        jax.profiler.stop_trace()
                # Read the previous step's NaN counter: it is (almost) ready, so the host does not
                # stall the device pipeline waiting for this step.
                if prev_nonfinite is not None and int(prev_nonfinite) >= max_bad:
                    raise NonFiniteError(
                        f"{int(prev_nonfinite)} consecutive steps had NaN/Inf loss or gradients "
                        f"(last at step {step - 1}); lower the learning rate or check the data."
                    )
                prev_nonfinite = metrics["nonfinite_consecutive"]
                if step % log_every == 0 or step == total:
                    metrics = jax.device_get(metrics)
                    elapsed = time.perf_counter() - window_start
                    metrics["steps_per_sec"] = window_steps / max(elapsed, 1e-9)
                    writer.write(step, metrics)
                    loss_keys = [k for k in metrics if k.endswith("/loss")]
                    pbar.set_postfix({k: f"{float(metrics[k]):.4g}" for k in loss_keys})
                    window_start, window_steps = time.perf_counter(), 0
                if eval_every and step % eval_every == 0:
                    eval_metrics = self.task.evaluate(
                        self.eval_model(state), step, str(self.workdir)
                    )
                    if eval_metrics:
                        writer.write(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
                if step % ckpt_every == 0 or step == total or stop.requested:
                    self.checkpointer.save(step, state, data_iterator, self.meta(), force=True)
                    last_saved = step
                if stop.requested:
                    log.warning("stopped at step %d after a signal; checkpoint saved", step)
                    break
        if int(state.nonfinite) >= max_bad:
            raise NonFiniteError(
                f"{int(state.nonfinite)} consecutive steps had NaN/Inf loss or gradients; lower "
                "the learning rate or check the data."
            )
        if last_saved != step:
            self.checkpointer.save(step, state, data_iterator, self.meta(), force=True)
        self.checkpointer.close()
        writer.close()
        pbar.close()
        if stop.requested and step < total:
            raise TrainingInterrupted(step, total, str(self.workdir))
        # Optional task hook once training is complete (e.g. the codec's latent statistics).
        finalize = getattr(self.task, "finalize", None)
        if finalize is not None and step >= total and parallel.is_main_process():
            finalize(self.eval_model(state), str(self.workdir))
        return state


def _damage_list(damaged: list[DamagedCheckpointError], with_step: bool = True) -> str:
    """'40: state: d/1f2e: Requested byte range ...; 20: meta: metadata: invalid JSON ...'."""
    return "; ".join(
        (f"{e.step}: " if with_step else "") + f"{e.item}: {e.reason}" for e in damaged
    )


def train(config: Any, workdir: str | epath.Path, task: Task | None = None) -> Any:
    """Train the task that ``config.task`` names to ``config.total_steps`` steps."""
    return Trainer(config, workdir, task).run()


def param_counts(config: Any) -> dict[str, int]:
    """Per-module parameter counts of the config's model, built abstractly (no memory)."""
    task = make_task(config)
    model = nnx.eval_shape(lambda: task.build_model(nnx.Rngs(0)))
    counts = dict(task.param_count_groups(model))
    counts["total"] = int(
        sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    )
    return counts
