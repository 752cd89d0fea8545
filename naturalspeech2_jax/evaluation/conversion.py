"""Voice conversion scored by speaker similarity: does the output sound like the target voice
more than like the source speaker it came from?

Reads the ``conversions.tsv`` that ``inference.samples.write_conversion_samples`` writes (id,
source speaker, target speaker, source / target prompt / converted wav paths) and embeds each
waveform with the evaluation's speaker encoder (resemblyzer by default). Per conversion:

- ``to_target``: similarity of the converted speech to the target prompt (higher is better);
- ``to_source``: its similarity to the source utterance (the voice it should have left);
- ``source_to_target``: the source's own similarity to the target prompt (what no conversion
  at all would score as ``to_target``).

A conversion works when ``to_target`` exceeds ``to_source``; the summary gives the means and
the share of conversions for which it does.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from naturalspeech2_jax.evaluation.corpus import load_audio
from naturalspeech2_jax.evaluation.speaker import cosine_similarity, get_speaker_encoder

COLUMNS = ("id", "source_speaker", "target_speaker", "source", "target_prompt", "converted")


def read_conversions(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a ``conversions.tsv``; ValueError naming the file when a column is missing."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    missing = [c for c in COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise ValueError(f"{path} has no conversions or lacks columns {missing}; write it with "
                         "inference.samples.write_conversion_samples.")  # fmt: skip
    return rows


def conversion_similarity(rows: Sequence[dict[str, str]], encoder: Any = None) -> dict[str, Any]:
    """{"records": per conversion, "summary": means and the share with to_target > to_source}."""
    encoder = encoder or get_speaker_encoder()
    records = []
    for row in rows:
        emb = {
            k: encoder.embed(load_audio(row[k])) for k in ("source", "target_prompt", "converted")
        }
        records.append({
            "id": row["id"], "source_speaker": row["source_speaker"],
            "target_speaker": row["target_speaker"],
            "to_target": cosine_similarity(emb["converted"], emb["target_prompt"]),
            "to_source": cosine_similarity(emb["converted"], emb["source"]),
            "source_to_target": cosine_similarity(emb["source"], emb["target_prompt"]),
        })  # fmt: skip
    keys = ("to_target", "to_source", "source_to_target")
    summary: dict[str, Any] = {k: float(np.mean([r[k] for r in records])) for k in keys}
    summary["closer_to_target"] = float(np.mean([r["to_target"] > r["to_source"] for r in records]))
    summary["count"] = len(records)
    return {"records": records, "summary": summary}


def conversion_markdown(summary: dict[str, Any]) -> str:
    """The summary as a one-row Markdown table."""
    return (
        "| conversions | similarity to the target | to the source | source to the target "
        "(no conversion) | closer to the target |\n|---|---|---|---|---|\n"
        f"| {summary['count']} | {summary['to_target']:.3f} | {summary['to_source']:.3f} | "
        f"{summary['source_to_target']:.3f} | {summary['closer_to_target']:.0%} |"
    )
