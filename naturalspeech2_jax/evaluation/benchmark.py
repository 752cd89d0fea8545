"""Speed and scale: train-step time, throughput, FLOP utilisation, memory, compile time, inference
real-time factor and data pipeline speed, measured side by side with a matmul reference.

Everything here runs unchanged on CPU, GPU and TPU (one code path; the device kind only changes
which reference peak is reported beside the measured one):

- ``matmul_reference``: FLOP/s of a large float32 matmul (and bfloat16 on accelerators) measured on
  the same machine in the same run. Model FLOP utilisation (MFU) is model FLOPs per step (XLA's
  cost analysis of the compiled step) / step time / that reference; on an accelerator also against
  its nominal dense bf16 peak when the device kind is known (:data:`BF16_PEAK_TFLOPS`).
- ``benchmark_train_step``: one task and preset through the project's own ``Trainer`` (same init,
  shardings, jitted step and donation as training): compile time, per-device program FLOPs and
  bytes accessed, compiled memory (arguments, outputs, temporaries: the peak estimate), then the
  median step time over a few steps on one fixed batch, examples/s and, where the batch has a
  ``frame_mask``, codec frames/s and audio seconds/s (frames x 200 / 16000).
- ``benchmark_inference``: real-time factor (compute seconds / audio seconds) of a model's
  ``synthesize`` per sampler and step count, after a warm-up call; the first call's extra time is
  reported as compile time. Only for models that have ``synthesize`` (NaturalSpeech 2).
- ``benchmark_pipeline``: examples/s of the grain pipelines (random crops and length buckets) over
  a prepared dataset, and the number of distinct batch shapes seen (bounded by the bucket count).

Timings are measurements, never pass/fail criteria: the machines are shared and noisy, which is
why each figure is reported beside a reference measured in the same run.
Entry point: ``launch/benchmark.py``.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
HOP = 200

# Nominal dense bfloat16 peak per chip, TFLOP/s (vendor data sheets), matched on device_kind.
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,  # SXM; PCIe is 756
    "A100": 312.0,
    "L4": 121.0,
    "A10": 125.0,
    "V100": 125.0,
    "TPU v4": 275.0,
    "TPU v5 lite": 197.0,
    "TPU v5e": 197.0,
    "TPU v5p": 459.0,
    "TPU v5": 459.0,
    "TPU v6 lite": 918.0,
    "TPU v6e": 918.0,
}

# task name -> config modules that may define it (first found wins), in configs/.
TASK_CONFIGS = {
    "codec": ("codec",),
    "ns2": ("diffusion", "ns2"),
    "aligner": ("aligner",),
    "loop_test": ("loop_test",),
}


def nominal_bf16_peak(device_kind: str) -> float | None:
    """Nominal dense bf16 FLOP/s of an accelerator chip, or None when unknown (or a CPU)."""
    kind = device_kind.upper()
    for name in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if name.upper() in kind:
            return BF16_PEAK_TFLOPS[name] * 1e12
    return None


def _time_calls(fn: Callable[[], Any], repeats: int) -> list[float]:
    import jax

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def matmul_flops_per_second(n: int, dtype: Any, repeats: int = 3, device: Any = None) -> float:
    """Measured FLOP/s of an [n, n] @ [n, n] matmul (2 n^3 FLOPs) after a warm-up call."""
    import jax
    import jax.numpy as jnp

    device = device or jax.devices()[0]
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.device_put(jax.random.normal(key_a, (n, n), jnp.float32).astype(dtype), device)
    b = jax.device_put(jax.random.normal(key_b, (n, n), jnp.float32).astype(dtype), device)
    f = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(f(a, b))
    best = min(_time_calls(lambda: f(a, b), repeats))
    return 2.0 * n**3 / best


def matmul_reference(smoke: bool = False) -> dict[str, Any]:
    """Reference FLOP/s on the first device: float32 matmul always, bf16 too on accelerators."""
    import jax
    import jax.numpy as jnp

    device = jax.devices()[0]
    accelerator = device.platform != "cpu"
    n = 8192 if accelerator else (512 if smoke else 2048)
    out: dict[str, Any] = {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "num_devices": jax.device_count(),
        "matmul_n": n,
        "matmul_f32_flops_per_s": matmul_flops_per_second(n, jnp.float32, device=device),
    }
    if accelerator:
        out["matmul_bf16_flops_per_s"] = matmul_flops_per_second(n, jnp.bfloat16, device=device)
        out["nominal_bf16_peak_flops_per_s"] = nominal_bf16_peak(device.device_kind)
    return out


def reference_peak(reference: Mapping[str, Any]) -> tuple[float, str]:
    """The FLOP/s that utilisation is quoted against, and its name.

    CPU: the measured float32 matmul. Accelerator: the nominal bf16 peak when known, else the
    measured bf16 matmul.
    """
    nominal = reference.get("nominal_bf16_peak_flops_per_s")
    if nominal:
        return float(nominal), "nominal_bf16_peak"
    if reference.get("matmul_bf16_flops_per_s"):
        return float(reference["matmul_bf16_flops_per_s"]), "measured_bf16_matmul"
    return float(reference["matmul_f32_flops_per_s"]), "measured_f32_matmul"


def compiled_costs(compiled: Any) -> dict[str, float | None]:
    """FLOPs and bytes accessed of a compiled program (XLA cost analysis; per device program)."""
    try:
        cost = compiled.cost_analysis()
    except Exception as e:  # noqa: BLE001 - some backends do not implement it
        log.warning("cost analysis unavailable: %s", e)
        return {"flops": None, "bytes_accessed": None}
    if isinstance(cost, Sequence) and not isinstance(cost, Mapping):
        cost = cost[0] if cost else {}
    cost = cost or {}
    flops = cost.get("flops")
    accessed = cost.get("bytes accessed")
    return {
        "flops": float(flops) if flops is not None else None,
        "bytes_accessed": float(accessed) if accessed is not None else None,
    }


def compiled_memory(compiled: Any) -> dict[str, int | None]:
    """Compiled memory analysis in bytes; ``peak_bytes`` = arguments + outputs + temporaries -
    aliased (donated) bytes, the program's footprint on one device."""
    try:
        mem = compiled.memory_analysis()
    except Exception as e:  # noqa: BLE001 - some backends do not implement it
        log.warning("memory analysis unavailable: %s", e)
        mem = None
    if mem is None:
        return {"peak_bytes": None}
    fields = {
        "argument_bytes": "argument_size_in_bytes",
        "output_bytes": "output_size_in_bytes",
        "temp_bytes": "temp_size_in_bytes",
        "alias_bytes": "alias_size_in_bytes",
        "generated_code_bytes": "generated_code_size_in_bytes",
    }
    out = {k: int(getattr(mem, attr, 0) or 0) for k, attr in fields.items()}
    out["peak_bytes"] = (
        out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
    )
    peak = getattr(mem, "peak_memory_in_bytes", None)
    if peak:
        out["xla_peak_memory_in_bytes"] = int(peak)
    return out


