"""Tests for naturalspeech2_jax.audio: file I/O, conditioning, mel (numpy vs JAX) and pitch."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
import soundfile as sf

from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE
from naturalspeech2_jax.audio import (
    UNVOICED_LOG_F0,
    AudioError,
    MelConfig,
    expand_to_frames,
    extract_pitch,
    interpolate_log_f0,
    load_audio,
    log_mel_jax,
    log_mel_spectrogram,
    loudness_dbfs,
    normalize_loudness,
    num_frames,
    pad_or_trim_to_frames,
    phoneme_pitch,
    save_audio,
    silence_bounds,
    trim_silence,
)

SR = SAMPLE_RATE


def harmonic(f0: float | np.ndarray, seconds: float, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    """Speech-like periodic signal: 6 harmonics with 1/k amplitudes (Harvest rejects a pure sine
    as unvoiced, real voices are never pure sines)."""
    n = int(round(seconds * sr))
    f0 = np.broadcast_to(np.asarray(f0, dtype=np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 7))
    return (amp * x / np.max(np.abs(x))).astype(np.float32)


# ------------------------------------------------------------------------------------------
# I/O
# ------------------------------------------------------------------------------------------


def test_load_8k_stereo_becomes_16k_mono(tmp_path):
    sr_in, seconds = 8000, 1.25
    t = np.arange(int(sr_in * seconds)) / sr_in
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([left, left], axis=1)  # same content in both channels
    path = tmp_path / "stereo8k.wav"
    sf.write(path, stereo, sr_in, subtype="PCM_16")
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert len(wav) == int(seconds * SR)
    # Downmix averages, so the level of identical channels is kept; resampling keeps the tone.
    mid = wav[2000:-2000]
    assert np.max(np.abs(mid)) == pytest.approx(0.5, abs=0.01)
    spec = np.abs(np.fft.rfft(mid))
    assert np.fft.rfftfreq(len(mid), 1 / SR)[np.argmax(spec)] == pytest.approx(440, abs=2)


@pytest.mark.parametrize("ext", ["flac", "wav", "ogg"])
def test_load_formats_and_rates(tmp_path, ext):
    sr_in = 22050
    x = harmonic(200.0, 0.5, sr=sr_in)
    path = tmp_path / f"a.{ext}"
    sf.write(path, x, sr_in)
    wav = load_audio(path)
    assert len(wav) == round(len(x) * SR / sr_in)
    assert np.max(np.abs(wav)) == pytest.approx(0.3, abs=0.05)


def test_load_segment(tmp_path):
    x = np.linspace(-0.5, 0.5, SR * 2, dtype=np.float32)
    path = tmp_path / "ramp.wav"
    sf.write(path, x, SR, subtype="FLOAT")
    seg = load_audio(path, start=0.5, end=1.0)
    np.testing.assert_allclose(seg, x[SR // 2 : SR], atol=1e-7)
    assert len(load_audio(path, start=1.5)) == SR // 2
    assert len(load_audio(path, start=1.5, end=-1)) == SR // 2  # Kaldi "to the end"
    with pytest.raises(AudioError, match="past the end"):
        load_audio(path, start=3.0)
    with pytest.raises(AudioError, match="empty"):
        load_audio(path, start=1.0, end=1.0)


def test_bad_files_raise_clear_audio_errors(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 4)
    empty_file = tmp_path / "empty.flac"
    empty_file.write_bytes(b"")
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros(0, dtype=np.float32), SR)
    text = tmp_path / "notaudio.wav"
    text.write_text("hello")
    for path in (corrupt, empty_file, zero, text, tmp_path / "missing.wav"):
        with pytest.raises(AudioError) as e:
            load_audio(path)
        msg = str(e.value)
        assert str(path) in msg and msg.endswith(".") and msg.count(". ") == 0, msg
    assert issubclass(AudioError, ValueError)


def test_save_load_roundtrip(tmp_path):
    x = harmonic(150.0, 0.3)
    save_audio(tmp_path / "sub" / "x.flac", x)
    y = load_audio(tmp_path / "sub" / "x.flac")
    np.testing.assert_allclose(y, x, atol=1 / 32768 + 1e-6)


def test_loudness_normalisation_and_peak_limit():
    x = 0.01 * harmonic(180.0, 1.0)
    y = normalize_loudness(x, target_dbfs=-20.0)
    assert loudness_dbfs(y) == pytest.approx(-20.0, abs=0.05)
    # A very peaky signal is limited to -1 dBFS peak and ends up below target.
    spiky = np.zeros(SR, dtype=np.float32)
    spiky[::800] = 0.05
    z = normalize_loudness(spiky, target_dbfs=-10.0)
    assert np.max(np.abs(z)) == pytest.approx(10 ** (-1 / 20), rel=1e-4)
    # Gating: long pauses do not change the measured loudness of the speech.
    padded = np.concatenate([np.zeros(SR, np.float32), x, np.zeros(2 * SR, np.float32)])
    assert loudness_dbfs(padded) == pytest.approx(loudness_dbfs(x), abs=0.2)
    silent = np.zeros(100, dtype=np.float32)
    np.testing.assert_array_equal(normalize_loudness(silent), silent)


def test_trim_silence_keeps_margin():
    speech = harmonic(200.0, 0.5)
    x = np.concatenate([np.zeros(SR // 2), speech, np.zeros(SR)]).astype(np.float32)
    x += 1e-5 * np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)
    start, end = silence_bounds(x, margin_s=0.05)
    assert start == pytest.approx(SR // 2 - 800, abs=HOP_LENGTH)
    assert end == pytest.approx(SR // 2 + len(speech) + 800, abs=HOP_LENGTH)
    assert len(trim_silence(x)) == end - start
    quiet = np.zeros(1000, dtype=np.float32)
    assert len(trim_silence(quiet)) == 1000  # all silent: nothing trimmed


@pytest.mark.parametrize("n", [0, 1, 199, 200, 201, 16000, 16123])
def test_pad_or_trim_to_frames(n):
    x = np.ones(n, dtype=np.float32)
    y = pad_or_trim_to_frames(x)
    assert len(y) == HOP_LENGTH * math.ceil(n / HOP_LENGTH) == HOP_LENGTH * num_frames(n)
    assert y[:n].sum() == n and y[n:].sum() == 0  # rounding up with zeros, nothing lost
    assert len(pad_or_trim_to_frames(x, n_frames=3)) == 600
    assert pad_or_trim_to_frames(np.ones((2, n)), n_frames=2).shape == (2, 400)


# ------------------------------------------------------------------------------------------
# Mel
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [150, 16000, 16123])
def test_jax_mel_matches_numpy(n):
    rng = np.random.default_rng(n)
    x = (0.1 * rng.standard_normal(n)).astype(np.float32)
    x[: n // 2] += harmonic(220.0, n / 2 / SR)[: n // 2]
    ref = log_mel_spectrogram(x)
    assert ref.shape == (math.ceil(n / HOP_LENGTH), 80)
    got = np.asarray(jax.jit(log_mel_jax)(x))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_jax_mel_batch_config_and_grad():
    cfg = MelConfig(n_fft=512, win_length=400, n_mels=40, fmin=50.0, fmax=7600.0, power=2.0)
    x = np.random.default_rng(0).standard_normal((3, 4000)).astype(np.float32) * 0.1
    ref = log_mel_spectrogram(x, cfg)
    got = jax.jit(log_mel_jax, static_argnames="cfg")(x, cfg=cfg)
    assert got.shape == (3, 20, 40)
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-4)
    grad = jax.grad(lambda w: log_mel_jax(w).sum())(np.zeros(800, np.float32))
    assert np.all(np.isfinite(np.asarray(grad)))


def test_mel_sees_the_right_frequency():
    x = harmonic(1000.0, 0.5, amp=0.5)
    mel = log_mel_spectrogram(x, n_mels=80)
    # The strongest band sits where the mel filterbank puts 1 kHz.
    import librosa

    centres = librosa.mel_frequencies(n_mels=82, fmin=0, fmax=SR / 2)[1:-1]
    assert centres[np.argmax(mel.mean(0))] == pytest.approx(1000, rel=0.1)


# ------------------------------------------------------------------------------------------
# Pitch
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["harvest", "dio"])
def test_pitch_on_sine_with_gaps(method):
    from scipy.signal.windows import hann

    f_true = 220.0
    # Silent lead-in, a 0.3-0.5 s gap and a silent tail, with 20 ms fades (real speech has no
    # hard cuts; a hard cut makes a legitimately wrong estimate in the frame that straddles it).
    env = np.ones(SR)
    for a, b in [(0.0, 0.1), (0.3, 0.5), (0.9, 1.0)]:
        env[int(a * SR) : int(b * SR)] = 0.0
    fade = hann(321)
    env = np.convolve(env, fade / fade.sum(), mode="same")
    x = (harmonic(f_true, 1.0) * env).astype(np.float32)
    log_f0, voiced = extract_pitch(x, method=method)
    assert len(log_f0) == len(voiced) == len(x) // HOP_LENGTH
    assert log_f0.dtype == np.float32 and np.all(np.isfinite(log_f0))
    v = voiced.astype(bool)
    # The gap and the edges are unvoiced, the speech is voiced.
    assert not v[int(0.33 * SR) // HOP_LENGTH : int(0.47 * SR) // HOP_LENGTH].any()
    assert not v[:6].any() and not v[-6:].any()
    assert v[int(0.55 * SR) // HOP_LENGTH : int(0.85 * SR) // HOP_LENGTH].all()
    f0 = np.exp(log_f0)
    # Voiced frames away from on/offsets: within 1 %. On/offset frames (DIO is ~7 % low there)
    # and every interpolated or held frame: within 10 %.
    core = v & (np.convolve(v, np.ones(3), mode="same") == 3)
    assert core.sum() > 40
    np.testing.assert_allclose(f0[core], f_true, rtol=0.01)
    np.testing.assert_allclose(f0, f_true, rtol=0.10)
    # Fill rule: inside the gap, log-F0 is the straight line between the voiced neighbours;
    # before the first voiced frame it is held at the first voiced value.
    idx = np.flatnonzero(v)
    gap_l = idx[np.argmax(np.diff(idx))]
    gap_r = idx[np.argmax(np.diff(idx)) + 1]
    line = np.interp(np.arange(gap_l, gap_r + 1), [gap_l, gap_r], log_f0[[gap_l, gap_r]])
    np.testing.assert_allclose(log_f0[gap_l : gap_r + 1], line, rtol=1e-6)
    np.testing.assert_array_equal(log_f0[: idx[0]], log_f0[idx[0]])
    np.testing.assert_array_equal(log_f0[idx[-1] :], log_f0[idx[-1]])


def test_pitch_follows_a_glide():
    f = np.linspace(150.0, 300.0, SR)
    log_f0, voiced = extract_pitch(harmonic(f, 1.0))
    centres = (np.arange(len(log_f0)) + 0.5) * HOP_LENGTH
    inner = slice(4, -4)
    assert voiced[inner].all()
    np.testing.assert_allclose(
        np.exp(log_f0[inner]), np.interp(centres, np.arange(SR), f)[inner], rtol=0.03
    )


@pytest.mark.parametrize("n", [200, 1000, 8000, 8050, 16000])
def test_pitch_frame_count_and_silence(n):
    log_f0, voiced = extract_pitch(np.zeros(n, dtype=np.float32))
    assert len(log_f0) == num_frames(n)
    if n % HOP_LENGTH == 0:
        assert len(log_f0) == n // HOP_LENGTH
    assert voiced.sum() == 0
    np.testing.assert_array_equal(log_f0, np.float32(UNVOICED_LOG_F0))


def test_interpolation_rule():
    f0 = np.array([0, 0, 100, 0, 0, 0, 200, 0, 0], dtype=np.float64)
    log_f0, voiced = interpolate_log_f0(f0)
    np.testing.assert_array_equal(voiced, [0, 0, 1, 0, 0, 0, 1, 0, 0])
    a, b = math.log(100), math.log(200)
    expect = [a, a, a, a + (b - a) / 4, a + (b - a) / 2, a + 3 * (b - a) / 4, b, b, b]
    np.testing.assert_allclose(log_f0, expect, rtol=1e-6)
    nan_in, _ = interpolate_log_f0(np.array([np.nan, -1.0, np.inf, 0.0]))
    assert np.all(np.isfinite(nan_in))


def test_phoneme_pitch():
    log_f0 = np.log(np.array([100, 100, 120, 200, 200, 200, 90, 90], dtype=np.float64))
    voiced = np.array([1, 1, 0, 1, 1, 0, 0, 0])
    durations = np.array([3, 0, 3, 2])
    pitch, frac = phoneme_pitch(log_f0, voiced, durations)
    np.testing.assert_allclose(pitch, np.log([100, 200, 200, 90]), rtol=1e-6)
    np.testing.assert_allclose(frac, [2 / 3, 0, 2 / 3, 0])
    assert np.all(np.isfinite(pitch))
    np.testing.assert_array_equal(
        expand_to_frames(np.arange(4), durations), [0, 0, 0, 2, 2, 2, 3, 3]
    )
    with pytest.raises(ValueError, match="sum"):
        phoneme_pitch(log_f0, voiced, np.array([3, 3]))


@pytest.mark.shared_data
def test_shared_data_load_and_pitch(shared_data):
    path = sorted((shared_data / "cathy").glob("*.flac"))[0]
    wav = pad_or_trim_to_frames(normalize_loudness(load_audio(path)))
    log_f0, voiced = extract_pitch(wav, method="dio")
    assert len(log_f0) == len(wav) // HOP_LENGTH and np.all(np.isfinite(log_f0))
    assert 0.2 < voiced.mean() < 0.95
    # A female voice: median F0 of voiced frames well inside 140-300 Hz.
    assert 140 < np.exp(np.median(log_f0[voiced.astype(bool)])) < 300
