"""Summaries, markdown and plots of an evaluation result."""

from __future__ import annotations

import json
import pathlib

import pytest

from naturalspeech2_jax.evaluation import report


def test_summary_markdown_and_plots(tmp_path):
    records = [
        {"id": "1", "speaker": "a", "system": "ground_truth", "wer": 0.0, "wer_errors": 0,
         "wer_words": 5, "speaker_similarity": 0.8, "dnsmos_ovrl": 3.0, "pitch_mean_diff": 10.0,
         "duration_mean_diff": 1.0},
        {"id": "2", "speaker": "b", "system": "ground_truth", "wer": 0.6, "wer_errors": 3,
         "wer_words": 5, "speaker_similarity": 0.6, "dnsmos_ovrl": float("nan"),
         "pitch_mean_diff": 20.0, "duration_mean_diff": 3.0},
    ]  # fmt: skip
    summary = report.summarize(records)
    assert summary["wer"] == pytest.approx(0.3)  # corpus level: 3 errors / 10 words
    assert summary["failures"] == 1
    assert summary["speaker_similarity"] == pytest.approx(0.7)
    assert summary["dnsmos_ovrl"] == pytest.approx(3.0)  # NaN ignored
    result = {
        "summary": {"system": "ground_truth", **summary},
        "systems": report.summarize_records(records),
        "records": records,
    }
    markdown = report.markdown_report(result)
    assert "| ground_truth | 2 | 0.300 |" in markdown
    paths = report.plot_report(result, tmp_path / "plots")
    assert all(pathlib.Path(p).stat().st_size > 1000 for p in paths) and len(paths) == 2
    report.write_json(result, tmp_path / "r.json")
    loaded = json.loads((tmp_path / "r.json").read_text())
    assert loaded["records"][1]["dnsmos_ovrl"] is None
