"""The one log-mel spectrogram of the package, in numpy (data prep, aligner, metrics, plots) and in
pure JAX (inside jit: the codec's multi-scale mel loss, its discriminators' STFT).

Every mel of the package is :func:`log_mel_spectrogram` / :func:`log_mel_jax` with a
:class:`MelConfig`; the uses that differ have a named config (one place to read what each one is):

================================  ===========================================================
:data:`DATASET_MEL` (default)     the ``mel`` of prepared datasets (data preparation, voice
                                  conversion's aligner input): frames on the codec frames.
:data:`ALIGNER_MEL`               ``align.api.log_mel``, the built-in aligner's documented
                                  features: librosa's ``melspectrogram`` framing.
:data:`METRIC_MEL`                ``evaluation.codec_metrics.log_mel`` (mel distance, plots):
                                  64 ms window, librosa framing.
:func:`codec_loss_mel`            the codec's multi-scale mel loss, one config per FFT size
                                  (:data:`CODEC_LOSS_MEL` at 1024), HTK mel scale.
================================  ===========================================================

The computation, for a config ``cfg``:

1. framing. ``center=False`` (the project's frame rule, see :mod:`.io`): zero-pad the end of the
   signal to a whole number of hops, pad ``(n_fft - hop) // 2`` samples on both sides
   (``pad_mode``) and cut frames of ``n_fft`` samples every ``hop``, so frame ``i`` is centred on
   ``(i + 0.5) * hop``, the centre of codec frame ``i`` (and of the pitch frame, see
   :mod:`.pitch`), and there are exactly ``ceil(len / hop)`` frames. ``center=True`` is
   ``librosa.stft(center=True)``: ``n_fft // 2`` samples of ``pad_mode`` padding on both sides,
   frame ``i`` centred on sample ``i * hop``, ``1 + len // hop`` frames;
2. periodic Hann window of ``win_length`` samples centred in the ``n_fft`` frame, real FFT,
   magnitude (``sqrt(re^2 + im^2 + magnitude_eps)``; the epsilon keeps the gradient finite at 0),
   raised to ``power`` (1 = magnitude, 2 = power);
3. mel filterbank: Slaney (``htk=False``, librosa's default) or HTK mel scale, filters of equal
   area (``norm="slaney"``) or of peak 1 (``norm=None``); the same numbers as
   ``librosa.filters.mel`` (to float32 rounding), computed here without librosa;
4. natural log of ``max(mel, log_floor)`` (the 1e-5 floor keeps silence at about -11.5, not -inf).

The JAX version frames with slices of hop-sized blocks when ``hop`` divides ``n_fft`` (their
gradient is cheap; a gather's is a scatter-add, slow to compile and run on CPU) and with a gather
otherwise, then uses ``jnp.fft.rfft``. Window and filterbank are numpy constants computed once per
config.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE

__all__ = [
    "ALIGNER_MEL",
    "CODEC_LOSS_MEL",
    "DATASET_MEL",
    "METRIC_MEL",
    "MelConfig",
    "codec_loss_mel",
    "hann_window",
    "hz_to_mel",
    "log_mel_jax",
    "log_mel_spectrogram",
    "magnitude_jax",
    "mel_filterbank",
    "mel_to_hz",
    "stft_jax",
    "stft_magnitude",
]

_PAD_MODES = ("reflect", "constant")
_NORMS = ("slaney", None)


@dataclasses.dataclass(frozen=True)
class MelConfig:
    """Mel-spectrogram parameters. Defaults: 50 ms window, 64 ms FFT, 12.5 ms hop, 80 bands, the
    project's framing (see the module docstring)."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 1024
    win_length: int = 800
    hop_length: int = HOP_LENGTH
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = None  # None = Nyquist
    power: float = 1.0  # 1 = magnitude, 2 = power
    log_floor: float = 1e-5
    center: bool = False  # False: ceil(len / hop) frames on the codec frames; True: librosa's
    pad_mode: str = "reflect"  # padding of both sides: "reflect" or "constant" (zeros)
    htk: bool = False  # mel scale: False = Slaney (librosa's default), True = HTK
    norm: str | None = "slaney"  # "slaney" = filters of equal area, None = filters of peak 1
    magnitude_eps: float = 0.0  # |X| = sqrt(re^2 + im^2 + magnitude_eps)

    def __post_init__(self) -> None:
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} > n_fft {self.n_fft}")
        if self.hop_length > self.n_fft:
            raise ValueError(f"hop_length {self.hop_length} > n_fft {self.n_fft}")
        if self.pad_mode not in _PAD_MODES:
            raise ValueError(f"pad_mode {self.pad_mode!r} is not one of {_PAD_MODES}")
        if self.norm not in _NORMS:
            raise ValueError(f"norm {self.norm!r} is not one of {_NORMS}")


