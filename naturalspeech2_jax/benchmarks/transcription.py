"""How well `prepare_data --transcribe` transcribes, and how fast: WER against the reference
transcripts of corpora that have them, and the share kept, at several confidence thresholds.

    python -m naturalspeech2_jax.benchmarks.transcription \\
        --reference ../shared/data/speechocean762_adult/dev,../shared/data/cathy \\
        --untranscribed ../shared/data/librispeech_tc100 [--every 4] --out work/transcription.json

For each corpus with references: every utterance is transcribed by the bundled Moonshine
recogniser (``utterance.transcribe`` with no threshold); the JSON gives, per threshold, the
share kept and the WER of the kept transcripts against the references (the text the dataset
would then hold), beside the WER of all of them. For an untranscribed corpus: the share kept per
threshold. Seconds per audio second are reported too (one process, one onnxruntime thread).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from naturalspeech2_jax import SAMPLE_RATE
from naturalspeech2_jax.benchmarks import print_and_save


def _transcribe_all(corpus: str, untranscribed: bool, every: int) -> list[dict[str, Any]]:
    from naturalspeech2_jax.audio import load_audio
    from naturalspeech2_jax.data import readers, utterance

    asr = utterance.transcriber()
    listing = readers.read_corpus(corpus, untranscribed=untranscribed)
    rows = []
    for u in listing.utterances[::every]:
        wav = load_audio(u.audio_path, start=u.start, end=u.end)
        start = time.perf_counter()
        text, confidence = asr.transcribe_scored(wav)
        rows.append(
            {
                "id": u.id,
                "reference": None if untranscribed else u.text,
                "heard": " ".join(text.split()),
                "confidence": confidence,
                "seconds": time.perf_counter() - start,
                "audio_seconds": len(wav) / SAMPLE_RATE,
            }
        )
    return rows


def _summary(rows: list[dict[str, Any]], thresholds: list[float]) -> dict[str, Any]:
    from naturalspeech2_jax.evaluation.asr import word_error_rate

    out: dict[str, Any] = {"utterances": len(rows)}
    out["real_time_factor"] = round(
        sum(r["seconds"] for r in rows) / max(sum(r["audio_seconds"] for r in rows), 1e-9), 4
    )
    conf = np.array([r["confidence"] for r in rows])
    out["confidence_quantiles"] = {
        q: round(float(np.quantile(conf[np.isfinite(conf)], q)), 3) for q in (0.05, 0.25, 0.5)
    }
    with_ref = rows[0]["reference"] is not None if rows else False
    if with_ref:
        out["wer_all"] = round(
            word_error_rate([r["reference"] for r in rows], [r["heard"] for r in rows]).wer, 4
        )
    per = {}
    for t in thresholds:
        kept = [r for r in rows if r["heard"] and r["confidence"] >= t]
        entry: dict[str, Any] = {"kept": len(kept), "kept_share": round(len(kept) / len(rows), 3)}
        if with_ref and kept:
            wer = word_error_rate([r["reference"] for r in kept], [r["heard"] for r in kept]).wer
            entry["wer_kept"] = round(wer, 4)
        per[str(t)] = entry
    out["by_threshold"] = per
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", default="", help="comma-separated corpora with text")
    parser.add_argument("--untranscribed", default="", help="comma-separated corpora without")
    parser.add_argument("--thresholds", default="-0.2,-0.25,-0.3,-0.35,-0.4,-0.5,-1.0")
    parser.add_argument("--every", type=int, default=1, help="every N-th utterance of each")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    report: dict[str, Any] = {"thresholds": thresholds, "corpora": {}}
    for names, untranscribed in ((args.reference, False), (args.untranscribed, True)):
        for corpus in filter(None, names.split(",")):
            if not os.path.isdir(corpus):
                parser.error(f"{corpus} is not a corpus folder.")
            rows = _transcribe_all(corpus, untranscribed, max(args.every, 1))
            report["corpora"][corpus] = _summary(rows, thresholds)
            print(json.dumps({corpus: report["corpora"][corpus]}), flush=True)
    print_and_save(report, args.out)


if __name__ == "__main__":
    main()
