"""Summaries, Markdown tables, JSON and PNG plots for evaluation results.

Per-utterance records (one dict per test pair and system) are reduced to per-system means; WER is
reported both corpus-level (total errors / total reference words: ``wer``) and as the mean of
utterance WERs (``wer_utterance_mean``). ``failures`` counts utterances with WER > 50%.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

FAILURE_WER = 0.5
REQUIRED_SUMMARY_KEYS = (
    "wer",
    "speaker_similarity",
    "dnsmos_ovrl",
    "pitch_mean_diff",
    "duration_mean_diff",
    "failures",
)
_TEXT_KEYS = {"id", "speaker", "system", "text", "prosody_level"}


def _nanmean(values: Iterable[Any]) -> float:
    arr = np.asarray([float(v) for v in values if v is not None], dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Means over the records of ONE system (see module docstring for the WER conventions)."""
    out: dict[str, Any] = {"n": len(records)}
    numeric = sorted(
        {
            k
            for r in records
            for k, v in r.items()
            if k not in _TEXT_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    )
    for key in numeric:
        if key.startswith(("wer_errors", "wer_words")):
            continue
        values = [r.get(key) for r in records]
        if key == "wer" or key.startswith("wer_"):
            suffix = key[len("wer") :]
            errors = sum(r.get(f"wer_errors{suffix}", 0) for r in records)
            words = sum(r.get(f"wer_words{suffix}", 0) for r in records)
            out[key] = errors / words if words else float("nan")
            out[f"wer_utterance_mean{suffix}"] = _nanmean(values)
            if key == "wer":
                out["failures"] = sum(1 for v in values if v is not None and v > FAILURE_WER)
                out["failure_rate"] = out["failures"] / max(len(records), 1)
        else:
            out[key] = _nanmean(values)
    for key in REQUIRED_SUMMARY_KEYS:
        out.setdefault(key, float("nan") if key != "failures" else 0)
    levels = sorted({r["prosody_level"] for r in records if "prosody_level" in r})
    if levels:
        out["prosody_level"] = "+".join(levels)
    return out


def summarize_records(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-system summaries, systems in first-seen order."""
    systems: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        systems.setdefault(r["system"], []).append(r)
    return {name: summarize(rs) for name, rs in systems.items()}


def per_speaker(records: Sequence[Mapping[str, Any]], system: str) -> dict[str, dict[str, Any]]:
    """Per-speaker summaries of one system."""
    speakers: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if r["system"] == system:
            speakers.setdefault(r.get("speaker", ""), []).append(r)
    return {s: summarize(rs) for s, rs in sorted(speakers.items())}


def _json_safe(value: Any) -> Any:
    # JSON has no NaN/Infinity: write null for NaN and a string for infinities.
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, np.ndarray):
        return [_json_safe(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(result: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write a result dict as strict JSON (NaN -> null)."""
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(_json_safe(result), f, indent=1, allow_nan=False)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


_COLUMNS = (
    ("n", "n", 0),
    ("wer", "WER", 3),
    ("wer_pocketsphinx", "WER (pocketsphinx)", 3),
    ("failures", "failures", 0),
    ("speaker_similarity", "speaker sim", 3),
    ("dnsmos_ovrl", "DNSMOS OVRL", 2),
    ("dnsmos_sig", "SIG", 2),
    ("dnsmos_bak", "BAK", 2),
    ("dnsmos_p808", "P808", 2),
    ("pitch_mean_diff", "pitch mean diff (Hz)", 2),
    ("pitch_std_diff", "pitch std diff (Hz)", 2),
    ("duration_mean_diff", "duration mean diff (frames)", 2),
    ("duration_std_diff", "duration std diff (frames)", 2),
    ("pitch_pearson_vs_gt", "pitch r vs GT", 3),
    ("pitch_rmse_vs_gt", "pitch RMSE vs GT (Hz)", 2),
    ("duration_pearson_vs_gt", "duration r vs GT", 3),
    ("duration_rmse_vs_gt", "duration RMSE vs GT (frames)", 2),
)


def _table(rows: Mapping[str, Mapping[str, Any]], first: str) -> list[str]:
    columns = [c for c in _COLUMNS if any(c[0] in r for r in rows.values())]
    lines = [
        "| " + " | ".join([first] + [c[1] for c in columns]) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for name, r in rows.items():
        cells = [_fmt(r.get(key), digits) for key, _, digits in columns]
        lines.append("| " + " | ".join([name] + cells) + " |")
    return lines


def markdown_report(result: Mapping[str, Any]) -> str:
    """Markdown: per-system table, per-speaker table of the primary system, evaluator speeds."""
    lines = ["## Zero-shot TTS evaluation", ""]
    lines += _table(result["systems"], "system")
    level = result["summary"].get("prosody_level")
    if level:
        lines += [
            "",
            f"Prosody vs prompt computed at {level} level (lower differences are closer).",
        ]
    primary = result["summary"].get("system", "ground_truth")
    lines += ["", f"### Per speaker ({primary})", ""]
    lines += _table(per_speaker(result["records"], primary), "speaker")
    timing = result.get("timing")
    if timing:
        lines += ["", "### Speed", ""]
        lines += [
            f"{timing['pairs']} pairs, wall {timing['wall_s']:.0f} s, "
            f"peak RSS {timing['peak_rss_mb']:.0f} MB",
            "",
        ]
        lines += ["| evaluator | compute s | audio s | real-time factor |", "|---|---|---|---|"]
        for name, t in timing["evaluators"].items():
            lines.append(f"| {name} | {t['compute_s']:.1f} | {t['audio_s']:.1f} | {t['rtf']:.3f} |")
    return "\n".join(lines) + "\n"


_PLOT_METRICS = (
    ("speaker_similarity", "speaker similarity to prompt"),
    ("wer", "WER"),
    ("dnsmos_ovrl", "DNSMOS OVRL"),
    ("pitch_mean_diff", "pitch mean diff vs prompt (Hz)"),
)


def plot_report(result: Mapping[str, Any], out_dir: str | os.PathLike) -> list[str]:
    """Per-speaker bar charts and per-system distributions as PNG; returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = result["records"]
    systems = list(result["systems"])
    metrics = [m for m in _PLOT_METRICS if any(m[0] in r for r in records)]
    written = []
    if not metrics:
        return written

    fig, axes = plt.subplots(len(metrics), 1, figsize=(12, 3 * len(metrics)), squeeze=False)
    speakers = sorted({r.get("speaker", "") for r in records})
    width = 0.8 / max(len(systems), 1)
    for ax, (key, label) in zip(axes[:, 0], metrics, strict=True):
        for i, system in enumerate(systems):
            stats = per_speaker(records, system)
            values = [stats.get(s, {}).get(key, float("nan")) for s in speakers]
            ax.bar(np.arange(len(speakers)) + i * width, values, width, label=system)
        ax.set_xticks(np.arange(len(speakers)) + width * (len(systems) - 1) / 2)
        ax.set_xticklabels(speakers, rotation=90, fontsize=7)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    written.append(_save(plt, fig, axes, out / "per_speaker.png"))

    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for ax, (key, label) in zip(axes[0], metrics, strict=True):
        for system in systems:
            values = np.asarray(
                [r[key] for r in records if r["system"] == system and r.get(key) is not None],
                dtype=np.float64,
            )
            values = values[np.isfinite(values)]
            if values.size:
                ax.hist(values, bins=20, alpha=0.5, label=system)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("utterances")
    written.append(_save(plt, fig, axes, out / "distributions.png"))
    return written


def _save(plt, fig, axes, path: pathlib.Path) -> str:
    """Legend on the first panel, then the PNG; the figure is closed."""
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)
