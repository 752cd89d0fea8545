"""Prosody similarity as in NaturalSpeech 2 (Shen et al., 2023, section 4.2).

Phoneme-level pitch (mean F0 in Hz over each phoneme's voiced frames) and duration (frames) are
summarised per utterance by mean, standard deviation, skewness and kurtosis:

- similarity to the PROMPT: absolute difference of each statistic between the two utterances
  (lower is better; the paper reports the pitch-mean difference, e.g. 10.11 for NS2 on LibriSpeech);
- similarity to the GROUND TRUTH (same phoneme sequence): Pearson correlation and RMSE of the
  phoneme-level pitch and duration sequences.

When phoneme durations are unknown (ground-truth-only evaluation, no aligner) the audio-only variant
uses frame-level pitch statistics and the durations of voiced segments (runs of voiced frames, a
syllable-like unit) instead; it is reported under the same key names with ``level="frame"``.

Units follow the project: 16 kHz audio, hop 200 samples (12.5 ms frames); durations are integer
frame counts whose sum equals the number of pitch frames. All functions are pure numpy/scipy.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import stats

from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE

HOP = HOP_LENGTH  # the codec hop, under the name callers of this module use
STAT_NAMES = ("mean", "std", "skew", "kurt")


def distribution_stats(values: np.ndarray) -> dict[str, float]:
    """Mean, population std, skewness and excess kurtosis (Fisher) of a 1-D sample; NaNs ignored."""
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return dict.fromkeys(STAT_NAMES, float("nan"))
    std = float(np.std(x))
    if x.size < 2 or std == 0.0:
        # Skewness/kurtosis of a constant sample are undefined; 0 keeps differences finite.
        return {"mean": float(np.mean(x)), "std": std, "skew": 0.0, "kurt": 0.0}
    return {
        "mean": float(np.mean(x)),
        "std": std,
        "skew": float(stats.skew(x, bias=True)),
        "kurt": float(stats.kurtosis(x, fisher=True, bias=True)),
    }


def _as_f0_hz(f0: np.ndarray, voiced: np.ndarray | None, log_f0: bool) -> np.ndarray:
    """F0 in Hz with NaN on unvoiced frames."""
    f0 = np.asarray(f0, dtype=np.float64).ravel()
    if log_f0:
        # log(F0) of unvoiced frames is -inf (or a fill value masked by ``voiced``).
        with np.errstate(over="ignore", invalid="ignore"):
            f0 = np.exp(f0)
    mask = np.isfinite(f0) & (f0 > 0)
    if voiced is not None:
        mask &= np.asarray(voiced, dtype=bool).ravel()
    return np.where(mask, f0, np.nan)


def phoneme_pitch(
    f0: np.ndarray,
    durations: np.ndarray,
    voiced: np.ndarray | None = None,
    *,
    log_f0: bool = False,
    max_frame_mismatch: int = 2,
) -> np.ndarray:
    """Mean F0 (Hz) over the voiced frames of each phoneme; NaN for phonemes with none voiced.

    Args:
      f0: frame-level F0 in Hz (0 or negative = unvoiced), or log-F0 when ``log_f0``.
      durations: integer frames per phoneme; ``sum(durations)`` must equal ``len(f0)`` up to
        ``max_frame_mismatch`` frames (pitch extractors may add an edge frame); beyond, it raises.
      voiced: optional boolean mask of voiced frames (needed when ``f0`` is interpolated).
    """
    hz = _as_f0_hz(f0, voiced, log_f0)
    durations = np.asarray(durations).astype(np.int64).ravel()
    if np.any(durations < 0):
        raise ValueError("durations must be non-negative")
    total = int(durations.sum())
    if abs(total - hz.size) > max_frame_mismatch:
        raise ValueError(f"sum(durations)={total} but the pitch contour has {hz.size} frames")
    if hz.size < total:
        hz = np.concatenate([hz, np.full(total - hz.size, np.nan)])
    hz = hz[:total]
    bounds = np.concatenate([[0], np.cumsum(durations)])
    out = np.full(durations.size, np.nan)
    for i, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        segment = hz[start:end]
        segment = segment[np.isfinite(segment)]
        if segment.size:
            out[i] = segment.mean()
    return out


def prosody_stats(pitch: np.ndarray, durations: np.ndarray) -> dict[str, float]:
    """Statistics of one utterance: ``pitch_{mean,std,skew,kurt}`` and ``duration_{...}``.

    ``pitch`` is phoneme-level (or frame-level) F0 in Hz with NaN where unvoiced; ``durations`` are
    phoneme (or voiced-segment) lengths in frames.
    """
    out = {f"pitch_{k}": v for k, v in distribution_stats(pitch).items()}
    out.update({f"duration_{k}": v for k, v in distribution_stats(durations).items()})
    return out


def prosody_vs_prompt(
    generated: Mapping[str, float], prompt: Mapping[str, float]
) -> dict[str, float]:
    """Absolute difference of each statistic, as ``{pitch,duration}_{mean,...}_diff``."""
    return {f"{k}_diff": float(abs(generated[k] - prompt[k])) for k in generated if k in prompt}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def prosody_vs_ground_truth(
    pitch: np.ndarray,
    durations: np.ndarray,
    gt_pitch: np.ndarray,
    gt_durations: np.ndarray,
) -> dict[str, float]:
    """Pearson correlation and RMSE of phoneme-level pitch and duration against the ground truth.

    Both utterances must have the same phoneme sequence (same length). Pitch is compared on the
    phonemes voiced in both.
    """
    pitch, gt_pitch = np.asarray(pitch, np.float64), np.asarray(gt_pitch, np.float64)
    durations = np.asarray(durations, np.float64)
    gt_durations = np.asarray(gt_durations, np.float64)
    if pitch.shape != gt_pitch.shape or durations.shape != gt_durations.shape:
        raise ValueError("generated and ground truth must have the same number of phonemes")
    both = np.isfinite(pitch) & np.isfinite(gt_pitch)
    p, q = pitch[both], gt_pitch[both]
    return {
        "pitch_pearson": _pearson(p, q),
        "pitch_rmse": float(np.sqrt(np.mean((p - q) ** 2))) if p.size else float("nan"),
        "duration_pearson": _pearson(durations, gt_durations),
        "duration_rmse": float(np.sqrt(np.mean((durations - gt_durations) ** 2))),
    }


def extract_f0(
    wav: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    hop: int = HOP,
    f0_floor: float = 60.0,
    f0_ceil: float = 800.0,
) -> np.ndarray:
    """Frame-level F0 in Hz (0 = unvoiced) with pyworld DIO + StoneMask, ``len(wav) // hop`` frames.

    Frame ``i`` is centred at sample ``i * hop``, as pyworld places them; the trailing extra frame
    pyworld returns is dropped so the count matches the codec's frame count.
    """
    import pyworld

    x = np.asarray(wav, dtype=np.float64).ravel()
    period_ms = 1000.0 * hop / sample_rate
    f0, t = pyworld.dio(x, sample_rate, f0_floor=f0_floor, f0_ceil=f0_ceil, frame_period=period_ms)
    f0 = pyworld.stonemask(x, f0, t, sample_rate)
    return f0[: len(x) // hop]


def voiced_segments(f0: np.ndarray) -> np.ndarray:
    """Lengths (frames) of the runs of voiced frames (F0 > 0) in a contour."""
    voiced = np.isfinite(f0) & (np.asarray(f0) > 0)
    padded = np.concatenate([[False], voiced, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return edges[1::2] - edges[0::2]


def audio_prosody_stats(
    wav: np.ndarray, sample_rate: int = SAMPLE_RATE, hop: int = HOP
) -> dict[str, float]:
    """Audio-only variant: frame-level pitch statistics and voiced-segment duration statistics."""
    f0 = extract_f0(wav, sample_rate, hop)
    hz = np.where(f0 > 0, f0, np.nan)
    return prosody_stats(hz, voiced_segments(f0))


def phoneme_prosody_stats(
    wav: np.ndarray,
    durations: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    hop: int = HOP,
) -> tuple[dict[str, float], np.ndarray]:
    """Phoneme-level statistics of audio with known phoneme durations; also returns the pitch."""
    f0 = extract_f0(wav, sample_rate, hop)
    pitch = phoneme_pitch(f0, durations)
    return prosody_stats(pitch, durations), pitch
