"""Scores (JSON, MIDI, MusicXML) become phonemes, durations and pitch (``inference.singing``)."""

from __future__ import annotations

import pytest

from naturalspeech2_jax.inference import singing
from tests.helpers import write_scores


def test_scores_become_durations_and_pitch(tmp_path):
    write_scores(tmp_path)
    js = singing.read_score(str(tmp_path / "s.json"))
    assert [n.pitch for n in js] == [60, 60, None, 67, 69]
    assert sum(n.seconds for n in js) == pytest.approx(2.25)  # 120 bpm: a beat is 0.5 s
    mid = singing.read_score(str(tmp_path / "s.mid"))
    assert [(n.lyric, n.pitch) for n in mid] == [("la", 60), ("li", 62), ("", None), ("lo", 64)]
    assert sum(n.seconds for n in mid) == pytest.approx(1.75)
    xml = singing.read_score(str(tmp_path / "s.musicxml"))
    assert [n.pitch for n in xml] == [64, 66, None] and sum(n.seconds for n in xml) == 2.0
    tokens, durations, f0 = singing.score_to_inputs(js)
    assert durations.sum() == len(f0) == 180 and len(tokens) == len(durations)
    assert tokens[0] == tokens[-1] == "<sil>" and "," in tokens
    assert f0[0] == pytest.approx(261.63, rel=1e-3) and f0[90] == 0.0  # the rest
