"""Prosody: phoneme-level pitch and duration statistics, against the prompt and the ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from naturalspeech2_jax.evaluation import prosody
from tests.helpers import SR, needs


def test_phoneme_level_statistics_match_hand_computation():
    f0 = np.array([100, 100, 0, 200, 200, 200, 0, 0, 150, 150], dtype=float)
    durations = np.array([3, 3, 4])
    pitch = prosody.phoneme_pitch(f0, durations)
    np.testing.assert_allclose(pitch, [100.0, 200.0, 150.0])
    # Same result from log-F0 with -inf on unvoiced frames.
    with np.errstate(divide="ignore"):
        log_f0 = np.log(f0)
    np.testing.assert_allclose(prosody.phoneme_pitch(log_f0, durations, log_f0=True), pitch)

    stats = prosody.prosody_stats(pitch, durations)
    # pitch {100, 200, 150}: mean 150, population std sqrt(5000/3), symmetric, m4/m2^2 = 1.5.
    assert stats["pitch_mean"] == pytest.approx(150.0)
    assert stats["pitch_std"] == pytest.approx(math.sqrt(5000 / 3))
    assert stats["pitch_skew"] == pytest.approx(0.0, abs=1e-12)
    assert stats["pitch_kurt"] == pytest.approx(-1.5)
    # durations {3, 3, 4}: mean 10/3, std sqrt(2)/3, skew 1/sqrt(2), excess kurtosis -1.5.
    assert stats["duration_mean"] == pytest.approx(10 / 3)
    assert stats["duration_std"] == pytest.approx(math.sqrt(2) / 3)
    assert stats["duration_skew"] == pytest.approx(1 / math.sqrt(2))
    assert stats["duration_kurt"] == pytest.approx(-1.5)


def test_unvoiced_phoneme_and_length_checks():
    pitch = prosody.phoneme_pitch(np.array([0, 0, 120, 130]), np.array([2, 2]))
    assert math.isnan(pitch[0]) and pitch[1] == pytest.approx(125.0)
    with pytest.raises(ValueError, match="sum"):
        prosody.phoneme_pitch(np.ones(20) * 100, np.array([3, 3]))


def test_prosody_vs_prompt_and_ground_truth():
    a = prosody.prosody_stats(np.array([100.0, 200.0, 150.0]), np.array([3, 3, 4]))
    b = prosody.prosody_stats(np.array([110.0, 210.0, 160.0]), np.array([3, 3, 4]))
    diff = prosody.prosody_vs_prompt(a, b)
    assert diff["pitch_mean_diff"] == pytest.approx(10.0)
    assert diff["pitch_std_diff"] == pytest.approx(0.0, abs=1e-9)
    assert diff["duration_mean_diff"] == pytest.approx(0.0)

    gt_pitch, gt_dur = np.array([100.0, 200.0, np.nan, 150.0]), np.array([3, 5, 2, 4])
    scores = prosody.prosody_vs_ground_truth(gt_pitch + 10.0, gt_dur + 1, gt_pitch, gt_dur)
    assert scores["pitch_pearson"] == pytest.approx(1.0)
    assert scores["pitch_rmse"] == pytest.approx(10.0)
    assert scores["duration_pearson"] == pytest.approx(1.0)
    assert scores["duration_rmse"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        prosody.prosody_vs_ground_truth(gt_pitch[:3], gt_dur[:3], gt_pitch, gt_dur)


def test_audio_only_variant_on_a_synthetic_tone():
    needs("pyworld")
    t = np.arange(SR) / SR
    wav = np.concatenate([0.5 * np.sin(2 * np.pi * 200.0 * t), np.zeros(SR // 2)])
    f0 = prosody.extract_f0(wav)
    assert f0.size == wav.size // prosody.HOP
    assert np.median(f0[f0 > 0]) == pytest.approx(200.0, rel=0.02)
    np.testing.assert_array_equal(
        prosody.voiced_segments(np.array([0, 1, 1, 0, 1, 0, 1, 1, 1])), [2, 1, 3]
    )
    stats = prosody.audio_prosody_stats(wav)
    assert stats["pitch_mean"] == pytest.approx(200.0, rel=0.02)
    assert stats["pitch_std"] < 5.0
