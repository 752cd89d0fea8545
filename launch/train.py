"""Train any model of the project: the config names the task (codec, diffusion, aligner, ...).

    python launch/train.py --config=configs/diffusion.py[:preset] --workdir=DIR [--config.a.b=v]
    python launch/train.py --config=configs/codec.py:paper --dry_run

Running the same command again resumes from the last checkpoint in DIR (default:
runs/<task>_<preset>, e.g. runs/ns2_tiny). SIGTERM/Ctrl-C saves a
checkpoint and exits. ``--dry_run`` builds the model abstractly (no parameter memory) and prints,
as its last line, ``{"params": {"<module>": count, ..., "total": count}}``. ``--distributed``
calls jax.distributed.initialize() (or set NS2_DISTRIBUTED=1).

``--compile_only`` compiles the real train step ahead of time for the config's mesh and the
task's largest batch, without allocating it, and prints as its last line one JSON object with
``devices``, ``mesh``, ``memory_per_device_bytes`` (XLA memory analysis: arguments + outputs +
temporaries - donated) and ``flops_per_step`` (XLA cost analysis, all devices). For example the
NS2 paper preset on 8 simulated CPU devices as data x fsdp (NS2 compiles with random codebooks:
only their shape matters):

    python launch/train.py --config=configs/diffusion.py:paper --compile_only --num_cpu_devices=8 \
        --config.mesh.data=2 --config.mesh.fsdp=4 --config.codec.checkpoint=random

``--compile_topology=v5p:2x2x2`` (or v5e:2x4, v6e:2x4, v4:2x2x1, ...) compiles for the compile-only
devices of that TPU topology instead, with libtpu's compiler and no TPU present (install the
libtpu that jax[tpu] pins); the memory is then that of the real chips. The CPU compile of the NS2
paper step does not fit a 23 GB machine; the TPU one does (about 15 GB resident, 25 min).

``--time_steps=N`` then also runs N steps on a synthetic batch of that shape on the real devices
and adds ``step_time_s`` and ``mfu`` (model FLOP utilisation vs the chip's bf16 peak) to the JSON.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file[:preset], locked after --config.* overrides.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory for checkpoints, metrics, samples.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print parameter counts per module and exit.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize().")
_COMPILE_ONLY = flags.DEFINE_bool(
    "compile_only", False, "Compile the train step for the mesh; print memory and FLOPs as JSON."
)
_TIME_STEPS = flags.DEFINE_integer(
    "time_steps", 0, "With --compile_only: also time this many steps on a synthetic batch."
)
_COMPILE_TOPOLOGY = flags.DEFINE_string(
    "compile_topology",
    None,
    "With --compile_only: compile for this TPU topology (e.g. v5p:2x2x2) with libtpu, no TPU.",
)
_NUM_CPU_DEVICES = flags.DEFINE_integer(
    "num_cpu_devices", 0, "Simulate this many CPU devices (testing meshes on one machine)."
)


def _skip_llvm_optimisation() -> None:
    """A program compiled only for its memory and FLOP analysis never runs, so the CPU backend
    may skip LLVM's optimisation passes: buffer assignment and cost analysis come from the HLO
    passes, which still run in full. The NS2 paper step otherwise takes over 30 min and more
    than 20 GiB to compile on CPU; the codec smoke step goes from 85 s to 20 s with identical
    memory and FLOPs. Must run before JAX creates its backend (XLA reads the flags then)."""
    flags_now = os.environ.get("XLA_FLAGS", "")
    extra = [
        f
        for f in ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
        if f.split("=")[0] not in flags_now
    ]
    os.environ["XLA_FLAGS"] = " ".join([flags_now, *extra]).strip()


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; flags only (see --help).")
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/diffusion.py:tiny.")
    if _COMPILE_TOPOLOGY.value and (not _COMPILE_ONLY.value or _TIME_STEPS.value):
        raise app.UsageError(
            "launch/train.py: --compile_topology compiles for TPUs that are not here; use it "
            "with --compile_only and without --time_steps."
        )
    if _COMPILE_ONLY.value and not _TIME_STEPS.value:
        _skip_llvm_optimisation()
    import jax

    if _NUM_CPU_DEVICES.value:
        jax.config.update("jax_num_cpu_devices", _NUM_CPU_DEVICES.value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Orbax and grain log every save at INFO through absl; keep the console for our messages.
    logging.getLogger("absl").setLevel(logging.WARNING)
    from naturalspeech2_jax import parallel
    from naturalspeech2_jax.train import loop

    if _DRY_RUN.value:
        print(json.dumps({"params": loop.param_counts(config)}))
        return
    if _TIME_STEPS.value and not _COMPILE_ONLY.value:
        raise app.UsageError("launch/train.py: --time_steps needs --compile_only; add it.")
    if _COMPILE_ONLY.value:
        from naturalspeech2_jax.train import aot

        if _DISTRIBUTED.value:
            config.distributed = True
        devices = None
        if _COMPILE_TOPOLOGY.value:
            try:
                devices = aot.topology_devices(_COMPILE_TOPOLOGY.value)
            except ValueError as e:
                raise app.UsageError(f"launch/train.py --compile_topology: {e}") from None
        trainer = loop.Trainer(config, _WORKDIR.value or "/tmp/ns2_compile_only", devices=devices)
        compiled, report = aot.compile_report(trainer)
        if _TIME_STEPS.value:
            report.update(aot.time_steps(trainer, compiled, _TIME_STEPS.value, report))
        if parallel.is_main_process():
            print(json.dumps(report))
        return
    workdir = _WORKDIR.value
    if not workdir:  # the same command twice resumes the same run
        workdir = os.path.join("runs", f"{config.task}_{config.get('preset', 'run')}")
        logging.info("no --workdir: training in %s", workdir)
    if _DISTRIBUTED.value:
        config.distributed = True
    parallel.maybe_initialize_distributed(bool(config.get("distributed", False)))
    from naturalspeech2_jax.train.metrics import MetricsFileError
    from naturalspeech2_jax.train.workdir_lock import WorkdirBusyError

    try:
        loop.train(config, workdir)
    except (FileNotFoundError, WorkdirBusyError, MetricsFileError) as e:
        # Missing data/codec/checkpoint, a work directory in use, a damaged metrics.jsonl: the
        # message is one sentence that names the file and the fix.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