def load_task_config(task: str, preset: str) -> tuple[Any | None, str | None]:
    """(config, None) for ``configs/<module>.py:<preset>`` of a task, or (None, why not)."""
    for module_name in TASK_CONFIGS.get(task, (task,)):
        try:
            module = importlib.import_module(f"configs.{module_name}")
        except ModuleNotFoundError as e:
            if e.name in (f"configs.{module_name}", "configs"):
                continue
            return None, f"configs/{module_name}.py does not import: {e}"
        try:
            config = module.get_config(preset)
        except (ValueError, KeyError) as e:
            return None, f"configs/{module_name}.py has no preset {preset!r}: {e}"
        if config.get("task") != task:
            continue
        return config, None
    names = ", ".join(f"configs/{m}.py" for m in TASK_CONFIGS.get(task, (task,)))
    return None, f"task {task!r} is not in this tree yet ({names} missing)"


def _batch_stats(batch: Mapping[str, np.ndarray]) -> dict[str, float]:
    leaves = [np.asarray(v) for v in batch.values()]
    examples = int(leaves[0].shape[0]) if leaves and leaves[0].ndim else 1
    out: dict[str, float] = {"examples": examples}
    if "frame_mask" in batch:
        frames = float(np.sum(np.asarray(batch["frame_mask"])))
        out["frames"] = frames
        out["audio_seconds"] = frames * HOP / SAMPLE_RATE
        out["padded_frames"] = float(np.asarray(batch["frame_mask"]).size)
    return out


def _shapes(batch: Mapping[str, Any]) -> dict[str, list[int]]:
    return {k: list(np.shape(v)) for k, v in batch.items()}