#: The ``mel`` feature of prepared datasets (``data.prepare``; voice conversion recomputes it).
DATASET_MEL = MelConfig()
#: The built-in aligner's features (``align.api.log_mel``): what
#: ``librosa.feature.melspectrogram(n_fft=1024, hop_length=200, win_length=800, power=1)`` gives.
ALIGNER_MEL = MelConfig(center=True, pad_mode="constant")
#: Codec metrics and plots (``evaluation.codec_metrics.log_mel``): 1024-sample window.
METRIC_MEL = MelConfig(win_length=1024, center=True, pad_mode="constant")
#: The codec's multi-scale mel loss at a 1024-point FFT; :func:`codec_loss_mel` gives each scale.
CODEC_LOSS_MEL = MelConfig(
    n_fft=1024, win_length=1024, hop_length=256, center=True, htk=True, magnitude_eps=1e-7
)


def codec_loss_mel(n_fft: int, n_mels: int) -> MelConfig:
    """The codec loss's mel at FFT size ``n_fft``: window ``n_fft``, hop ``n_fft // 4``."""
    return dataclasses.replace(
        CODEC_LOSS_MEL, n_fft=n_fft, win_length=n_fft, hop_length=n_fft // 4, n_mels=n_mels
    )


def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window of ``n`` samples (float32), ``scipy.signal.get_window("hann", n)``."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


# Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(f, htk: bool = False) -> np.ndarray:
    """Frequency (Hz) -> mel, HTK or Slaney scale (``librosa.hz_to_mel``), float64."""
    f = np.asarray(f, np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    log = _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log, f / _F_SP)


