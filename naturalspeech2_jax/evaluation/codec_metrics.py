"""Codec quality: PESQ (wideband), STOI, log-mel L1 distance and SI-SDR, and a bitrate table.

A codec under test is any callable ``codec(wav, n_quantizers) -> wav`` (16 kHz float mono in and
out). :func:`codec_table` evaluates it at several quantizer counts beside Opus at matching bitrates
(:mod:`naturalspeech2_jax.evaluation.opus`), as EVALUATION.md asks codec results to be read.
:func:`codebook_usage` says how much each residual quantizer carries: the codes it uses, their
entropy, and how far adding it moves the reconstruction's log-mel distance.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE
from naturalspeech2_jax.audio.features import METRIC_MEL, log_mel_spectrogram
from naturalspeech2_jax.audio.io import resample
from naturalspeech2_jax.evaluation.opus import opus_roundtrip


class Codec(Protocol):
    """Resynthesise a waveform through a codec keeping the first ``n_quantizers`` codebooks."""

    def __call__(self, wav: np.ndarray, n_quantizers: int) -> np.ndarray: ...


def _pair(reference: np.ndarray, degraded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64).ravel()
    deg = np.asarray(degraded, dtype=np.float64).ravel()
    # Codecs may pad to a whole number of frames; compare the common part.
    n = min(ref.size, deg.size)
    if n == 0:
        raise ValueError("empty audio")
    return ref[:n], deg[:n]


def pesq_wb(reference: np.ndarray, degraded: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Wideband PESQ (ITU-T P.862.2): about 1.0 (bad) to 4.64 (transparent); NaN if no speech."""
    from pesq import PesqError, pesq

    ref, deg = _pair(reference, degraded)
    if sample_rate != SAMPLE_RATE:
        ref, deg = resample(ref, sample_rate, SAMPLE_RATE), resample(deg, sample_rate, SAMPLE_RATE)
    try:
        return float(pesq(SAMPLE_RATE, ref, deg, "wb"))
    except PesqError:
        return float("nan")


