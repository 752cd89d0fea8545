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
libtpu that jax[tpu] pins); the memory is then that of the real chips. With scanned layer stacks
the NS2 paper step compiles in about 40 s on 8 simulated CPU devices (1.9 GB resident) and in
5-6 min for v5p:2x2x2 (8 GB resident); docs/experiments/speed.md has the figures.

``--time_steps=N`` then also runs N steps on a synthetic batch of that shape on the real devices
and adds ``step_time_s`` and ``mfu`` (model FLOP utilisation vs the chip's bf16 peak) to the JSON;
``--profile=DIR`` then traces three more steps and writes DIR/ops.json (their time per HLO
instruction, op kind and source line of this package; the top ten of each in the JSON), e.g.

    python launch/train.py --config=configs/codec.py:tiny_spectral --compile_only --time_steps=5 \
        --profile=work/prof_codec

Every error of the command line (a config file that does not load, an unknown preset or
``--config.*`` field, a value of the wrong type or out of range) or of the inputs (a missing or
unusable dataset, a work directory in use or that is a file) is one line on stderr, ``error:
...``, with exit status 2; ``NS2_TRACEBACK=1`` shows the traceback of the latter instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from absl import app, flags
from ml_collections import config_flags

from naturalspeech2_jax import host_memory

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
_PROFILE = flags.DEFINE_string(
    "profile",
    None,
    "With --time_steps: trace 3 more steps into this folder and write ops.json, their time per "
    "HLO instruction, op kind and source line.",
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
    passes, which still run in full. The looped NS2 paper step otherwise took over 30 min and
    more than 20 GiB to compile on CPU; the codec smoke step goes from 85 s to 20 s with identical
    memory and FLOPs. Must run before JAX creates its backend (XLA reads the flags then)."""
    flags_now = os.environ.get("XLA_FLAGS", "")
    extra = [
        f
        for f in ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
        if f.split("=")[0] not in flags_now
    ]
    os.environ["XLA_FLAGS"] = " ".join([flags_now, *extra]).strip()


def _usage_error(reason: str) -> None:
    """``error: <reason>`` on one line of stderr and exit status 2 (no help text, no traceback)."""
    print(f"error: {' '.join(reason.split())}", file=sys.stderr)
    sys.exit(2)


def _config_arg(argv: list[str]) -> str | None:
    """The value of --config in ``argv`` (``--config=X`` or ``--config X``)."""
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            return a.split("=", 1)[1]
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _config_defaults(config_arg: str | None) -> Any:
    """The config ``--config`` names, loaded without its overrides (None when it cannot be)."""
    import importlib.util

    if not config_arg:
        return None
    path, _, preset = config_arg.partition(":")
    try:
        spec = importlib.util.spec_from_file_location("_ns2_config_defaults", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config(preset or None)
    except Exception:  # noqa: BLE001 - only used to word an error better
        return None


def _field(config: Any, dotted: str) -> tuple[bool, Any]:
    """(whether ``config`` has the dotted field, its value)."""
    node = config
    for part in dotted.split("."):
        try:
            if part not in node:
                return False, None
            node = node[part]
        except TypeError:  # a leaf where a section was named
            return False, None
    return True, node


def _flat_keys(config: Any, prefix: str = "") -> list[str]:
    out = []
    for k, v in config.items():
        key = f"{prefix}{k}"
        out += _flat_keys(v, key + ".") if hasattr(v, "items") else [key]
    return out


def flag_error(error: BaseException, argv: list[str]) -> str:
    """One sentence for an error of absl/ml_collections flag parsing: a missing config file, an
    unknown preset, an override of a field the config does not have, a value of the wrong
    type."""
    import difflib

    text = str(error)
    config_arg = _config_arg(argv)
    path = (config_arg or "").partition(":")[0]
    if path and not os.path.isfile(path):
        return (f"--config {path} does not exist; give a config file such as "
                "--config=configs/diffusion.py:tiny.")  # fmt: skip
    m = re.search(r"unknown preset '([^']*)'; choose one of (\[[^\]]*\])", text)
    if m:
        return f"--config {config_arg}: unknown preset {m.group(1)!r}; choose one of {m.group(2)}."
    defaults = _config_defaults(config_arg)
    m = re.search(r"flag --config\.([\w.]+)=(.*?): (.*)", text)
    if m:
        key, value, reason = m.groups()
        found, default = _field(defaults, key) if defaults is not None else (False, None)
        kinds = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
        kind = kinds.get(type(default), f"a {type(default).__name__}") if found else "a value"
        kind += f" like its default {default!r}" if found else ""
        return (f"--config.{key}={value} is not valid ({reason.splitlines()[0]}); give {kind}, "
                f"e.g. --config.{key}={default if found else '...'}.")  # fmt: skip
    if defaults is not None:
        for a in argv:
            key = a[len("--config.") :].partition("=")[0] if a.startswith("--config.") else ""
            if key and not _field(defaults, key)[0]:
                close = difflib.get_close_matches(key, _flat_keys(defaults), n=1)
                hint = f"did you mean --config.{close[0]}? " if close else ""
                return (f"--config.{key}: {path} has no field {key!r}; {hint}see its fields in "
                        f"{path}.")  # fmt: skip
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{lines[-1] if lines else type(error).__name__} (see --helpshort)."


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with each error as one sentence on stderr and exit status 2 (absl
    prints tracebacks and the usage for some, ml_collections defers a config file that does not
    load until it is used)."""
    try:
        rest = flags.FLAGS(argv)
        config = _CONFIG.value
        if config is not None:
            config.get("task")  # a config file that failed to load raises here
    except Exception as e:  # noqa: BLE001 - whatever parsing raises is a bad command line
        _usage_error(flag_error(e, argv))
    return rest


# config key -> (test, what it must be, an example): the numbers every training reads.
_CONFIG_NUMBERS: dict[str, tuple[Callable[[float], bool], str, str]] = {
    "total_steps": (lambda x: x >= 0, "an integer >= 0", "1000"),
    "batch_size": (lambda x: x >= 1, "an integer >= 1", "8"),
    "grad_accum": (lambda x: x >= 1, "an integer >= 1", "1"),
    "log_every": (lambda x: x >= 1, "an integer >= 1", "50"),
    "eval_every": (lambda x: x >= 0, "an integer >= 0 (0: never)", "0"),
    "checkpoint_every": (lambda x: x >= 1, "an integer >= 1", "1000"),
    "keep_checkpoints": (lambda x: x >= 1, "an integer >= 1", "3"),
    "max_nonfinite_steps": (lambda x: x >= 1, "an integer >= 1", "20"),
    "ema_decay": (lambda x: 0 <= x < 1, "in [0, 1)", "0.999"),
    "optim.lr": (lambda x: x > 0, "> 0", "1e-3"),
}


def check_config(config: Any) -> None:
    """ValueError (one sentence naming the --config.* override and an example) for a number a
    training cannot use: steps, batch size, cadences, the learning rate."""
    for key, (ok, what, example) in _CONFIG_NUMBERS.items():
        found, value = _field(config, key)
        if not found or value is None:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and ok(value)):
            raise ValueError(f"--config.{key} must be {what}, got {value!r}; e.g. "
                             f"--config.{key}={example}.")  # fmt: skip
    found, accum = _field(config, "grad_accum")
    if found and accum and config.get("batch_size", 0) % accum:
        raise ValueError(f"--config.batch_size={config.batch_size} is not a multiple of "
                         f"--config.grad_accum={accum}; make it one.")  # fmt: skip


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        _usage_error(f"unexpected arguments {argv[1:]}; flags only (see --help).")
    config = _CONFIG.value
    if config is None:
        _usage_error("--config is required, e.g. --config=configs/diffusion.py:tiny.")
    try:
        check_config(config)
    except ValueError as e:
        _usage_error(str(e))
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
    if _PROFILE.value and not _TIME_STEPS.value:
        raise app.UsageError(
            "launch/train.py: --profile traces timed steps; add --compile_only --time_steps=N."
        )
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
            report.update(
                aot.time_steps(trainer, compiled, _TIME_STEPS.value, report, _PROFILE.value)
            )
        if parallel.is_main_process():
            print(json.dumps(report))
        return
    workdir = _WORKDIR.value
    if not workdir:  # the same command twice resumes the same run
        workdir = os.path.join("runs", f"{config.task}_{config.get('preset', 'run')}")
        logging.info("no --workdir: training in %s", workdir)
    if _DISTRIBUTED.value:
        config.distributed = True
    from naturalspeech2_jax import xla_cache

    xla_cache.enable()  # a restarted run loads its programs instead of compiling them again
    parallel.maybe_initialize_distributed(bool(config.get("distributed", False)))
    from naturalspeech2_jax.train.metrics import MetricsFileError
    from naturalspeech2_jax.train.workdir_lock import WorkdirBusyError

    if os.path.exists(workdir) and not os.path.isdir(workdir):
        _usage_error(f"--workdir {workdir} is a file, not a folder; give a folder path.")
    try:
        loop.train(config, workdir)
    except loop.TrainingInterrupted as e:
        # Asked to stop (SIGTERM, Ctrl-C): the checkpoint is saved, which is a clean exit.
        logging.warning("%s", e)
    except (ValueError, OSError, WorkdirBusyError, MetricsFileError) as e:
        # Missing or unusable data/codec/checkpoint (a dataset without codes, an unknown split),
        # a work directory in use, a damaged metrics.jsonl, a file the system refuses: the
        # message is one sentence that names the file and the fix. NS2_TRACEBACK=1 shows the
        # traceback instead (a ValueError may also be a bug).
        if os.environ.get("NS2_TRACEBACK"):
            raise
        if isinstance(e, OSError) and e.strerror and e.filename:
            e = f"{e.filename}: {e.strerror}"
        _usage_error(str(e))


if __name__ == "__main__":
    host_memory.ensure()  # huge pages for XLA's host buffers: re-executes once
    app.run(main, flags_parser=parse_flags)
