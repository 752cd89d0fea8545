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
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs.common import apply_overrides
from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE, parallel
from naturalspeech2_jax.align import sphinx
from naturalspeech2_jax.align.viterbi import boundary_errors_ms
from naturalspeech2_jax.data import pipeline
from naturalspeech2_jax.diffusion import samplers
from naturalspeech2_jax.text.g2p import is_phoneme
from naturalspeech2_jax.text.vocab import PhonemeVocab
from naturalspeech2_jax.train.compiled import (  # noqa: F401  (part of this module's API)
    BF16_PEAK_TFLOPS,
    compiled_costs,
    compiled_memory,
    matmul_flops_per_second,
    matmul_reference,
    nominal_bf16_peak,
    reference_peak,
    time_calls,
)
from naturalspeech2_jax.train.loop import Trainer
from naturalspeech2_jax.train.task import make_task

log = logging.getLogger(__name__)

# task name -> config modules that may define it (first found wins), in configs/.
TASK_CONFIGS = {
    "codec": ("codec",),
    "ns2": ("diffusion", "ns2"),
    "aligner": ("aligner",),
    "loop_test": ("loop_test",),
}


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
        out["audio_seconds"] = frames * HOP_LENGTH / SAMPLE_RATE
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

    config = (
        config.copy_and_resolve_references()
        if hasattr(config, "copy_and_resolve_references")
        else config
    )
    config.num_devices = int(options.num_devices)
    config.async_checkpoints = False

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

    frames = int(round(seconds * SAMPLE_RATE / HOP_LENGTH))
    tokens = max(1, frames // frames_per_token)
    frames = tokens * frames_per_token
    audio_s = frames * HOP_LENGTH / SAMPLE_RATE
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
                first = time_calls(call, 1)[0]
                times = time_calls(call, repeats)
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
    """Sampler names registered by ``naturalspeech2_jax.diffusion.samplers``."""
    return sorted(samplers.SAMPLERS)


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
