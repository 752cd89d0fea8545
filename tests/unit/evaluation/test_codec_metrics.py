"""Codec metrics (PESQ, STOI, mel distance, SI-SDR), Opus round trips and the codec table."""

from __future__ import annotations

import numpy as np
import pytest

from naturalspeech2_jax.evaluation import codec_metrics
from tests.helpers import needs, speechlike


def test_codec_metrics_identity_and_noise():
    needs("pesq", "pystoi")
    ref = speechlike()
    identity = codec_metrics.codec_metrics(ref, ref.copy())
    assert identity["pesq"] > 4.4
    assert identity["stoi"] > 0.99
    assert identity["mel_distance"] == pytest.approx(0.0, abs=1e-6)
    assert identity["si_sdr"] > 100.0
    # SI-SDR is scale-invariant; white noise at 10 dB SNR gives about 10 dB.
    assert codec_metrics.si_sdr(ref, 0.5 * ref) > 100.0
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(ref.size)
    noise *= np.sqrt(np.mean(ref**2) / np.mean(noise**2) / 10.0)
    noisy = codec_metrics.codec_metrics(ref, ref + noise)
    assert noisy["si_sdr"] == pytest.approx(10.0, abs=0.5)
    assert noisy["pesq"] < identity["pesq"] - 1.0
    assert noisy["stoi"] < identity["stoi"]
    assert noisy["mel_distance"] > 0.1


@pytest.mark.parametrize("backend", ["soundfile", "ffmpeg"])
def test_opus_roundtrip_reports_payload_bitrate(backend):
    from naturalspeech2_jax.evaluation import opus

    if not opus.opus_available(backend):
        pytest.skip(f"the {backend} Opus backend is unavailable (ffmpeg: apt-get install ffmpeg)")
    ref = speechlike()
    low, low_kbps = opus.opus_roundtrip(ref, 6.0, backend=backend)
    high, high_kbps = opus.opus_roundtrip(ref, 24.0, backend=backend)
    assert low.shape == ref.shape and high.shape == ref.shape
    assert 2.0 < low_kbps < 8.0
    assert 12.0 < high_kbps < 30.0
    assert codec_metrics.mel_distance(ref, high) < codec_metrics.mel_distance(ref, low)


def test_codec_table_with_pluggable_codec():
    needs("pesq", "pystoi")
    from naturalspeech2_jax.evaluation import opus

    wavs = [speechlike(2.0, f0=120.0, seed=1), speechlike(2.0, f0=210.0, seed=2)]
    opus_targets = [6.4] if opus.opus_available("soundfile") else []
    rows = codec_metrics.codec_table(
        wavs, lambda wav, n_quantizers: wav, n_quantizers=[8], opus_kbps=opus_targets
    )
    assert rows[0].system == "codec" and rows[0].kbps == pytest.approx(6.4)
    assert rows[0].pesq > 4.4 and rows[0].n_files == 2
    if opus_targets:
        assert rows[1].system == "opus" and rows[1].pesq < rows[0].pesq
    assert "| codec | 8 quantizers | 6.40 |" in codec_metrics.codec_table_markdown(rows)


def test_codebook_usage_counts_codes_entropy_and_prefix_distances():
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 1024, size=(1 << 16, 1))  # all codes, about equally often
    constant = np.full((1 << 16, 1), 7)  # one code: carries nothing
    half = rng.integers(0, 2, size=(1 << 16, 1))  # two codes: 1 bit
    codes = np.concatenate([uniform, constant, half], axis=1)
    rows = codec_metrics.codebook_usage([codes[:1000], codes[1000:]], 1024, [0.9, 0.9, 0.5])
    assert [r.quantizer for r in rows] == [1, 2, 3]
    assert rows[0].codes_used == 1024 and rows[0].entropy_bits == pytest.approx(10.0, abs=0.02)
    assert rows[1].codes_used == 1 and rows[1].entropy_bits == 0.0 and rows[1].perplexity == 1.0
    assert rows[2].codes_used == 2 and rows[2].entropy_bits == pytest.approx(1.0, abs=0.01)
    assert rows[2].mel_distance == 0.5
    table = codec_metrics.codebook_usage_markdown(rows, 1024)
    assert "| 2 | 1 | 1 | 0.00 | 0.900 |" in table
    with pytest.raises(ValueError, match="outside"):
        codec_metrics.codebook_usage([codes], 4)
