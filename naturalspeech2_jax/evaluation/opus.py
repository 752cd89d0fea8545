"""Opus baseline for the codec table: encode/decode at a target bitrate, measure payload kbps.

Two backends:

- ``"soundfile"`` (default, pip only): libsndfile's built-in Ogg/Opus encoder, bundled in the
  ``soundfile`` wheels. libsndfile maps ``compression_level`` in [0, 1] linearly onto a libopus
  target bitrate of 256 kbps down to 6 kbps (VBR, application "audio"), so targets below 6 kbps are
  clamped to 6 kbps (measured payload on speech at that setting: about 5.2 kbps).
- ``"ffmpeg"``: ffmpeg's libopus (``-application voip -vbr on``), as in EVALUATION.md's reference
  figures. Needs an ffmpeg binary on PATH (``apt-get install ffmpeg``); without one it raises
  :class:`OpusUnavailable` with a one-line reason.

The reported bitrate is measured, not nominal: the sum of Opus packet sizes in the Ogg stream,
header packets (OpusHead, OpusTags) and Ogg page overhead excluded, over the audio duration.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile

import numpy as np
import soundfile as sf

from naturalspeech2_jax import SAMPLE_RATE
from naturalspeech2_jax.audio.io import resample

_SNDFILE_MIN_BPS, _SNDFILE_MAX_BPS = 6_000, 256_000


class OpusUnavailable(RuntimeError):
    """The requested Opus backend cannot run on this machine."""


def ogg_packet_sizes(data: bytes) -> list[int]:
    """Sizes in bytes of the packets of an Ogg stream (from the pages' lacing values)."""
    sizes: list[int] = []
    current = 0
    i = 0
    while i < len(data):
        if data[i : i + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {i}")
        n_segments = data[i + 26]
        lacing = data[i + 27 : i + 27 + n_segments]
        i += 27 + n_segments
        for value in lacing:
            current += value
            # A lacing value below 255 ends a packet; 255 means it continues.
            if value < 255:
                sizes.append(current)
                current = 0
        i += sum(lacing)
    return sizes


def opus_payload_kbps(ogg_bytes: bytes, duration_s: float) -> float:
    """Audio payload bitrate of an Ogg/Opus stream (header packets excluded)."""
    sizes = ogg_packet_sizes(ogg_bytes)
    return sum(sizes[2:]) * 8.0 / duration_s / 1000.0


def _soundfile_roundtrip(wav: np.ndarray, target_kbps: float) -> tuple[np.ndarray, bytes]:
    bps = float(np.clip(target_kbps * 1000.0, _SNDFILE_MIN_BPS, _SNDFILE_MAX_BPS))
    level = 1.0 - (bps - _SNDFILE_MIN_BPS) / (_SNDFILE_MAX_BPS - _SNDFILE_MIN_BPS)
    buffer = io.BytesIO()
    sf.write(buffer, wav, SAMPLE_RATE, format="OGG", subtype="OPUS", compression_level=level)
    encoded = buffer.getvalue()
    buffer.seek(0)
    decoded, sr = sf.read(buffer, dtype="float32")
    if sr != SAMPLE_RATE:
        raise RuntimeError(f"libsndfile decoded Opus at {sr} Hz")
    return decoded, encoded


def _ffmpeg_roundtrip(wav: np.ndarray, target_kbps: float) -> tuple[np.ndarray, bytes]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise OpusUnavailable(
            "the ffmpeg Opus backend needs an ffmpeg binary with libopus (apt-get install ffmpeg)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        src, enc, dec = (os.path.join(tmp, n) for n in ("in.wav", "enc.ogg", "dec.wav"))
        sf.write(src, wav, SAMPLE_RATE, subtype="FLOAT")
        common = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y"]
        encode = common + ["-i", src, "-c:a", "libopus", "-application", "voip", "-vbr", "on"]
        encode += ["-b:a", f"{int(round(target_kbps * 1000))}", enc]
        subprocess.run(encode, check=True, capture_output=True)
        decode = common + ["-i", enc, "-ar", str(SAMPLE_RATE), "-ac", "1", "-c:a", "pcm_f32le", dec]
        subprocess.run(decode, check=True, capture_output=True)
        decoded, _ = sf.read(dec, dtype="float32")
        with open(enc, "rb") as f:
            encoded = f.read()
    return decoded, encoded


def opus_available(backend: str | None = None) -> bool:
    """Whether :func:`opus_roundtrip` can run with this backend here."""
    backend = backend or "soundfile"
    if backend == "ffmpeg":
        return shutil.which("ffmpeg") is not None
    return "OPUS" in sf.available_subtypes("OGG")


def opus_roundtrip(
    wav: np.ndarray,
    target_kbps: float,
    sample_rate: int = SAMPLE_RATE,
    backend: str | None = None,
) -> tuple[np.ndarray, float]:
    """Encode and decode with Opus; returns (decoded audio, measured payload kbps).

    The output has the input's length (decoder padding trimmed, short output zero-padded).
    """
    wav = np.asarray(wav, dtype=np.float32).ravel()
    if sample_rate != SAMPLE_RATE:
        wav = resample(wav, sample_rate, SAMPLE_RATE)
    backend = backend or "soundfile"
    if backend == "soundfile":
        if not opus_available("soundfile"):
            raise OpusUnavailable("this libsndfile build has no Ogg/Opus support")
        decoded, encoded = _soundfile_roundtrip(wav, target_kbps)
    elif backend == "ffmpeg":
        decoded, encoded = _ffmpeg_roundtrip(wav, target_kbps)
    else:
        raise ValueError(f"unknown Opus backend {backend!r} (use 'soundfile' or 'ffmpeg')")
    kbps = opus_payload_kbps(encoded, len(wav) / SAMPLE_RATE)
    decoded = np.asarray(decoded, dtype=np.float32).ravel()[: len(wav)]
    if decoded.size < wav.size:
        decoded = np.pad(decoded, (0, wav.size - decoded.size))
    if sample_rate != SAMPLE_RATE:
        decoded = resample(decoded, SAMPLE_RATE, sample_rate)
    return decoded, kbps
