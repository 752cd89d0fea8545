"""Audio file I/O and waveform conditioning for every stage of the pipeline.

Everything downstream (codec, pitch, mel, durations) assumes 16 kHz mono float32 audio whose
length is a whole number of codec frames (200 samples). This module turns whatever soundfile can
read into exactly that:

* :func:`load_audio` reads wav/flac/ogg/mp3/... at any rate and channel count, optionally only a
  ``[start, end)`` segment in seconds (Kaldi ``segments``, long files), downmixes to mono by
  averaging channels and resamples with soxr's "VHQ" quality (scipy's polyphase resampler when
  soxr is missing). Unreadable, corrupt or empty files, and NaN or infinite samples, raise
  :class:`AudioError` with one sentence naming the file; float samples far beyond full scale
  (peak > 1000) are scaled to a peak of 1.
* :func:`normalize_loudness` sets a gated RMS loudness (see its docstring for the exact rule) and
  limits the peak.
* :func:`trim_silence` removes leading/trailing low-energy audio, keeping a margin.
* :func:`pad_or_trim_to_frames` makes the length a multiple of the hop.

Frame-count convention (shared with :mod:`.features` and :mod:`.pitch`): a waveform of ``n``
samples has ``num_frames(n) = ceil(n / hop)`` codec frames; the last, partial frame is completed
with zeros. Frame ``i`` covers samples ``[i * hop, (i + 1) * hop)`` and is centred at
``(i + 0.5) * hop``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE

__all__ = [
    "AudioError",
    "DEFAULT_TARGET_DBFS",
    "DEFAULT_PEAK_DBFS",
    "load_audio",
    "save_audio",
    "resample",
    "to_mono",
    "loudness_dbfs",
    "normalize_loudness",
    "silence_bounds",
    "trim_silence",
    "num_frames",
    "pad_or_trim_to_frames",
]

# Loudness target: gated RMS of -20 dBFS is about what broadcast-normalised speech (-23 LUFS with
# a K-weighting bonus for speech) measures in plain RMS, and leaves ~17 dB of crest-factor room
# below the -1 dBFS peak ceiling for typical read speech, so the limiter rarely engages.
DEFAULT_TARGET_DBFS = -20.0
DEFAULT_PEAK_DBFS = -1.0
# Never boost by more than this: a near-silent (or all-noise) file would otherwise be blown up.
_MAX_GAIN_DB = 40.0
# Float samples beyond this (full scale is 1) are not audio levels but another unit (or garbage);
# load_audio scales such a file to a peak of 1 rather than let resampling overflow.
_MAX_PEAK = 1e3
_EPS = 1e-10


class AudioError(ValueError):
    """A file cannot be used as audio (missing, unreadable, corrupt, empty, bad segment)."""


def to_mono(wav: np.ndarray) -> np.ndarray:
    """Average channels of a ``[samples, channels]`` array (soundfile's layout) into ``[samples]``.

    Averaging (not summing) keeps the level of a mono signal duplicated in both channels.
    """
    wav = np.asarray(wav)
    if wav.ndim == 1:
        return wav
    if wav.ndim != 2:
        raise ValueError(
            f"expected audio of shape [samples] or [samples, channels], got {wav.shape}"
        )
    return wav.mean(axis=1)


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """High-quality band-limited resampling of a mono float signal.

    soxr "VHQ" is used when installed (it comes with librosa); otherwise scipy's polyphase filter
    with a Kaiser window. Output length is ``round(len(wav) * target_sr / orig_sr)`` in both cases.
    """
    wav = np.asarray(wav, dtype=np.float32)
    if orig_sr == target_sr or wav.size == 0:
        return wav
    try:
        import soxr

        out = soxr.resample(wav, orig_sr, target_sr, quality="VHQ")
    except ImportError:  # pragma: no cover - soxr ships with librosa, but keep a fallback
        from scipy.signal import resample_poly

        g = math.gcd(int(orig_sr), int(target_sr))
        out = resample_poly(wav, target_sr // g, orig_sr // g, window=("kaiser", 8.6))
    expected = int(round(len(wav) * target_sr / orig_sr))
    # Both back-ends agree with `expected` up to one sample; make it exact so that callers can
    # rely on the length rule.
    if len(out) > expected:
        out = out[:expected]
    elif len(out) < expected:
        out = np.pad(out, (0, expected - len(out)))
    return out.astype(np.float32, copy=False)


def load_audio(
    path: str | os.PathLike,
    target_sr: int = SAMPLE_RATE,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """Read an audio file as float32 mono at ``target_sr``.

    Args:
      path: any format libsndfile reads (wav, flac, ogg/vorbis/opus, mp3, aiff, ...).
      target_sr: output sample rate; resampled with :func:`resample` when the file differs.
      start: optional segment start in seconds (in the file's time base).
      end: optional segment end in seconds; ``None`` or a negative value means end of file (a
        negative end is Kaldi's ``segments`` convention for "to the end").

    Raises:
      AudioError: the file is missing, unreadable, corrupt, has no samples, or the segment is
        empty or starts past the end of the file.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"Audio file {path} does not exist; check the path.")
    if not path.is_file():
        raise AudioError(
            f"Audio file {path} is not a regular file (a folder?); pass an audio file."
        )
    if path.stat().st_size == 0:
        raise AudioError(f"Audio file {path} is empty (0 bytes); re-export or remove it.")
    try:
        with sf.SoundFile(str(path)) as f:
            sr = f.samplerate
            total = f.frames
            first = 0 if start is None else int(round(start * sr))
            last = total if end is None or end < 0 else min(total, int(round(end * sr)))
            if first < 0:
                raise AudioError(f"Segment of {path} starts at a negative time ({start} s).")
            if total > 0 and first >= total:
                raise AudioError(
                    f"Segment of {path} starts at {start} s, past the end of the file "
                    f"({total / sr:.3f} s)."
                )
            if first > 0:
                f.seek(first)
            wav = f.read(frames=max(0, last - first), dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as e:
        # Keep libsndfile's reason (e.g. "No 'data' chunk marker") but not its copy of the path,
        # so the message stays one sentence.
        reason = getattr(e, "error_string", None) or str(e)
        reason = reason.replace(str(path), "").strip().rstrip(".").replace(". ", "; ")
        raise AudioError(
            f"Audio file {path} cannot be decoded ({reason}); it is corrupt or not audio."
        ) from e
    if wav.shape[0] == 0:
        what = "has no audio samples" if start is None and end is None else "segment is empty"
        raise AudioError(f"Audio file {path} {what} (zero-length audio).")
    wav = to_mono(wav)
    if not np.all(np.isfinite(wav)):
        # Float wav files can hold NaN/inf; they would poison every feature computed later.
        raise AudioError(
            f"Audio file {path} contains NaN or infinite samples; re-export it as 16-bit PCM."
        )
    peak = float(np.max(np.abs(wav)))
    if peak > _MAX_PEAK:  # a float file in another unit: keep resampling and features finite
        wav = wav / np.float32(peak)
    return resample(wav, sr, target_sr)


def save_audio(path: str | os.PathLike, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write a mono (``[samples]``) or ``[samples, channels]`` float signal.

    The format follows the file extension (``.wav`` is written as 16-bit PCM, ``.flac`` as 16-bit
    FLAC); samples are clipped to [-1, 1] first because PCM cannot hold larger values. Parent
    folders are created.
    """
    path = Path(path)
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim not in (1, 2):
        raise ValueError(f"save_audio expects [samples] or [samples, channels], got {wav.shape}")
    if not np.all(np.isfinite(wav)):
        raise ValueError(f"refusing to write NaN/inf samples to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    subtype = "PCM_16" if path.suffix.lower() in (".wav", ".flac") else None
    sf.write(str(path), np.clip(wav, -1.0, 1.0), int(sr), subtype=subtype)


def _block_rms_db(wav: np.ndarray, block: int) -> np.ndarray:
    """RMS level in dBFS of consecutive non-overlapping blocks (last partial block included)."""
    n = len(wav)
    n_blocks = max(1, math.ceil(n / block))
    padded = np.zeros(n_blocks * block, dtype=np.float64)
    padded[:n] = wav
    ms = np.mean(padded.reshape(n_blocks, block) ** 2, axis=1)
    if n % block:  # the partial last block's mean must not count the zero padding
        ms[-1] = np.mean(np.asarray(wav[(n_blocks - 1) * block :], dtype=np.float64) ** 2)
    return 10.0 * np.log10(ms + _EPS)


def loudness_dbfs(wav: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Gated RMS loudness in dBFS (a LUFS-like measure without K-weighting).

    The signal is cut into 50 ms blocks; blocks below -70 dBFS (digital silence) are dropped, then
    blocks more than 20 dB below the mean of the remaining ones (pauses) are dropped too, and the
    RMS of what is left is returned. Gating makes the figure describe the speech itself, so an
    utterance with long pauses is not boosted more than one without. Returns -inf-free values:
    an all-silent signal gives -100.
    """
    wav = np.asarray(wav, dtype=np.float64)
    if wav.size == 0:
        return -100.0
    block = max(1, int(round(0.05 * sr)))
    db = _block_rms_db(wav, block)
    keep = db > -70.0
    if not keep.any():
        return -100.0
    power = 10.0 ** (db / 10.0)
    rel = 10.0 * np.log10(np.mean(power[keep]) + _EPS) - 20.0
    keep &= db > rel
    return float(10.0 * np.log10(np.mean(power[keep]) + _EPS))


def normalize_loudness(
    wav: np.ndarray,
    sr: int = SAMPLE_RATE,
    target_dbfs: float = DEFAULT_TARGET_DBFS,
    peak_dbfs: float = DEFAULT_PEAK_DBFS,
) -> np.ndarray:
    """Scale ``wav`` to a gated RMS loudness of ``target_dbfs`` with the peak kept at or below
    ``peak_dbfs``.

    Rule: ``gain = target_dbfs - loudness_dbfs(wav)`` (see :func:`loudness_dbfs`), capped at
    +40 dB; if the scaled peak would exceed ``peak_dbfs`` the gain is lowered until the peak sits
    exactly at ``peak_dbfs`` (a single static gain: no compression, so the waveform shape and
    the relative dynamics are untouched, at the price of some loud files ending up below target).
    All-silent input is returned unchanged.
    """
    wav = np.asarray(wav, dtype=np.float32)
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    if peak < 1e-6:
        return wav.copy()
    gain_db = min(target_dbfs - loudness_dbfs(wav, sr), _MAX_GAIN_DB)
    gain = 10.0 ** (gain_db / 20.0)
    max_gain = 10.0 ** (peak_dbfs / 20.0) / peak
    gain = min(gain, max_gain)
    return (wav * np.float32(gain)).astype(np.float32)


def silence_bounds(
    wav: np.ndarray,
    sr: int = SAMPLE_RATE,
    top_db: float = 40.0,
    frame: int = HOP_LENGTH,
    margin_s: float = 0.05,
) -> tuple[int, int]:
    """Sample range ``[start, end)`` that holds the non-silent part of ``wav`` plus a margin.

    A ``frame``-sample block is speech when its RMS is within ``top_db`` of the loudest block (a
    relative threshold, so it works at any recording level). ``margin_s`` seconds are kept on
    each side so that soft onsets (fricatives, breaths) are not clipped. All-silent input gives
    ``(0, len(wav))``: nothing is trimmed rather than everything.
    """
    wav = np.asarray(wav, dtype=np.float32)
    n = len(wav)
    if n == 0:
        return 0, 0
    db = _block_rms_db(wav, frame)
    loud = np.flatnonzero(db > db.max() - top_db)
    if db.max() <= -100.0 + 1e-6 or loud.size == 0:
        return 0, n
    margin = int(round(margin_s * sr))
    start = max(0, int(loud[0]) * frame - margin)
    end = min(n, (int(loud[-1]) + 1) * frame + margin)
    return start, end


def trim_silence(
    wav: np.ndarray,
    sr: int = SAMPLE_RATE,
    top_db: float = 40.0,
    frame: int = HOP_LENGTH,
    margin_s: float = 0.05,
) -> np.ndarray:
    """Remove leading and trailing silence (see :func:`silence_bounds` for the rule).

    Note: trimming shifts time; TextGrid alignments made on the untrimmed file need the same
    offset (``silence_bounds(...)[0] / sr``) subtracted.
    """
    start, end = silence_bounds(wav, sr, top_db=top_db, frame=frame, margin_s=margin_s)
    return np.asarray(wav)[start:end]


def num_frames(n_samples: int, hop: int = HOP_LENGTH) -> int:
    """Codec frames for ``n_samples`` samples: ``ceil(n_samples / hop)`` (partial frame counts)."""
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    return -(-int(n_samples) // int(hop))


def pad_or_trim_to_frames(
    wav: np.ndarray, hop: int = HOP_LENGTH, n_frames: int | None = None
) -> np.ndarray:
    """Return ``wav`` with exactly ``hop * n_frames`` samples (last axis).

    Rounding rule: when ``n_frames`` is not given it is ``ceil(len / hop)``, i.e. a final partial
    frame is completed with zeros rather than dropped, so no audio is ever lost (at most
    ``hop - 1`` zeros, < 12.5 ms, are appended). With an explicit ``n_frames`` the audio is
    zero-padded or cut at the end to match (used to line audio up with a latent sequence).
    """
    wav = np.asarray(wav)
    n = wav.shape[-1]
    if n_frames is None:
        n_frames = num_frames(n, hop)
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    target = int(n_frames) * int(hop)
    if n >= target:
        return wav[..., :target]
    pad = [(0, 0)] * (wav.ndim - 1) + [(0, target - n)]
    return np.pad(wav, pad)


def to_pcm16(wav: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> int16 PCM (rounded, clipped): how prepared datasets store it."""
    return np.clip(np.round(np.asarray(wav) * 32767.0), -32768, 32767).astype(np.int16)