def mel_to_hz(m, htk: bool = False) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`, float64."""
    m = np.asarray(m, np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(m, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(m >= _MIN_LOG_MEL, log, _F_SP * m)


def _filterbank(cfg: MelConfig) -> np.ndarray:
    """Triangular mel filters [n_mels, n_fft // 2 + 1] in float64 (librosa's construction)."""
    fmax = cfg.sample_rate / 2 if cfg.fmax is None else cfg.fmax
    freqs = np.linspace(0.0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    lo, hi = hz_to_mel(cfg.fmin, cfg.htk), hz_to_mel(fmax, cfg.htk)
    edges = mel_to_hz(np.linspace(lo, hi, cfg.n_mels + 2), cfg.htk)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lower) / np.maximum(centre - lower, 1e-9)
    down = (upper - freqs[None]) / np.maximum(upper - centre, 1e-9)
    fb = np.maximum(0.0, np.minimum(up, down))
    if cfg.norm == "slaney":
        fb *= 2.0 / np.maximum(upper - lower, 1e-9)  # equal area per filter
    return fb


@functools.lru_cache(maxsize=64)
def _constants(cfg: MelConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(window [n_fft], filterbank [n_mels, F], its transpose [F, n_mels]), float32, read-only."""
    left = (cfg.n_fft - cfg.win_length) // 2
    window = np.zeros(cfg.n_fft, dtype=np.float32)
    window[left : left + cfg.win_length] = hann_window(cfg.win_length)
    fb = _filterbank(cfg).astype(np.float32)
    fb_t = np.ascontiguousarray(fb.T)
    # Cached and shared between callers: make them read-only so nobody mutates the cache.
    for a in (window, fb, fb_t):
        a.setflags(write=False)
    return window, fb, fb_t


def mel_filterbank(cfg: MelConfig = DATASET_MEL) -> np.ndarray:
    """Mel filterbank ``[n_mels, n_fft // 2 + 1]`` (float32, read-only) for ``cfg``."""
    return _constants(cfg)[1]


def _framing(cfg: MelConfig, n: int) -> tuple[int, int, int, int]:
    """(frames, end zero-pad, left pad, right pad) of an ``n``-sample signal."""
    if cfg.center:
        return 1 + n // cfg.hop_length, 0, cfg.n_fft // 2, cfg.n_fft // 2
    n_frames = -(-n // cfg.hop_length)
    side = cfg.n_fft - cfg.hop_length
    return n_frames, n_frames * cfg.hop_length - n, side // 2, side - side // 2


def stft_magnitude(wav: np.ndarray, cfg: MelConfig = DATASET_MEL) -> np.ndarray:
    """Magnitude STFT ``[..., frames, n_fft // 2 + 1]`` (float32) with the framing of ``cfg``
    (module docstring). Accepts any leading batch shape."""
    wav = np.asarray(wav, dtype=np.float64)
    n = wav.shape[-1]
    n_frames, extra, left, right = _framing(cfg, n)
    if n == 0:
        return np.zeros((*wav.shape[:-1], 0, cfg.n_fft // 2 + 1), dtype=np.float32)
    batch_pad = [(0, 0)] * (wav.ndim - 1)
    x = np.pad(wav, [*batch_pad, (0, extra)])
    x = np.pad(x, [*batch_pad, (left, right)], mode=cfg.pad_mode)
    frames = np.lib.stride_tricks.sliding_window_view(x, cfg.n_fft, axis=-1)
    frames = frames[..., : n_frames * cfg.hop_length : cfg.hop_length, :]
    window = _constants(cfg)[0].astype(np.float64)
    spec = np.fft.rfft(frames * window, axis=-1)
    if cfg.magnitude_eps:
        mag = np.sqrt(spec.real**2 + spec.imag**2 + cfg.magnitude_eps)
    else:
        mag = np.abs(spec)
    return mag.astype(np.float32)


def log_mel_spectrogram(wav: np.ndarray, cfg: MelConfig = DATASET_MEL, **overrides) -> np.ndarray:
    """Numpy log-mel spectrogram ``[..., frames, n_mels]`` float32 (``ceil(len / hop)`` frames
    with the default config).

    Keyword overrides (``n_mels=100``, ``fmax=7600``, ...) replace fields of ``cfg``.
    """
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    mag = stft_magnitude(wav, cfg).astype(np.float64)
    if cfg.power != 1.0:
        mag = mag**cfg.power
    mel = mag @ mel_filterbank(cfg).T.astype(np.float64)
    return np.log(np.maximum(mel, cfg.log_floor)).astype(np.float32)


def _frames_jax(x, n_frames: int, n_fft: int, hop: int):
    """Frames ``[..., n_frames, n_fft]`` of the padded signal ``x``; frame i starts at i * hop."""
    import jax.numpy as jnp

    lead = x.shape[:-1]
    if n_fft % hop == 0:
        # Frames as r = n_fft / hop shifted views of hop-sized blocks: slices and a concat, whose
        # gradient is cheap (a gather's is a scatter-add, slow to compile and run on CPU).
        r = n_fft // hop
        blocks = x[..., : (n_frames + r - 1) * hop].reshape(*lead, n_frames + r - 1, hop)
        return jnp.concatenate([blocks[..., i : i + n_frames, :] for i in range(r)], axis=-1)
    idx = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]
    return x[..., idx]  # static indices: a single XLA gather


def stft_jax(wav, cfg: MelConfig = DATASET_MEL):
    """Complex STFT ``[..., frames, n_fft // 2 + 1]`` of ``wav [..., samples]`` with the framing
    and window of ``cfg`` (module docstring), computed in (at least) float32; jit-friendly."""
    import jax.numpy as jnp

    wav = jnp.asarray(wav)
    if not jnp.issubdtype(wav.dtype, jnp.floating):
        wav = wav.astype(jnp.float32)
    n = wav.shape[-1]
    if n == 0:
        raise ValueError("stft_jax needs at least one sample")
    n_frames, extra, left, right = _framing(cfg, n)
    batch_pad = [(0, 0)] * (wav.ndim - 1)
    x = jnp.pad(wav, [*batch_pad, (0, extra)]) if extra else wav
    x = jnp.pad(x, [*batch_pad, (left, right)], mode=cfg.pad_mode)
    frames = _frames_jax(x, n_frames, cfg.n_fft, cfg.hop_length) * _constants(cfg)[0]
    return jnp.fft.rfft(frames.astype(jnp.promote_types(frames.dtype, jnp.float32)), axis=-1)


def magnitude_jax(spec, eps: float = 0.0):
    """``|spec|``; with ``eps > 0``, ``sqrt(re^2 + im^2 + eps)``, whose gradient is finite at 0
    (``jnp.abs``'s is defined as 0 there by JAX)."""
    import jax.numpy as jnp

    if eps:
        return jnp.sqrt(jnp.real(spec) ** 2 + jnp.imag(spec) ** 2 + eps)
    return jnp.abs(spec)


def log_mel_jax(wav, cfg: MelConfig = DATASET_MEL, **overrides):
    """Pure-JAX log-mel spectrogram ``[..., frames, n_mels]``; jit- and grad-friendly.

    ``wav``: ``[..., samples]`` (any leading batch shape); ``cfg`` must be static (it is a frozen,
    hashable dataclass, so ``jax.jit(log_mel_jax, static_argnames="cfg")`` works). Matches
    :func:`log_mel_spectrogram` to ~1e-4 in float32.
    """
    import jax.numpy as jnp

    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    spec = stft_jax(wav, cfg)
    if cfg.power == 1.0:
        mag = magnitude_jax(spec, cfg.magnitude_eps)
    else:
        mag = (jnp.real(spec) ** 2 + jnp.imag(spec) ** 2 + cfg.magnitude_eps) ** (cfg.power / 2)
    mel = mag @ jnp.asarray(_constants(cfg)[2], dtype=mag.dtype)
    return jnp.log(jnp.maximum(mel, cfg.log_floor))
