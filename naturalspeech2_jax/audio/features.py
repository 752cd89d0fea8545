"""Log-mel spectrograms aligned with codec frames, in numpy (data prep, plots, metrics) and in pure
JAX (inside jit, e.g. the codec's multi-scale spectral reconstruction loss).

Both implementations compute exactly the same thing:

1. zero-pad the end of the signal to a whole number of hops (``ceil(len / hop)`` frames, the
   project's frame rule, see :mod:`.io`);
2. reflect-pad ``(n_fft - hop) // 2`` samples on both sides and cut frames of ``n_fft`` samples
   every ``hop`` samples, so frame ``i`` is centred on ``(i + 0.5) * hop``: the centre of codec
   frame ``i`` (and of the pitch frame, see :mod:`.pitch`). The frame count is therefore exactly
   ``ceil(len / hop)``, unlike ``librosa.stft(center=True)`` which gives one extra frame;
3. periodic Hann window of ``win_length`` samples centred in the ``n_fft`` frame, real FFT,
   magnitude (``power=1``) or power (``power=2``);
4. Slaney-normalised mel filterbank (librosa's default, ``htk=False``);
5. natural log of ``max(mel, 1e-5)`` (the floor keeps silence at about -11.5 rather than -inf).

The JAX version frames by gathering indices and uses ``jnp.fft.rfft``; nothing in it depends on
``jax.scipy.signal.stft``. Filterbank and window are numpy constants computed once per config.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE

__all__ = ["MelConfig", "mel_filterbank", "stft_magnitude", "log_mel_spectrogram", "log_mel_jax"]

_LOG_FLOOR = 1e-5


@dataclasses.dataclass(frozen=True)
class MelConfig:
    """Mel-spectrogram parameters. Defaults: 50 ms window, 64 ms FFT, 12.5 ms hop, 80 bands."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 1024
    win_length: int = 800
    hop_length: int = HOP_LENGTH
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = None  # None = Nyquist
    power: float = 1.0  # 1 = magnitude, 2 = power
    log_floor: float = _LOG_FLOOR

    def __post_init__(self) -> None:
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} > n_fft {self.n_fft}")
        if self.hop_length > self.n_fft:
            raise ValueError(f"hop_length {self.hop_length} > n_fft {self.n_fft}")


@functools.lru_cache(maxsize=32)
def _constants(cfg: MelConfig) -> tuple[np.ndarray, np.ndarray]:
    """(window [n_fft] float32, mel filterbank [n_mels, n_fft // 2 + 1] float32) for ``cfg``."""
    import librosa
    from scipy.signal import get_window

    win = get_window("hann", cfg.win_length, fftbins=True).astype(np.float64)
    left = (cfg.n_fft - cfg.win_length) // 2
    window = np.zeros(cfg.n_fft, dtype=np.float64)
    window[left : left + cfg.win_length] = win
    fb = librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax
    )
    window = window.astype(np.float32)
    fb = fb.astype(np.float32)
    # Cached and shared between callers: make them read-only so nobody mutates the cache.
    window.setflags(write=False)
    fb.setflags(write=False)
    return window, fb


def mel_filterbank(cfg: MelConfig = MelConfig()) -> np.ndarray:
    """Slaney mel filterbank ``[n_mels, n_fft // 2 + 1]`` for ``cfg`` (read-only array)."""
    return _constants(cfg)[1]


def _pads(cfg: MelConfig, n: int) -> tuple[int, int, int]:
    """(end zero-pad to a whole hop, left reflect pad, right reflect pad)."""
    n_frames = -(-n // cfg.hop_length)
    extra = n_frames * cfg.hop_length - n
    side = cfg.n_fft - cfg.hop_length
    return extra, side // 2, side - side // 2


def stft_magnitude(wav: np.ndarray, cfg: MelConfig = MelConfig()) -> np.ndarray:
    """Magnitude STFT ``[..., ceil(len / hop), n_fft // 2 + 1]`` (float32) with the framing rule
    of the module docstring. Accepts any leading batch shape."""
    wav = np.asarray(wav, dtype=np.float64)
    n = wav.shape[-1]
    if n == 0:
        return np.zeros((*wav.shape[:-1], 0, cfg.n_fft // 2 + 1), dtype=np.float32)
    extra, left, right = _pads(cfg, n)
    batch_pad = [(0, 0)] * (wav.ndim - 1)
    x = np.pad(wav, [*batch_pad, (0, extra)])
    x = np.pad(x, [*batch_pad, (left, right)], mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, cfg.n_fft, axis=-1)[
        ..., :: cfg.hop_length, :
    ]
    window, _ = _constants(cfg)
    spec = np.abs(np.fft.rfft(frames * window.astype(np.float64), axis=-1))
    return spec.astype(np.float32)


def log_mel_spectrogram(wav: np.ndarray, cfg: MelConfig = MelConfig(), **overrides) -> np.ndarray:
    """Numpy log-mel spectrogram ``[..., n_frames, n_mels]`` float32, ``n_frames = ceil(len/hop)``.

    Keyword overrides (``n_mels=100``, ``fmax=7600``, ...) replace fields of ``cfg``.
    """
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    mag = stft_magnitude(wav, cfg).astype(np.float64)
    if cfg.power != 1.0:
        mag = mag**cfg.power
    mel = mag @ mel_filterbank(cfg).T.astype(np.float64)
    return np.log(np.maximum(mel, cfg.log_floor)).astype(np.float32)


def log_mel_jax(wav, cfg: MelConfig = MelConfig(), **overrides):
    """Pure-JAX log-mel spectrogram ``[..., n_frames, n_mels]``; jit- and grad-friendly.

    ``wav``: ``[..., samples]`` (any leading batch shape); ``cfg`` must be static (it is a frozen,
    hashable dataclass, so ``jax.jit(log_mel_jax, static_argnames="cfg")`` works). Matches
    :func:`log_mel_spectrogram` to ~1e-4 in float32.
    """
    import jax.numpy as jnp

    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    wav = jnp.asarray(wav)
    if not jnp.issubdtype(wav.dtype, jnp.floating):
        wav = wav.astype(jnp.float32)
    n = wav.shape[-1]
    if n == 0:
        raise ValueError("log_mel_jax needs at least one sample")
    n_frames = -(-n // cfg.hop_length)
    extra, left, right = _pads(cfg, n)
    batch_pad = [(0, 0)] * (wav.ndim - 1)
    x = jnp.pad(wav, [*batch_pad, (0, extra)])
    x = jnp.pad(x, [*batch_pad, (left, right)], mode="reflect")
    # Gather frames: idx[i, k] = i * hop + k. Static shapes, so this is a single XLA gather.
    idx = np.arange(n_frames)[:, None] * cfg.hop_length + np.arange(cfg.n_fft)[None, :]
    frames = x[..., idx]
    window, fb = _constants(cfg)
    spec = jnp.fft.rfft(frames * jnp.asarray(window, dtype=x.dtype), axis=-1)
    if cfg.power == 1.0:
        # sqrt(re^2 + im^2) with a tiny epsilon would bias silence; jnp.abs is exact and its
        # gradient at 0 is defined by JAX (0), which is what a spectral loss wants.
        mag = jnp.abs(spec)
    else:
        mag = (spec.real**2 + spec.imag**2) ** (cfg.power / 2.0)
    mel = jnp.einsum("...tf,mf->...tm", mag, jnp.asarray(fb, dtype=mag.dtype))
    return jnp.log(jnp.maximum(mel, cfg.log_floor))