@dataclasses.dataclass
class TrainBenchOptions:
    """How long to measure: ``steps`` timed steps after ``warmup`` untimed ones."""

    steps: int = 5
    warmup: int = 1
    num_devices: int = 1  # 0 = all devices (the config's mesh over them)
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def benchmark_train_step(
    config: Any, options: TrainBenchOptions, reference: Mapping[str, Any]
) -> dict[str, Any]:
    """Compile and time one training step of ``config``'s task (see the module docstring)."""
    import jax

    from naturalspeech2_jax import parallel
    from naturalspeech2_jax.train.loop import Trainer

    config = (
        config.copy_and_resolve_references()
        if hasattr(config, "copy_and_resolve_references")
        else config
    )
    config.num_devices = int(options.num_devices)
    config.async_checkpoints = False
    from naturalspeech2_jax.configuration import apply_overrides

    apply_overrides(config, options.overrides)
    n_dev = int(config.num_devices) or jax.device_count()
    with tempfile.TemporaryDirectory(prefix="ns2_bench_") as workdir:
        start = time.perf_counter()
        trainer = Trainer(config, workdir)
        setup_s = time.perf_counter() - start
        try:
            iterator = trainer.task.train_iterator(
                seed=int(config.seed),
                local_batch_size=trainer.local_batch,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
            )
            start = time.perf_counter()
            host_batch = next(iterator)
            first_batch_s = time.perf_counter() - start
            batch = parallel.host_batch_to_global(host_batch, trainer.mesh, trainer.rules)
            start = time.perf_counter()
            state = jax.block_until_ready(
                jax.jit(trainer.init_fn, out_shardings=trainer.shardings)(trainer.key)
            )
            init_s = time.perf_counter() - start

            start = time.perf_counter()
            lowered = trainer.step_fn.lower(state, batch)
            lower_s = time.perf_counter() - start
            start = time.perf_counter()
            compiled = lowered.compile()
            compile_s = time.perf_counter() - start
            costs = compiled_costs(compiled)
            memory = compiled_memory(compiled)

            for _ in range(options.warmup):
                state, metrics = compiled(state, batch)
            jax.block_until_ready(state)
            times = []
            for _ in range(options.steps):
                t0 = time.perf_counter()
                state, metrics = compiled(state, batch)
                jax.block_until_ready((state, metrics))
                times.append(time.perf_counter() - t0)
            loss_keys = {k: float(v) for k, v in jax.device_get(metrics).items() if "loss" in k}
        finally:
            trainer.checkpointer.close()

    step_s = statistics.median(times)
    stats = _batch_stats(host_batch)
    flops = costs["flops"]
    total_flops = flops * n_dev if flops is not None else None
    out: dict[str, Any] = {
        "task": config.task,
        "preset": config.get("preset", ""),
        "num_devices": n_dev,
        "global_batch": int(config.batch_size),
        "batch_shapes": _shapes(host_batch),
        "params": _param_count(state),
        "setup_s": setup_s,
        "first_batch_s": first_batch_s,
        "init_s": init_s,
        "lower_s": lower_s,
        "compile_s": compile_s,
        "step_time_s": step_s,
        "step_times_s": times,
        "examples_per_s": stats["examples"] / step_s,
        "flops_per_step_per_device": flops,
        "flops_per_step": total_flops,
        "bytes_accessed_per_step_per_device": costs["bytes_accessed"],
        "memory_per_device": memory,
        "final_losses": loss_keys,
    }
    if "frames" in stats:
        out["frames_per_step"] = stats["frames"]
        out["frame_fill"] = stats["frames"] / max(stats["padded_frames"], 1.0)
        out["frames_per_s"] = stats["frames"] / step_s
        out["frames_per_s_per_device"] = stats["frames"] / step_s / n_dev
        out["audio_seconds_per_s"] = stats["audio_seconds"] / step_s
    if flops is not None:
        out["model_flops_per_s_per_device"] = flops / step_s
    add_utilisation(out, reference)
    return out


def add_utilisation(row: dict[str, Any], reference: Mapping[str, Any]) -> None:
    """(Re)compute a train row's MFU against ``reference`` (see :func:`reference_peak`)."""
    achieved = row.get("model_flops_per_s_per_device")
    if achieved is None:
        return
    peak, peak_name = reference_peak(reference)
    row["mfu"] = achieved / peak
    row["mfu_reference"] = peak_name
    if reference.get("matmul_f32_flops_per_s"):
        row["mfu_vs_f32_matmul"] = achieved / reference["matmul_f32_flops_per_s"]


def remeasure_reference(reference: dict[str, Any], smoke: bool = False) -> None:
    """Measure the matmul again (end of run) and keep the best of both as the reference.

    On a shared machine the load changes during a run; the best measurement is the closest to
    what the hardware can do, and both values are kept to show the spread.
    """
    again = matmul_reference(smoke=smoke)
    for key in ("matmul_f32_flops_per_s", "matmul_bf16_flops_per_s"):
        if key in again:
            first = reference.get(key)
            reference[f"{key}_start"] = first
            reference[f"{key}_end"] = again[key]
            reference[key] = max(v for v in (first, again[key]) if v is not None)


