"""How fast ``launch/codec.py encode-dataset`` encodes a prepared dataset on 1 vs N devices.

    python -m naturalspeech2_jax.benchmarks.encode_dataset --checkpoint RUN \
        --dataset DATA/<name>/1.0.0 [--devices 1,8] [--batch_size 8] [--bucket_frames 50] \
        [--splits train] [--repeats 3] [--out encode.json]

Each device count runs in its own process (the CPU's device count is fixed when JAX starts:
``--xla_force_host_platform_device_count=N`` simulates N CPU devices; on a GPU or TPU host the
first N devices are used). A process loads the codec, then encodes the splits twice into a
temporary folder with ``inference.codes_dataset.encode_dataset``: the first run includes
compiling one program per (bucket, rows) shape, the next ``--repeats`` reuse them (the steady
state a long dataset reaches; the fastest is kept). Prints one JSON object: per device count the
seconds, utterances/s and audio hours encoded per hour of the first and the warm run, and the
warm speed-up over the first device count. Timings
are measurements, never pass/fail criteria (simulated CPU devices share the host's cores). Like
encode-dataset, a codec run without ``latent_stats.npz`` gets one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE


def measure(
    checkpoint: str,
    dataset: str,
    devices: int,
    *,
    batch_size: int = 8,
    bucket_frames: int = 50,
    splits: list[str] | None = None,
    repeats: int = 1,
) -> dict[str, Any]:
    """In this process (JAX already holding >= ``devices`` devices): codec load, then 1 +
    ``repeats`` encode_dataset runs of ``splits`` on ``devices`` devices, timed."""
    import jax
    import numpy as np

    from naturalspeech2_jax.data import pipeline
    from naturalspeech2_jax.inference import codes_dataset
    from naturalspeech2_jax.inference.codec import Codec

    name, all_splits = codes_dataset.dataset_info(dataset)
    splits = splits or all_splits
    frames = np.concatenate([pipeline.frame_lengths(dataset, s) for s in splits])
    start = time.perf_counter()
    codec = Codec.from_checkpoint(checkpoint)
    row: dict[str, Any] = {
        "devices": devices,
        "device_kind": jax.local_devices()[0].device_kind,
        "batch_size_per_device": batch_size,
        "bucket_frames": bucket_frames,
        "splits": splits,
        "utterances": int(len(frames)),
        "audio_hours": round(float(frames.sum()) * HOP_LENGTH / SAMPLE_RATE / 3600, 4),
        "load_s": round(time.perf_counter() - start, 3),
    }
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(1 + repeats):
            out = os.path.join(tmp, str(run), f"{name}_bench", "1.0.0")
            start = time.perf_counter()
            codes_dataset.encode_dataset(
                checkpoint, dataset, out, splits=splits, bucket_frames=bucket_frames,
                codec=codec, batch_size=batch_size, devices=devices,
            )  # fmt: skip
            seconds.append(time.perf_counter() - start)
    for run, s in (("first", seconds[0]), ("warm", min(seconds[1:]))):
        row[f"{run}_s"] = round(s, 3)
        row[f"{run}_utterances_per_s"] = round(len(frames) / s, 3)
        row[f"{run}_audio_hours_per_hour"] = round(row["audio_hours"] * 3600 / s, 1)
    return row


def _child_env(devices: int) -> dict[str, str]:
    """This environment with N simulated CPU devices (any other device count flag dropped),
    importing this very checkout of the package, installed or not."""
    import naturalspeech2_jax

    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    flags.append(f"--xla_force_host_platform_device_count={devices}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(naturalspeech2_jax.__file__)))
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, XLA_FLAGS=" ".join(flags), PYTHONPATH=path)


def run_child(args: argparse.Namespace, devices: int) -> dict[str, Any]:
    """``measure`` in a fresh process with ``devices`` devices; its JSON row."""
    argv = [sys.executable, "-m", "naturalspeech2_jax.benchmarks.encode_dataset", "--child"]
    argv += ["--checkpoint", args.checkpoint, "--dataset", args.dataset, "--devices", str(devices)]
    argv += ["--batch_size", str(args.batch_size), "--bucket_frames", str(args.bucket_frames)]
    argv += ["--splits", args.splits, "--repeats", str(args.repeats)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=_child_env(devices))
    if proc.returncode:
        raise RuntimeError(f"the {devices}-device run failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="codec run (its --workdir)")
    parser.add_argument("--dataset", required=True, help="DATA/<name>/<version> to encode")
    parser.add_argument("--devices", default="1,8", help="comma-separated device counts")
    parser.add_argument("--batch_size", type=int, default=8, help="utterances per device")
    parser.add_argument("--bucket_frames", type=int, default=50)
    parser.add_argument("--splits", default="", help="comma-separated (default: all)")
    parser.add_argument("--repeats", type=int, default=1, help="warm runs (the fastest kept)")
    parser.add_argument("--out", default="", help="also write the JSON here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    counts = [int(d) for d in args.devices.split(",") if d]
    if not counts or min(counts + [args.batch_size, args.bucket_frames, args.repeats]) < 1:
        parser.error("--devices, --batch_size, --bucket_frames and --repeats must be >= 1.")
    if not os.path.exists(os.path.join(args.dataset, "dataset_info.json")):
        parser.error(f"{args.dataset} is not a prepared dataset (no dataset_info.json).")
    splits = [s for s in args.splits.split(",") if s] or None
    if args.child:
        row = measure(
            args.checkpoint, args.dataset, counts[0], batch_size=args.batch_size,
            bucket_frames=args.bucket_frames, splits=splits, repeats=args.repeats,
        )  # fmt: skip
        print(json.dumps(row))
        return row
    rows = [run_child(args, n) for n in counts]
    result = {
        "checkpoint": args.checkpoint,
        "dataset": args.dataset,
        "runs": rows,
        "warm_speedup": {
            str(r["devices"]): round(rows[0]["warm_s"] / r["warm_s"], 2) for r in rows
        },
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
