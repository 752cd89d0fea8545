"""DNSMOS (speechmos, onnxruntime)."""

from __future__ import annotations

import numpy as np

from tests.helpers import needs, speechlike


def test_dnsmos_prefers_clean_speech():
    needs("speechmos", "onnxruntime")
    from naturalspeech2_jax.evaluation.dnsmos import dnsmos

    clean = speechlike(seconds=4.0)
    noisy = clean + 0.2 * np.random.default_rng(1).standard_normal(clean.size).astype(np.float32)
    clean_scores, noisy_scores = dnsmos(clean), dnsmos(np.clip(noisy, -1, 1))
    assert set(clean_scores) == {"ovrl", "sig", "bak", "p808"}
    assert all(1.0 <= v <= 5.0 for v in clean_scores.values())
    assert clean_scores["bak"] > noisy_scores["bak"] + 0.5
