"""Evaluation pairs (target, prompt of the same speaker) from a Kaldi-style folder, pair lists,
prompts snapped to phoneme boundaries."""

from __future__ import annotations

import pathlib

import pytest

from naturalspeech2_jax.evaluation import corpus
from tests.helpers import SR, speechlike


def _write_corpus(root: pathlib.Path) -> None:
    import soundfile as sf

    lines, spk = [], []
    for s, speaker in enumerate(["spk_a", "spk_b"]):
        (root / speaker).mkdir(parents=True)
        for i in range(3):
            utt = f"{speaker}_{i}"
            sf.write(root / speaker / f"{utt}.flac", speechlike(4.0, 110 + 60 * s, seed=i), SR)
            lines.append(f"{utt} HELLO WORLD NUMBER {i}")
            spk.append(f"{utt} {speaker}")
    (root / "text").write_text("\n".join(lines) + "\n")
    (root / "utt2spk").write_text("\n".join(spk) + "\n")


def test_pairs_use_another_utterance_of_the_same_speaker(tmp_path):
    _write_corpus(tmp_path)
    utts = corpus.read_kaldi_dir(tmp_path)
    assert len(utts) == 6 and utts[0].seconds == pytest.approx(4.0)
    pairs = corpus.make_pairs(utts, seed=3, limit=4)
    assert pairs == corpus.make_pairs(utts, seed=3, limit=4)
    assert {p.speaker for p in pairs} == {"spk_a", "spk_b"}  # round-robin over speakers
    for p in pairs:
        assert p.prompt_audio != p.ground_truth_audio
        assert pathlib.Path(p.prompt_audio).parent.name == p.speaker
        assert 0.0 <= p.prompt_start <= 1.0 and p.prompt_seconds == 3.0
    corpus.write_pair_list(pairs, tmp_path / "pairs.tsv")
    assert corpus.read_pair_list(tmp_path / "pairs.tsv") == pairs
    prompt = corpus.load_audio(pairs[0].prompt_audio, start=pairs[0].prompt_start, seconds=3.0)
    assert prompt.shape == (3 * SR,)


def test_snap_prompt_to_phonemes():
    durations = [10] * 30  # 300 frames = 3.75 s
    start, seconds, span = corpus.snap_prompt_to_phonemes(durations, 0.13, 1.0)
    assert start == pytest.approx(0.25) and span == (10,) * 8 and seconds == pytest.approx(1.0)
    start, seconds, span = corpus.snap_prompt_to_phonemes(durations, 3.5, 1.0)
    assert start + seconds == pytest.approx(3.75) and sum(span) == 80  # moved back to fit
    start, seconds, span = corpus.snap_prompt_to_phonemes([5, 5], 0.0, 3.0)
    assert span == (5, 5)  # a short prompt utterance is taken whole
