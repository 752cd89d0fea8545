"""What a data preparation leaves besides its records, for both runners: the dataset card
(``card.json``, ``card.md``, ``lengths.png``, ``alignment.png``), ``rejected.tsv``, the
fingerprint's place in the write order, and the error when nothing survived.

``data/prepare.py`` (local runner) and ``data/prepare_beam.py`` (Beam runner) make their card
from the same tallies (``utterance.SplitTally``, ``AlignmentTally``) through these functions, so
that both cards are the same.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import Counter
from typing import Any

import numpy as np
from etils import epath

from naturalspeech2_jax.data.utterance import FRAME_RATE, TRANSCRIBER, AlignmentTally, SplitTally

FINGERPRINT_FILE = "prepared_from.json"
_Rejected = list[tuple[str, str, str]]  # (split, item, reason): the rows of rejected.tsv


MIN_FRAMES = "1 per phoneme, 0 for <sil>, <wb> and punctuation"  # both aligners' constraint


SPHINX_MODEL = "pocketsphinx en-us (pretrained HMM, CMUdict + espeak-ng for missing words)"


@dataclasses.dataclass
class PrepareResult:
    dataset_dir: epath.Path
    card: dict[str, Any]


def atomic_write(path: epath.Path, data: str | bytes) -> None:
    """Write ``path`` through a temporary file renamed over it: a kill leaves the old file or
    the new one, never a part of it."""
    tmp = path.parent / f".{path.name}.tmp{os.getpid()}"
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    os.replace(os.fspath(tmp), os.fspath(path))


def surviving_splits(
    splits: list[tuple[str, Any]],
    final: list[Any],
    corpora: list[str],
    rejected: _Rejected,
    work: epath.Path,
) -> list[str]:
    """The splits that kept at least one utterance, in corpus order; none is an error with the
    tally of every reason, after writing ``rejected.tsv`` into ``work``."""
    split_names = [s for s, _ in splits if any(x[0] == s for x in final)]
    if not split_names:
        tsv = work / "rejected.tsv"
        write_rejected(tsv, rejected)
        tally = ", ".join(f"{n} {r}" for r, n in reason_tally(rejected).most_common())
        raise ValueError(
            f"no utterance of {', '.join(corpora)} survived preparation: {len(rejected)} "
            f"rejected ({tally or 'none listed'}); each one and its reason is in {tsv}."
        )
    return split_names


def reason_class(reason: str) -> str:
    """The kind of a rejection reason, for tallies: its text before any ``:`` or ``(``, without
    file paths or quoted names ("audio file /a/b.flac is empty (0 bytes)" -> "audio file is
    empty"); ``rejected.tsv`` keeps the whole reason."""
    head = re.split(r"[:(]", reason, maxsplit=1)[0]
    head = re.sub(r"'[^']*'|\"[^\"]*\"", " ", head)
    words = [w for w in head.split() if "/" not in w and os.sep not in w]
    return " ".join(words) or reason.strip()


def reason_tally(rejected: _Rejected) -> Counter:
    return Counter(reason_class(r) for _, _, r in rejected)


def write_rejected(path: epath.Path, rejected: _Rejected) -> None:
    """``rejected.tsv``, sorted by split and item: the same file whichever runner (and in
    whichever order its workers) found them."""
    lines = ["split\titem\treason\n"]
    lines += [f"{split}\t{item}\t{reason}\n" for split, item, reason in sorted(rejected)]
    atomic_write(path, "".join(lines))


def dataset_card(
    opts: Any,
    *,
    corpora: list[str],
    version: str,
    vocab: Any,
    tallies: dict[str, SplitTally],
    source_counts: Counter,
    align_report: dict[str, Any],
    rejected: _Rejected,
    seconds: dict[str, float],
    transcription: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The dataset card (``card.json``): what went in, what came out, where the durations came
    from and how plausible they look, what was rejected and why, how long it took. Both
    runners make it from the same tallies (``utterance.SplitTally``, one per split)."""
    pooled = SplitTally()
    for t in tallies.values():
        pooled.merge(t)  # merge changes ``pooled`` only
    card = {
        "name": opts.name,
        "corpora": corpora,
        "version": version,
        "vocab_version": vocab.version,
        "splits": {
            s: {
                "utterances": t.utterances,
                "speakers": len(t.speakers),
                "hours": float(t.frames / FRAME_RATE / 3600),
            }
            for s, t in tallies.items()
        },
        "durations_source": dict(source_counts),
        "duration_stats": pooled.duration_stats(),
        # per split too: a corpus the aligner fails on hides behind one it aligns well when
        # pooled (../shared/data: cathy median 6 frames, speechocean 1, pooled 3)
        "duration_stats_by_split": {s: t.duration_stats() for s, t in tallies.items()},
        "aligner": align_report,
        # utterances listed without a transcript, recognised and kept or rejected
        "transcription": transcription or {},
        "rejected_total": len(rejected),
        "rejected_by_reason": dict(reason_tally(rejected)),
        "options": json.loads(json.dumps(dataclasses.asdict(opts))),  # as card.json reads back
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    total_hours = sum(v["hours"] for v in card["splits"].values())
    card["throughput_audio_hours_per_hour"] = total_hours / max(seconds["total"], 1) * 3600
    return card


def write_card(
    out: epath.Path, card: dict, lengths: dict[str, np.ndarray], rejected, fingerprint: dict
) -> None:
    """Into ``out``, in this order: ``lengths.png``, ``rejected.tsv``, ``card.md`` (which links
    the figures, written after them), ``prepared_from.json`` and last ``card.json``, the mark of
    a complete dataset. Each file appears whole or not at all (:func:`atomic_write`), so a kill
    never leaves a card that links a missing figure or a complete-looking, unfingerprinted
    dataset."""
    tmp = out / f".lengths.png.tmp{os.getpid()}.png"
    _plot_lengths(tmp, lengths)
    os.replace(os.fspath(tmp), os.fspath(out / "lengths.png"))
    write_rejected(out / "rejected.tsv", rejected)
    figures = ["lengths.png"] + (["alignment.png"] if card.get("aligner", {}).get("figure") else [])
    missing = [f for f in figures if not (out / f).exists()]
    if missing:  # a bug guard: card.md must never link a figure that is not there
        raise AssertionError(f"card.md would link missing figures {missing} in {out}")
    atomic_write(out / "card.md", _card_markdown(card))
    atomic_write(out / FINGERPRINT_FILE, json.dumps(fingerprint, indent=1))
    atomic_write(out / "card.json", json.dumps(card, indent=1))


def _card_markdown(card: dict) -> str:
    lines = [f"# Dataset card: {card['name']}", "", f"Source: {', '.join(card['corpora'])}", ""]
    lines += ["| split | utterances | speakers | hours |", "|---|---|---|---|"]
    for split, s in card["splits"].items():
        lines.append(f"| {split} | {s['utterances']} | {s['speakers']} | {s['hours']:.3f} |")
    lines += [
        "",
        f"Durations from: {card['durations_source']}",
        f"Duration statistics: {card.get('duration_stats', {})}",
        f"Rejected: {card['rejected_total']} ({card['rejected_by_reason']})",
        f"Phoneme vocabulary version: {card['vocab_version']}",
        "",
        "![lengths](lengths.png)",
        "",
    ]
    if card.get("transcription"):
        lines += [f"Transcribed: {card['transcription']}", ""]
    if card.get("aligner"):
        lines += [f"Aligner: {card['aligner']}", ""]
        if card["aligner"].get("figure"):
            lines += ["![alignment](alignment.png)", ""]
    return "\n".join(lines)


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (imported here: only the card draws)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_lengths(path: epath.Path, lengths: dict[str, np.ndarray]) -> None:
    """Histogram of utterance lengths in seconds, one colour per split."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    for split, frames in lengths.items():
        ax.hist(frames / FRAME_RATE, bins=30, alpha=0.6, label=split)
    ax.set_xlabel("seconds")
    ax.set_ylabel("utterances")
    ax.legend()
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)


def finish_alignment_report(
    report: dict[str, Any], tally: AlignmentTally, work: epath.Path, label: str
) -> dict[str, Any]:
    """``report`` with what both aligners report besides their own figures: the boundary error
    against the exact timings where the corpus has them, and ``work/alignment.png`` of one
    utterance (``AlignmentTally`` chooses it)."""
    errors = tally.boundary_error_ms()
    if errors is not None:
        report["boundary_error_ms"] = errors
    if tally.shown is not None:
        utt_id, _, tokens, d, exact, mel = tally.shown
        mel = np.asarray(mel() if callable(mel) else mel, np.float32)
        _plot_alignment(work / "alignment.png", utt_id, tokens, mel, d, exact, label)
        report["figure"] = "alignment.png"
    return report


def _plot_alignment(
    path, utt_id, tokens, mel, durations, exact=None, label="built-in aligner"
) -> None:
    """Mel spectrogram with the aligner's phoneme boundaries (white) and exact ones (red)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(8, len(mel) / 40), 3.5))
    ax.imshow(mel.T, origin="lower", aspect="auto", cmap="magma")
    ends = np.cumsum(durations)
    for end in ends[:-1]:
        ax.axvline(end - 0.5, color="white", lw=0.8)
    if exact is not None:
        for end in np.cumsum(exact)[:-1]:
            ax.axvline(end - 0.5, color="red", lw=0.8, ls="--")
    for tok, s, e in zip(tokens, ends - durations, ends, strict=True):
        if e > s:
            ax.text((s + e) / 2 - 0.5, mel.shape[1] * 1.02, tok, ha="center", fontsize=6)
    title = f"{utt_id}: {label} (white)" + (" vs exact (red)" if exact is not None else "")
    ax.set_title(title, fontsize=8, pad=12)
    ax.set_xlabel("codec frame (12.5 ms)")
    ax.set_ylabel("mel bin")
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=100)
    plt.close(fig)


def transcription_report(listed: int, kept: int, opts: Any) -> dict[str, Any]:
    """The card's account of the transcription stage (both runners)."""
    return {
        "model": TRANSCRIBER,
        "min_confidence": opts.transcribe_min_confidence,
        "untranscribed": listed,
        "kept": kept,
        "rejected": listed - kept,
    }
