"""NS2 speed at the PyTorch reference's size: the side-by-side of issue 25, reproducible.

    python -m naturalspeech2_jax.benchmarks.reference_speed --out R.json [--steps 10]
        [--ce_rvq on,off] [--profile DIR] [--no_inference] [--set model.heads=4 ...]
    python -m naturalspeech2_jax.benchmarks.reference_speed --smoke --out R.json   # tests

What is measured, each CE-RVQ mode in its own process (so peak RSS is that mode's): the project's
own training step (``train.loop.Trainer``: same init, shardings, donation and optimizer as
training) on one fixed batch of exactly the reference's shapes (8 utterances x 400 target frames,
a separate 150-frame prompt, 60 phonemes, fp32): compile time, median and spread of ``--steps``
timed steps, latent frames/s, the step's FLOPs and FLOP utilisation against a float32 matmul
measured in the same process (FLOPs from XLA's cost analysis of the looped twin's lowering when the
stacks are scanned: XLA counts a while loop's body once, so a scanned program's own count misses
all but one block per stack), XLA's memory analysis and the process's peak RSS, the minor page
faults and system CPU time per step (the command first re-executes itself with huge pages on:
``host_memory.py``); the loss alone
(forward) and loss + gradients (forward + backward) as separate programs; then inference at the
reference's 10 s: one denoiser evaluation at 800 frames, 150 Euler steps (RTF), and the default
sampler (dpm++2m) at its default steps (``diffusion.defaults``: 12), 16 and 25.

Model: ``configs/ns2_model.py:bench44m`` (heads 8) with a 100-phoneme vocabulary, a random 16 x 1024
x 128 codec (speed does not depend on its weights), fp32, no EMA. CE-RVQ off = ``model.w_ce_rvq=0``
(the model then skips the codebook distances). ``--profile DIR`` also traces a few steps with
``jax.profiler`` and writes ``DIR/<mode>/ops.json``: time per HLO instruction, per op kind, per
fusion name and per source line of this package (from the stack frames XLA keeps), top first, with
the optimised HLO in ``DIR/<mode>/hlo.txt``. ``--perf DIR`` samples a few more steps with Linux
``perf`` and reports CPU time per class of code (``cpu_share``: matrix kernels, XLA's generated
loops, copies, kernel, runtime; ``train/cpu_profile.py``): on XLA:CPU the trace above times the
convolutions' thunks, not the Eigen/oneDNN work they hand to the thread pool. Timings are
measurements, never pass/fail criteria; rerun and give the spread. ``docs/experiments/speed.md``
has the measured history.

Reference (EVALUATION.md, measured 2026-12-06 on this kind of 2-core machine; Amphion's PyTorch
NS2, eager, torch 2.13 CPU, 2 threads, 44.6M parameters against our 42.9M), kept in ``REFERENCE``
and printed beside every figure:

| | ours (before issue 25) | PyTorch reference |
|---|---:|---:|
| training step, CE-RVQ on (median of 10) | 6.88 s = 465 frames/s | 4.56 s = 701 frames/s |
| training step, CE-RVQ off | 6.39 s = 501 frames/s | 3.22 s = 993 frames/s |
| compile of the training step | 256-282 s | none |
| peak memory while training | 10.5 GiB | 4.0 GiB |
| one denoiser step at inference, 800 frames | 0.075 s | 0.114 s |
| 150 Euler steps for 10 s of audio (RTF) | 10.9 s (1.09) | 19.1 s (1.91) |
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from naturalspeech2_jax import host_memory
from naturalspeech2_jax.diffusion.defaults import DEFAULT_SAMPLER, DEFAULT_STEPS
from naturalspeech2_jax.train.cpu_profile import JIT_PROFILE_ENV, sample_steps

log = logging.getLogger(__name__)

REFERENCE = {
    "source": "EVALUATION.md, 2026-12-06: Amphion PyTorch NS2, eager, torch 2.13 CPU, 2 threads",
    "params": 44.6e6,
    "on": {"step_s": 4.56, "frames_per_s": 701},
    "off": {"step_s": 3.22, "frames_per_s": 993},
    "peak_memory_gib": 4.0,
    "denoiser_step_800_s": 0.114,
    "euler150_10s_s": 19.1,
}
BEFORE = {  # ours before issue 25, same table
    "on": {"step_s": 6.88, "frames_per_s": 465},
    "off": {"step_s": 6.39, "frames_per_s": 501},
    "compile_s": "256-282",
    "peak_memory_gib": 10.5,
    "denoiser_step_800_s": 0.075,
    "euler150_10s_s": 10.9,
}
MODULE = "naturalspeech2_jax.benchmarks.reference_speed"
SHAPES = {"batch": 8, "frames": 400, "prompt": 150, "tokens": 60}
SMOKE_SHAPES = {"batch": 2, "frames": 64, "prompt": 24, "tokens": 12}


# ------------------------------------------------------------------------------------ config
def bench_config(ce_rvq: bool, smoke: bool = False, overrides: list[str] | None = None):
    """The benchmark's NS2 config (see the module docstring)."""
    import configs.diffusion as diffusion
    from configs.common import apply_overrides
    from configs.ns2_model import model_config
    from naturalspeech2_jax.tasks import random_codec

    c = diffusion.get_config("smoke" if smoke else "tiny")
    if not smoke:
        c.model = model_config("bench44m")
        c.model.update(vocab_size=100)  # the preset has heads 8
    c.codec.checkpoint = random_codec.RANDOM_CODEC
    c.codec.update(num_quantizers=16, codebook_size=1024 if not smoke else 64, latent_dim=128)
    if smoke:
        c.codec.latent_dim = 16
    c.model.w_ce_rvq = c.model.w_ce_rvq if ce_rvq else 0.0
    c.precision.compute_dtype = "float32"
    c.ema_decay = 0.0
    c.num_devices = 1
    c.async_checkpoints = False
    c.batch_size = (SMOKE_SHAPES if smoke else SHAPES)["batch"]
    apply_overrides(c, dict(_parse_override(o) for o in overrides or []))
    return c