def _param_count(state: Any) -> int:
    import jax

    return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(state.params)))


# ------------------------------------------------------------------------------------ inference


def benchmark_inference(
    model: Any,
    *,
    samplers: Iterable[str],
    step_counts: Iterable[int],
    seconds: float = 10.0,
    prompt_frames: int = 150,
    frames_per_token: int = 8,
    repeats: int = 1,
) -> dict[str, Any]:
    """Real-time factor of ``model.synthesize`` per sampler and step count (latent generation;
    durations are fixed so every call makes the same number of frames).

    Returns ``{"rows": [...], "audio_seconds": s}``; a sampler that fails is reported in its row.
    """
    import jax
    import jax.numpy as jnp

    frames = int(round(seconds * SAMPLE_RATE / HOP))
    tokens = max(1, frames // frames_per_token)
    frames = tokens * frames_per_token
    audio_s = frames * HOP / SAMPLE_RATE
    latent_dim = int(getattr(model, "latent_dim", 0) or 0)
    if latent_dim <= 0:
        raise ValueError("the model has no latent_dim attribute: cannot build a prompt latent")
    phonemes = (jnp.arange(tokens, dtype=jnp.int32)[None] % 8) + 1
    token_mask = jnp.ones((1, tokens), jnp.float32)
    prompt = jnp.zeros((1, prompt_frames, latent_dim), jnp.float32)
    prompt_mask = jnp.ones((1, prompt_frames), jnp.float32)
    durations = jnp.full((1, tokens), frames_per_token, jnp.int32)
    rows = []
    for sampler in samplers:
        for steps in step_counts:
            row: dict[str, Any] = {"sampler": sampler, "steps": int(steps)}

            def call(sampler=sampler, steps=steps):
                return model.synthesize(
                    phonemes,
                    token_mask,
                    prompt,
                    prompt_mask,
                    jax.random.key(0),
                    sampler=sampler,
                    steps=int(steps),
                    durations=durations,
                    max_frames=frames,
                )

            try:
                first = _time_calls(call, 1)[0]
                times = _time_calls(call, repeats)
            except Exception as e:  # noqa: BLE001 - one sampler failing must not end the run
                row["error"] = f"{type(e).__name__}: {e}"
                rows.append(row)
                continue
            run_s = min(times)
            row.update(
                {
                    "synthesis_s": run_s,
                    "rtf": run_s / audio_s,
                    "per_step_s": run_s / max(int(steps), 1),
                    "compile_s": max(first - run_s, 0.0),
                }
            )
            rows.append(row)
    return {"audio_seconds": audio_s, "frames": frames, "rows": rows}


def default_samplers() -> list[str]:
    """Sampler names registered by ``naturalspeech2_jax.diffusion.samplers`` (empty if absent)."""
    try:
        from naturalspeech2_jax.diffusion import samplers
    except ImportError:
        return []
    return sorted(getattr(samplers, "SAMPLERS", {}))


def benchmark_task_inference(
    config: Any,
    *,
    step_counts: Sequence[int],
    samplers: Sequence[str] | None = None,
    seconds: float = 10.0,
) -> dict[str, Any]:
    """Build the task's model (fresh weights: speed does not depend on them) and time synthesis.

    Returns ``{"skipped": why}`` for models without ``synthesize`` (codec, aligner, ...).
    """
    from flax import nnx

    from naturalspeech2_jax.train.task import make_task

    task = make_task(config)
    model = task.build_model(nnx.Rngs(0))
    if not hasattr(model, "synthesize"):
        return {"skipped": f"the {config.task} model has no synthesize method"}
    names = list(samplers) if samplers else default_samplers()
    if not names:
        return {"skipped": "no samplers registered (naturalspeech2_jax.diffusion.samplers)"}
    if hasattr(model, "eval"):
        model.eval()
    return benchmark_inference(model, samplers=names, step_counts=step_counts, seconds=seconds)


# ------------------------------------------------------------------------------------- pipeline


def benchmark_sphinx_alignment(dataset_dir: str, *, utterances: int = 40) -> dict[str, Any]:
    """pocketsphinx forced alignment (``align/sphinx.py``, what data preparation runs per
    utterance) over a prepared dataset's train split: utterances/s and audio seconds per second
    on one process, and the boundary error against the dataset's own durations."""
    from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE
    from naturalspeech2_jax.align import sphinx
    from naturalspeech2_jax.align.viterbi import boundary_errors_ms
    from naturalspeech2_jax.data import pipeline
    from naturalspeech2_jax.text.g2p import is_phoneme
    from naturalspeech2_jax.text.vocab import PhonemeVocab

    vocab = PhonemeVocab.load(os.path.join(os.fspath(dataset_dir), "vocab.json"))
    source = pipeline.open_split(dataset_dir, "train")
    n = min(utterances, len(source))
    aligner = sphinx.SphinxAligner()
    examples = [source[i] for i in range(n)]
    errors, failures, audio_s = [], 0, 0.0
    start = time.perf_counter()
    for ex in examples:
        tokens = vocab.decode(ex["phonemes"])
        text = ex["text"].decode() if isinstance(ex["text"], bytes) else str(ex["text"])
        frames = len(ex["log_f0"])
        audio_s += len(ex["audio"]) / SAMPLE_RATE
        try:
            d, _ = aligner.align(
                np.asarray(ex["audio"], np.int16), sphinx.transcript_words(text), tokens,
                [is_phoneme(t) for t in tokens], frames, SAMPLE_RATE / HOP_LENGTH,
                pronounce=sphinx.espeak_pronunciation,
            )  # fmt: skip
        except sphinx.AlignmentError:
            failures += 1
            continue
        errors.append(boundary_errors_ms(d, np.asarray(ex["durations"])))
    wall = time.perf_counter() - start
    err = np.concatenate(errors) if errors else np.zeros(0)
    return {
        "dataset_dir": dataset_dir,
        "utterances": n,
        "failures": failures,
        "utterances_per_s": n / wall,
        "audio_seconds_per_s": audio_s / wall,
        "boundary_error_median_ms": float(np.median(err)) if err.size else None,
        "boundary_within_25ms": float(np.mean(err <= 25)) if err.size else None,
    }


def benchmark_pipeline(
    dataset_dir: str,
    *,
    batch_size: int = 8,
    batches: int = 20,
    crop_frames: int = 128,
    buckets: Sequence[int] | None = None,
    num_threads: int = 2,
    max_bucket_scan: int = 20_000,
) -> dict[str, Any]:
    """examples/s of the crop and bucket pipelines over a prepared dataset (after the first batch).

    The bucketed pipeline also reports how many distinct batch shapes it produced (each is one
    compiled program in training).
    """
    from naturalspeech2_jax.data import pipeline

    source = pipeline.open_split(dataset_dir, "train")
    lengths = pipeline.frame_lengths(dataset_dir, "train")
    batch_size = min(batch_size, len(lengths))
    out: dict[str, Any] = {"dataset_dir": dataset_dir, "examples": int(len(lengths))}

    def measure(iterator: Any) -> dict[str, Any]:
        start = time.perf_counter()
        first = next(iterator)
        first_s = time.perf_counter() - start
        signatures = {tuple(sorted((k, np.shape(v)) for k, v in first.items()))}
        start = time.perf_counter()
        for _ in range(batches):
            b = next(iterator)
            signatures.add(tuple(sorted((k, np.shape(v)) for k, v in b.items())))
        wall = time.perf_counter() - start
        return {
            "batch_size": batch_size,
            "batches": batches,
            "first_batch_s": first_s,
            "examples_per_s": batches * batch_size / wall,
            "distinct_batch_shapes": len(signatures),
        }

    out["crop"] = measure(
        pipeline.crop_iterator(
            source,
            crop_frames=crop_frames,
            seed=0,
            local_batch_size=batch_size,
            num_threads=num_threads,
        )
    )
    if len(lengths) > max_bucket_scan:
        out["bucket"] = {"skipped": f"more than {max_bucket_scan} examples to scan for lengths"}
        return out
    tokens = np.array([len(source[i]["phonemes"]) for i in range(len(lengths))])
    if buckets is None:
        top = int(lengths.max())
        buckets = sorted({max(32, int(math.ceil(q / 32) * 32)) for q in (top / 2, top)})
    top_tokens = int(tokens.max())
    token_buckets = sorted(
        {max(8, int(math.ceil(q / 8) * 8)) for q in (top_tokens / 2, top_tokens)}
    )
    plan = pipeline.BucketBatches(
        lengths,
        global_batch=batch_size,
        buckets=buckets,
        seed=0,
        token_lengths=tokens,
        token_buckets=token_buckets,
    )
    bucketed = measure(
        pipeline.bucket_iterator(source, plan, local_batch_size=batch_size, num_threads=num_threads)
    )
    bucketed["buckets"] = list(buckets)
    bucketed["token_buckets"] = list(token_buckets)
    out["bucket"] = bucketed
    return out
