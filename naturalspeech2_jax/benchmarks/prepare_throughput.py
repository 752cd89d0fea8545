"""Data preparation throughput, the local runner against Apache Beam's, on the same corpus.

Prepares ``--corpus`` once per runner into a fresh data folder (same options, same number of
worker processes) and prints one JSON object: for each runner the wall seconds, the audio hours
written, audio hours per wall hour and per worker core-hour, and whether the two datasets hold
the same examples (every feature of every example, frame counts, rejected.tsv).

    python -m naturalspeech2_jax.benchmarks.prepare_throughput \\
        --corpus ../shared/data/speechocean762_adult/dev --num_workers 2 --out work/beam/dev.json

The Beam runner is the DirectRunner in multi-processing mode here; on a cluster the per-core
figure is what sizes it (``docs/data_at_scale.md``). Harvest pitch and pocketsphinx (the
defaults) dominate the per-utterance cost; ``--pitch_method dio`` is faster and less accurate.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np

from naturalspeech2_jax.benchmarks import print_and_save


def _run(corpus: str, data_dir: str, runner: str, args: argparse.Namespace) -> dict[str, Any]:
    from naturalspeech2_jax.data.prepare import prepare_corpus

    start = time.perf_counter()
    result = prepare_corpus(
        corpus,
        data_dir,
        name=runner,
        runner=runner,
        num_workers=args.num_workers,
        pitch_method=args.pitch_method,
        aligner=args.aligner,
        progress=False,
    )
    seconds = time.perf_counter() - start
    hours = sum(s["hours"] for s in result.card["splits"].values())
    return {
        "seconds": round(seconds, 1),
        "utterances": sum(s["utterances"] for s in result.card["splits"].values()),
        "rejected": result.card["rejected_total"],
        "audio_hours": round(hours, 4),
        "audio_hours_per_wall_hour": round(hours / seconds * 3600, 2),
        "audio_hours_per_core_hour": round(hours / seconds * 3600 / args.num_workers, 2),
        "dataset_dir": str(result.dataset_dir),
    }


def same_datasets(a: str, b: str) -> bool:
    """Every feature of every example (record order), frame counts and rejected.tsv."""
    import tensorflow_datasets as tfds

    sa = tfds.builder_from_directory(a).as_data_source()
    sb = tfds.builder_from_directory(b).as_data_source()
    if set(sa) != set(sb):
        return False
    for split in sa:
        if len(sa[split]) != len(sb[split]):
            return False
        for i in range(len(sa[split])):
            x, y = sa[split][i], sb[split][i]
            if set(x) != set(y) or any(not np.array_equal(x[k], y[k]) for k in x):
                return False
        fa, fb = (np.load(os.path.join(d, f"frames_{split}.npy")) for d in (a, b))
        if not np.array_equal(fa, fb):
            return False
    with open(os.path.join(a, "rejected.tsv")) as fa, open(os.path.join(b, "rejected.tsv")) as fb:
        return fa.read() == fb.read()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True, help="a corpus folder (any layout)")
    parser.add_argument("--runners", default="local,beam")
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--pitch_method", default="harvest", choices=["harvest", "dio"])
    parser.add_argument("--aligner", default="auto", choices=["auto", "pocketsphinx", "builtin"])
    parser.add_argument("--data_dir", default=None, help="default: a temporary folder, removed")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.corpus):
        parser.error(f"--corpus {args.corpus} is not a folder; give a corpus folder.")
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="prepare_throughput_")
    try:
        report: dict[str, Any] = {"corpus": os.path.abspath(args.corpus), "cores": os.cpu_count()}
        report["num_workers"] = args.num_workers
        report["pitch_method"] = args.pitch_method
        runs = {r: _run(args.corpus, data_dir, r, args) for r in args.runners.split(",")}
        report["runners"] = runs
        if len(runs) == 2:
            a, b = (r["dataset_dir"] for r in runs.values())
            report["same_dataset"] = same_datasets(a, b)
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    print_and_save(report, args.out)


if __name__ == "__main__":
    main()