def _parse_override(text: str) -> tuple[str, Any]:
    """``model.heads=4`` -> ("model.heads", 4): values as JSON where they parse, else strings."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"error: --set takes KEY=VALUE (e.g. model.heads=4), got {text!r}.")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def synthetic_batch(config, shapes: dict[str, int], seed: int = 0) -> dict:
    """Host arrays of the reference's shapes: every utterance fills its frames and tokens, the
    durations sum to the frames, and the prompt comes separately (no cut from the target)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    b, t, p, n = shapes["batch"], shapes["frames"], shapes["prompt"], shapes["tokens"]
    r, k, d = (int(config.codec[x]) for x in ("num_quantizers", "codebook_size", "latent_dim"))
    durations = np.full((b, n), t // n, np.int32)
    durations[:, : t - (t // n) * n] += 1  # sums to t exactly
    vocab = int(config.model.vocab_size)
    return {
        "phonemes": rng.integers(4, vocab, (b, n), dtype=np.int32),
        "durations": durations,
        "token_mask": np.ones((b, n), np.float32),
        "codes": rng.integers(0, k, (b, t, r), dtype=np.int32),
        "log_f0": np.log(rng.uniform(90, 250, (b, t))).astype(np.float32),
        "frame_mask": np.ones((b, t), np.float32),
        "prompt_latent": rng.normal(0, 1, (b, p, d)).astype(np.float32),
        "prompt_mask": np.ones((b, p), np.float32),
    }


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _spread(times: list[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": [round(x, 4) for x in times],
    }


# ----------------------------------------------------------------------------- measurement
def measure_training(
    config, shapes, steps: int, profile_dir: str | None, perf_dir: str | None = None
) -> dict[str, Any]:
    import jax
    from flax import nnx

    from naturalspeech2_jax import parallel
    from naturalspeech2_jax.train.compiled import compiled_costs, compiled_memory, time_calls
    from naturalspeech2_jax.train.loop import Trainer
    from naturalspeech2_jax.train.op_profile import profile_steps

    host = synthetic_batch(config, shapes)
    out: dict[str, Any] = {"shapes": dict(shapes)}
    with tempfile.TemporaryDirectory(prefix="ns2_ref_") as workdir:
        trainer = Trainer(config, workdir)
        try:
            batch = parallel.host_batch_to_global(host, trainer.mesh, trainer.rules)
            # The codec's device arrays, made outside any trace (train_iterator does this too).
            _ = trainer.task._device_assets
            state = jax.block_until_ready(
                jax.jit(trainer.init_fn, out_shardings=trainer.shardings)(trainer.key)
            )
            start = time.perf_counter()
            lowered = trainer.step_fn.lower(state, batch)
            out["lower_s"] = time.perf_counter() - start
            start = time.perf_counter()
            compiled = lowered.compile()
            out["compile_s"] = time.perf_counter() - start
            out["xla"] = {**compiled_costs(compiled), "memory": compiled_memory(compiled)}
            # XLA's cost analysis counts a while loop's body once, so a scanned step reports a
            # fraction of its FLOPs: the model's FLOPs come from the looped twin's lowering.
            out["lowered_flops"] = _flops(lowered.cost_analysis())
            twin_dir = os.path.join(workdir, "looped_twin")
            out["model_flops"] = (
                looped_flops(config, batch, twin_dir) if config.model.get("scan_layers") else None
            ) or out["xla"]["flops"]
            state, metrics = compiled(state, batch)  # warm-up
            jax.block_until_ready(state)
            times = []
            usage0 = resource.getrusage(resource.RUSAGE_SELF)
            for _ in range(steps):
                t0 = time.perf_counter()
                state, metrics = compiled(state, batch)
                jax.block_until_ready((state, metrics))
                times.append(time.perf_counter() - t0)
            usage1 = resource.getrusage(resource.RUSAGE_SELF)
            out["step"] = _spread(times)
            # What the host's memory costs a step: page faults of the step's fresh temporaries
            # and the kernel time they take (naturalspeech2_jax/host_memory.py).
            out["step"]["minor_faults"] = (usage1.ru_minflt - usage0.ru_minflt) / steps
            out["step"]["system_cpu_s"] = (usage1.ru_stime - usage0.ru_stime) / steps
            out["glibc_tunables"] = os.environ.get("GLIBC_TUNABLES", "")
            out["loss"] = float(jax.device_get(metrics["model/loss"]))
            out["peak_rss_gib_after_training"] = peak_rss_gib()
            if perf_dir:  # before the trace below, which donates the state it is given
                holder = [state]

                def one_step():
                    holder[0], m = compiled(holder[0], batch)
                    jax.block_until_ready((holder[0], m))

                out["cpu_profile"] = sample_steps(one_step, max(3, steps // 2), perf_dir)
                state = holder[0]
            if profile_dir:
                out["profile"] = profile_steps(compiled, state, batch, profile_dir)

            # Forward alone and forward + backward, as their own programs (same model, batch).
            model = trainer.task.build_model(nnx.Rngs(int(config.seed)))
            graphdef, params, rest = nnx.split(model, nnx.Param, ...)
            rng = jax.random.key(1)

            def loss_of(p, b):
                return trainer.task.loss(nnx.merge(graphdef, p, rest), b, rng, 0)[0]

            programs = {"forward": jax.jit(loss_of),
                        "forward_backward": jax.jit(jax.value_and_grad(loss_of))}  # fmt: skip
            for name, fn in programs.items():
                start = time.perf_counter()
                jax.block_until_ready(fn(params, batch))
                first = time.perf_counter() - start
                t = time_calls(lambda fn=fn: fn(params, batch), max(3, steps // 2))
                out[name] = {**_spread(t), "compile_and_first_s": first}
        finally:
            trainer.checkpointer.close()
    return out


def _flops(cost: Any) -> float | None:
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return float(flops) if flops else None


def looped_flops(config, batch, workdir: str) -> float | None:
    """FLOPs of one training step of ``config`` with looped layer stacks (lowered, not compiled:
    seconds), the count a scanned program's cost analysis cannot give. ``workdir`` must outlive
    the call (the twin's checkpointer cleans it up in the background)."""
    from naturalspeech2_jax.train.loop import Trainer

    twin = copy.deepcopy(config)
    twin.model.scan_layers = False
    trainer = Trainer(twin, workdir)
    try:
        _ = trainer.task._device_assets
        return _flops(trainer.step_fn.lower(trainer.abstract, batch).cost_analysis())
    except Exception as e:  # noqa: BLE001 - a count is optional, the timing is not
        log.warning("looped FLOP count unavailable: %s", e)
        return None
    finally:
        trainer.checkpointer.close()


def measure_inference(config, smoke: bool) -> dict[str, Any]:
    """One denoiser evaluation at 800 frames = (150 Euler steps - 1 step) / 149, the 150 steps
    for 10 s of audio (prior and diffusion; the codec decoder is not part of it), and the same
    10 s with the default sampler (dpm++2m) at its default steps (12), 16 and 25 (one network
    evaluation a step, two with classifier-free guidance)."""
    from flax import nnx

    from naturalspeech2_jax.benchmarks.speed import benchmark_inference
    from naturalspeech2_jax.train.task import make_task

    model = make_task(config).build_model(nnx.Rngs(0))
    model.eval()
    seconds = 1.0 if smoke else 10.0
    runs = {"euler": (1, 4) if smoke else (1, 150),
            DEFAULT_SAMPLER: (2,) if smoke else (DEFAULT_STEPS, 16, 25)}  # fmt: skip
    rows = {}
    for sampler, steps in runs.items():
        res = benchmark_inference(model, samplers=[sampler], step_counts=steps, seconds=seconds,
                                  prompt_frames=150, repeats=2)  # fmt: skip
        rows.update({(sampler, r["steps"]): r for r in res["rows"]})
    if any("error" in r for r in rows.values()):
        return {"error": [r.get("error") for r in rows.values() if "error" in r]}
    lo, hi = (rows[("euler", n)] for n in runs["euler"])
    out = {
        "frames": res["frames"],
        "audio_seconds": res["audio_seconds"],
        "denoiser_step_s": (hi["synthesis_s"] - lo["synthesis_s"]) / (hi["steps"] - lo["steps"]),
        "compile_s": hi["compile_s"],
    }
    for (sampler, n), r in rows.items():
        if sampler == DEFAULT_SAMPLER or n == hi["steps"]:
            out[f"{sampler}{n}_s"] = r["synthesis_s"]
            out[f"{sampler}{n}_rtf"] = r["rtf"]
    return out


# ---------------------------------------------------------------------------------- driver
def worker(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    from naturalspeech2_jax.train.compiled import matmul_reference

    config = bench_config(mode == "on", smoke=args.smoke, overrides=args.set)
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    result: dict[str, Any] = {"ce_rvq": mode, "matmul": matmul_reference(smoke=args.smoke)}
    profile = os.path.join(args.profile, mode) if args.profile else None
    perf = os.path.join(args.perf, mode) if args.perf else None
    result["training"] = measure_training(config, shapes, args.steps, profile, perf)
    if args.inference:
        result["inference"] = measure_inference(config, args.smoke)
    result["peak_rss_gib"] = peak_rss_gib()
    return result


def summarise(mode: str, r: dict[str, Any]) -> dict[str, Any]:
    """The issue's columns for one mode: ours, the reference, ours / reference, utilisation."""
    t = r["training"]
    step = t["step"]["median_s"]
    sh = t["shapes"]
    frames = sh["batch"] * sh["frames"] / step
    flops = t.get("model_flops") or t["xla"].get("flops")
    peak = r["matmul"]["matmul_f32_flops_per_s"]
    ref = REFERENCE[mode]
    row = {
        "step_s": round(step, 3),
        "step_spread_s": [round(t["step"]["min_s"], 3), round(t["step"]["max_s"], 3)],
        "frames_per_s": round(frames, 1),
        "reference_frames_per_s": ref["frames_per_s"],
        "vs_reference": round(frames / ref["frames_per_s"], 3),
        "vs_before": round(frames / BEFORE[mode]["frames_per_s"], 3),
        "gflop_per_step": round(flops / 1e9, 1) if flops else None,
        "matmul_peak_gflop_per_s": round(peak / 1e9, 1),
        "flop_utilisation": round(flops / step / peak, 3) if flops else None,
        "reference_flop_utilisation": round(flops / ref["step_s"] / peak, 3) if flops else None,
        "compile_s": round(t["compile_s"], 1),
        "xla_peak_gib": round((t["xla"]["memory"].get("peak_bytes") or 0) / 2**30, 2),
        "peak_rss_gib": round(t["peak_rss_gib_after_training"], 2),
        "minor_faults_per_step": round(t["step"].get("minor_faults", 0)),
        "system_cpu_s_per_step": round(t["step"].get("system_cpu_s", 0.0), 2),
        "forward_s": round(t["forward"]["median_s"], 3),
        "forward_backward_s": round(t["forward_backward"]["median_s"], 3),
    }
    cpu = t.get("cpu_profile") or {}
    if "classes" in cpu:  # perf's CPU samples per class of code (train/cpu_profile.py)
        row["cpu_share"] = {c["class"]: c["share"] for c in cpu["classes"]}
    elif "error" in cpu:
        row["cpu_share"] = cpu["error"]
    inf = r.get("inference") or {}
    if "denoiser_step_s" in inf:
        row["denoiser_step_800_s"] = round(inf["denoiser_step_s"], 4)
        for key in [k for k in inf if k.endswith("_rtf")]:
            row[key.replace("_rtf", "_s")] = round(inf[key.replace("_rtf", "_s")], 2)
            row[key] = round(inf[key], 3)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="result JSON (also printed)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--ce_rvq", default="on,off", help="on, off or on,off")
    p.add_argument("--profile", help="folder for jax.profiler traces and ops.json")
    p.add_argument("--perf", help="folder for a Linux perf sample of a few steps: CPU time per "
                   "class of code (train/cpu_profile.py; needs perf)")  # fmt: skip
    p.add_argument("--no_inference", dest="inference", action="store_false")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: seconds (tests)")
    p.add_argument("--set", action="append", default=[], help="config override, e.g. "
                   "model.heads=4 (repeatable)")  # fmt: skip
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.ce_rvq.split(",") if m.strip()]
    if not modes or set(modes) - {"on", "off"}:
        raise SystemExit(f"error: --ce_rvq must be on, off or on,off, got {args.ce_rvq!r}.")
    if args.steps < 1:
        raise SystemExit(f"error: --steps must be >= 1, got {args.steps}.")
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args)), flush=True)
        return 0
    results: dict[str, Any] = {"reference": REFERENCE, "before": BEFORE, "modes": {}}
    common = ["--steps", str(args.steps)] + [f"--set={o}" for o in args.set]
    common += ["--smoke"] * args.smoke + ["--no_inference"] * (not args.inference)
    common += ["--profile", args.profile] if args.profile else []
    common += ["--perf", args.perf] if args.perf else []
    # oneDNN names its JIT kernels for perf only if told so before it makes the first one.
    env = {**os.environ, **(JIT_PROFILE_ENV if args.perf else {})}
    for mode in modes:  # one process each: peak RSS and caches are that mode's alone
        cmd = [sys.executable, "-m", MODULE, *common, "--ce_rvq", mode, "--worker", mode]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"error: the CE-RVQ {mode} run failed:\n{proc.stderr[-3000:]}")
        raw = json.loads(lines[-1][len("RESULT ") :])
        results["modes"][mode] = {"summary": summarise(mode, raw), "raw": raw}
    text = json.dumps(results, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(json.dumps({m: r["summary"] for m, r in results["modes"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    host_memory.ensure()  # huge pages for XLA's host buffers: re-executes once
    sys.exit(main())