def stoi(reference: np.ndarray, degraded: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Short-time objective intelligibility (0..1)."""
    from pystoi import stoi as _stoi

    ref, deg = _pair(reference, degraded)
    return float(_stoi(ref, deg, sample_rate, extended=False))


def log_mel(
    wav: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = METRIC_MEL.n_fft,
    hop: int = METRIC_MEL.hop_length,
    n_mels: int = METRIC_MEL.n_mels,
) -> np.ndarray:
    """Natural-log magnitude mel spectrogram [n_mels, frames], floored at 1e-5: ``METRIC_MEL``
    (librosa's framing, 1 + len // hop frames) with these overrides."""
    mel = log_mel_spectrogram(
        np.asarray(wav, dtype=np.float32),
        METRIC_MEL,
        sample_rate=sample_rate,
        n_fft=n_fft,
        win_length=n_fft,
        hop_length=hop,
        n_mels=n_mels,
    )
    return mel.T


def mel_distance(
    reference: np.ndarray, degraded: np.ndarray, sample_rate: int = SAMPLE_RATE
) -> float:
    """Mean absolute difference of log-mel spectrograms (0 = identical)."""
    ref, deg = _pair(reference, degraded)
    return float(np.mean(np.abs(log_mel(ref, sample_rate) - log_mel(deg, sample_rate))))


def si_sdr(reference: np.ndarray, degraded: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019)."""
    ref, deg = _pair(reference, degraded)
    ref = ref - ref.mean()
    deg = deg - deg.mean()
    energy = float(ref @ ref)
    if energy == 0.0:
        return float("nan")
    target = (deg @ ref) / energy * ref
    noise = deg - target
    noise_energy = float(noise @ noise)
    if noise_energy == 0.0:
        return float("inf")
    return float(10.0 * math.log10(float(target @ target) / noise_energy))


def codec_metrics(
    reference: np.ndarray, degraded: np.ndarray, sample_rate: int = SAMPLE_RATE
) -> dict[str, float]:
    """All four metrics: ``pesq``, ``stoi``, ``mel_distance``, ``si_sdr``."""
    return {
        "pesq": pesq_wb(reference, degraded, sample_rate),
        "stoi": stoi(reference, degraded, sample_rate),
        "mel_distance": mel_distance(reference, degraded, sample_rate),
        "si_sdr": si_sdr(reference, degraded),
    }


@dataclasses.dataclass
class CodecRow:
    """One line of the codec table: a system at one bitrate, metrics averaged over the files."""

    system: str
    setting: str
    kbps: float
    pesq: float
    stoi: float
    mel_distance: float
    si_sdr: float
    n_files: int

    def as_dict(self) -> dict[str, float | str | int]:
        return dataclasses.asdict(self)


def _mean(values: Iterable[float]) -> float:
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    return float(arr.mean()) if arr.size else float("nan")


def _row(system: str, setting: str, kbps: float, per_file: Sequence[dict[str, float]]) -> CodecRow:
    return CodecRow(
        system=system,
        setting=setting,
        kbps=kbps,
        pesq=_mean(m["pesq"] for m in per_file),
        stoi=_mean(m["stoi"] for m in per_file),
        mel_distance=_mean(m["mel_distance"] for m in per_file),
        si_sdr=_mean(m["si_sdr"] for m in per_file),
        n_files=len(per_file),
    )


def codec_bitrate_kbps(
    n_quantizers: int, codebook_size: int = 1024, frame_rate: float = SAMPLE_RATE / HOP_LENGTH
) -> float:
    """Nominal bitrate of residual VQ: n_quantizers x log2(codebook) bits per frame."""
    return n_quantizers * math.log2(codebook_size) * frame_rate / 1000.0


def codec_table(
    wavs: Sequence[np.ndarray],
    codec: Codec | None = None,
    n_quantizers: Sequence[int] = (8, 16),
    opus_kbps: Sequence[float] | None = None,
    *,
    codebook_size: int = 1024,
    frame_rate: float = SAMPLE_RATE / HOP_LENGTH,
    opus_backend: str | None = None,
    sample_rate: int = SAMPLE_RATE,
    codec_name: str = "codec",
) -> list[CodecRow]:
    """Codec rows (one per quantizer count) and Opus rows (one per target kbps) on the same files.

    Opus rows report the measured payload bitrate, not the target. ``opus_kbps=None`` targets the
    codec's nominal bitrates (so the two are compared at matching rates); ``[]`` gives no Opus rows.
    """
    rows: list[CodecRow] = []
    if codec is not None:
        for nq in n_quantizers:
            per_file = [codec_metrics(w, codec(w, nq), sample_rate) for w in wavs]
            kbps = codec_bitrate_kbps(nq, codebook_size, frame_rate)
            rows.append(_row(codec_name, f"{nq} quantizers", kbps, per_file))
    if opus_kbps is None:
        targets = [codec_bitrate_kbps(nq, codebook_size, frame_rate) for nq in n_quantizers]
    else:
        targets = list(opus_kbps)
    if targets:
        for target in targets:
            per_file, bits, seconds = [], 0.0, 0.0
            for w in wavs:
                decoded, payload_kbps = opus_roundtrip(w, target, sample_rate, backend=opus_backend)
                per_file.append(codec_metrics(w, decoded, sample_rate))
                duration = len(w) / sample_rate
                bits += payload_kbps * duration
                seconds += duration
            rows.append(_row("opus", f"target {target:g} kbps", bits / seconds, per_file))
    return rows


def codec_table_markdown(rows: Sequence[CodecRow]) -> str:
    """The table as Markdown (higher PESQ/STOI/SI-SDR and lower mel distance are better)."""
    lines = [
        "| system | setting | kbps | PESQ-WB | STOI | mel L1 | SI-SDR dB | files |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.system} | {r.setting} | {r.kbps:.2f} | {r.pesq:.3f} | {r.stoi:.3f} | "
            f"{r.mel_distance:.3f} | {r.si_sdr:.2f} | {r.n_files} |"
        )
    return "\n".join(lines)


@dataclasses.dataclass
class QuantizerUsage:
    """One residual quantizer over a set of files.

    ``entropy_bits`` is the entropy of its code histogram (at most log2(codebook size) = 10 bits:
    the share of its nominal bitrate it uses); ``perplexity`` = 2 ** entropy_bits, the number of
    equally used codes it is worth. ``mel_distance`` is the log-mel distance of the
    reconstruction from the first ``quantizer`` quantizers (None when not measured), so the
    difference from the row above is what this quantizer adds.
    """

    quantizer: int  # 1-based position in the residual stack
    codes_used: int
    perplexity: float
    entropy_bits: float
    mel_distance: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        return dataclasses.asdict(self)


def codebook_usage(
    codes: Sequence[np.ndarray],
    codebook_size: int,
    mel_distances: Sequence[float] | None = None,
) -> list[QuantizerUsage]:
    """Usage of every quantizer from the codes of several files (each ``[T, Q]`` int)."""
    stacked = np.concatenate([np.asarray(c).reshape(-1, np.asarray(c).shape[-1]) for c in codes])
    if stacked.size == 0:
        raise ValueError("codebook_usage needs at least one frame of codes")
    if stacked.min() < 0 or stacked.max() >= codebook_size:
        raise ValueError(f"codes outside [0, {codebook_size}): is the codebook size right?")
    rows = []
    for q in range(stacked.shape[1]):
        counts = np.bincount(stacked[:, q], minlength=codebook_size).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        entropy = max(0.0, float(-(p * np.log2(p)).sum()))  # not -0.0 for a single code
        mel = None if mel_distances is None else float(mel_distances[q])
        rows.append(QuantizerUsage(q + 1, int((counts > 0).sum()), 2.0**entropy, entropy, mel))
    return rows


def measure_codebook_usage(codec: Any, wavs: Sequence[np.ndarray]) -> list[QuantizerUsage]:
    """:func:`codebook_usage` of a codec object (``encode(wav) -> [T, Q]``, ``decode_codes``,
    ``codebook_size``: ``inference.codec.Codec``) on ``wavs``, with the log-mel distance of the
    reconstruction from every prefix 1..Q of its quantizers."""
    codes = [np.asarray(codec.encode(w)) for w in wavs]
    mel = [
        _mean(
            mel_distance(w, codec.decode_codes(c[:, :k])[: len(w)])
            for w, c in zip(wavs, codes, strict=True)
        )
        for k in range(1, codes[0].shape[-1] + 1)
    ]
    return codebook_usage(codes, int(codec.codebook_size), mel)


def codebook_usage_markdown(rows: Sequence[QuantizerUsage], codebook_size: int) -> str:
    """The usage table as Markdown: one line per quantizer."""
    bits = math.log2(codebook_size)
    lines = [
        f"| quantizer | codes used (of {codebook_size}) | perplexity | entropy bits (of {bits:g}) "
        "| mel L1 with quantizers 1..q |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        mel = "" if r.mel_distance is None else f"{r.mel_distance:.3f}"
        lines.append(
            f"| {r.quantizer} | {r.codes_used} | {r.perplexity:.0f} | {r.entropy_bits:.2f} "
            f"| {mel} |"
        )
    return "\n".join(lines)
