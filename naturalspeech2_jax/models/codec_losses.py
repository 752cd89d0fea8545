"""Codec losses and spectral front-ends, in JAX: STFT, mel, reconstruction, adversarial, features.

Everything here is a pure function of arrays (usable inside jit). The STFT frames the signal with
a gather (centre, reflect padding, periodic Hann window) and takes an ``rfft``; the mel filterbank
is a constant built with numpy (HTK mel scale, Slaney area normalisation).

Losses (weights live in the config):
- ``multi_scale_mel_loss``: L1 between log-mel spectrograms at several FFT sizes (SoundStream's
  multi-scale spectral reconstruction, DAC's choice of log-mel L1);
- ``multi_resolution_stft_loss``: spectral convergence + log-magnitude L1 (Parallel WaveGAN);
- ``hinge_d_loss`` / ``hinge_g_loss``: hinge adversarial losses over every discriminator output;
- ``feature_matching_loss``: L1 between discriminator features of real and generated audio,
  relative to the real features' mean magnitude (EnCodec), averaged over layers.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from naturalspeech2_jax import SAMPLE_RATE


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=32)
def mel_filterbank(
    n_fft: int, n_mels: int, sample_rate: int = SAMPLE_RATE, fmin: float = 0.0, fmax=None
) -> np.ndarray:
    """Triangular mel filters [n_fft // 2 + 1, n_mels] (HTK scale, Slaney area-normalised)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    up = (freqs[:, None] - lower[None]) / np.maximum(centre - lower, 1e-9)[None]
    down = (upper[None] - freqs[:, None]) / np.maximum(upper - centre, 1e-9)[None]
    fb = np.maximum(0.0, np.minimum(up, down))
    fb *= (2.0 / np.maximum(upper - lower, 1e-9))[None]  # equal area per filter
    return fb.astype(np.float32)


@functools.lru_cache(maxsize=32)
def _frame_index(n: int, n_fft: int, hop: int) -> np.ndarray:
    n_frames = 1 + n // hop
    return np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]


def hann(n_fft: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def stft(x: jax.Array, n_fft: int, hop: int) -> jax.Array:
    """Complex STFT of ``x`` [B, N] -> [B, 1 + N // hop, n_fft // 2 + 1] (centred frames)."""
    pad = n_fft // 2
    xp = jnp.pad(x, ((0, 0), (pad, pad)), mode="reflect")
    n_frames = 1 + x.shape[-1] // hop
    if n_fft % hop == 0:
        # Frames as r = n_fft / hop shifted views of hop-sized blocks: slices and a concat, whose
        # gradient is cheap (a gather's is a scatter-add, slow to compile and run on CPU).
        r = n_fft // hop
        blocks = xp[:, : (n_frames + r - 1) * hop].reshape(x.shape[0], n_frames + r - 1, hop)
        frames = jnp.concatenate([blocks[:, i : i + n_frames] for i in range(r)], axis=-1)
    else:
        frames = xp[:, _frame_index(x.shape[-1], n_fft, hop)]
    frames = frames * hann(n_fft)
    return jnp.fft.rfft(frames.astype(jnp.float32), axis=-1)


def magnitude(spec: jax.Array, eps: float = 1e-7) -> jax.Array:
    # sqrt(re^2 + im^2 + eps): |.| has an infinite gradient at 0, this does not.
    return jnp.sqrt(jnp.real(spec) ** 2 + jnp.imag(spec) ** 2 + eps)


def log_mel(x: jax.Array, n_fft: int, n_mels: int, hop: int | None = None) -> jax.Array:
    """log(mel magnitude) [B, frames, n_mels], floor 1e-5."""
    hop = hop or n_fft // 4
    mel = magnitude(stft(x, n_fft, hop)) @ mel_filterbank(n_fft, n_mels)
    return jnp.log(jnp.maximum(mel, 1e-5))


def multi_scale_mel_loss(
    x: jax.Array, y: jax.Array, scales: Sequence[int], n_mels: int
) -> jax.Array:
    """Mean over FFT sizes of the L1 distance between log-mel spectrograms of x and y."""
    losses = []
    for n_fft in scales:
        mels = min(n_mels, n_fft // 4)  # small FFTs cannot resolve many mel bands
        losses.append(jnp.mean(jnp.abs(log_mel(x, n_fft, mels) - log_mel(y, n_fft, mels))))
    return jnp.mean(jnp.stack(losses))


def multi_resolution_stft_loss(
    x: jax.Array, y: jax.Array, resolutions: Sequence[Sequence[int]]
) -> jax.Array:
    """Spectral convergence + log-magnitude L1, averaged over (n_fft, hop) resolutions."""
    losses = []
    for n_fft, hop in resolutions:
        mx, my = magnitude(stft(x, n_fft, hop)), magnitude(stft(y, n_fft, hop))
        sc = jnp.sqrt(jnp.sum((mx - my) ** 2)) / jnp.sqrt(jnp.sum(mx**2) + 1e-7)
        losses.append(sc + jnp.mean(jnp.abs(jnp.log(mx) - jnp.log(my))))
    return jnp.mean(jnp.stack(losses))


def hinge_d_loss(real_logits: Sequence[jax.Array], fake_logits: Sequence[jax.Array]) -> jax.Array:
    """Mean over discriminators of E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    terms = [
        jnp.mean(jax.nn.relu(1.0 - r)) + jnp.mean(jax.nn.relu(1.0 + f))
        for r, f in zip(real_logits, fake_logits, strict=True)
    ]
    return jnp.mean(jnp.stack(terms))


def hinge_g_loss(fake_logits: Sequence[jax.Array]) -> jax.Array:
    """Mean over discriminators of E[relu(1 - D(G(z)))] (SoundStream's generator loss)."""
    return jnp.mean(jnp.stack([jnp.mean(jax.nn.relu(1.0 - f)) for f in fake_logits]))


def feature_matching_loss(
    real_feats: Sequence[Sequence[jax.Array]], fake_feats: Sequence[Sequence[jax.Array]]
) -> jax.Array:
    """Mean over discriminators and layers of |f_real - f_fake|_1 / mean |f_real|."""
    terms = []
    for rs, fs in zip(real_feats, fake_feats, strict=True):
        for r, f in zip(rs, fs, strict=True):
            r = jax.lax.stop_gradient(r)
            # Means accumulated and returned in float32 whatever the features' (bf16) dtype.
            err = jnp.mean(jnp.abs(r - f), dtype=jnp.float32)
            terms.append(err / (jnp.mean(jnp.abs(r), dtype=jnp.float32) + 1e-5))
    return jnp.mean(jnp.stack(terms))
