"""Codec losses, in JAX: reconstruction (multi-scale mel, multi-resolution STFT), adversarial,
feature matching.

Everything here is a pure function of arrays (usable inside jit). The STFT, window and mel are
those of :mod:`naturalspeech2_jax.audio.features` (the package's one log-mel): the mel loss uses
:func:`~naturalspeech2_jax.audio.features.codec_loss_mel` (centred frames with reflect padding,
periodic Hann window of ``n_fft``, hop ``n_fft // 4``, HTK mel scale with Slaney area
normalisation, ``sqrt(re^2 + im^2 + 1e-7)`` magnitudes).

Losses (weights live in the config):
- ``multi_scale_mel_loss``: L1 between log-mel spectrograms at several FFT sizes (SoundStream's
  multi-scale spectral reconstruction, DAC's choice of log-mel L1);
- ``multi_resolution_stft_loss``: spectral convergence + log-magnitude L1 (Parallel WaveGAN);
- ``compressed_complex_loss``: squared distance between power-law compressed complex spectra (the
  phase-aware loss of speech enhancement); the only reconstruction loss here that scores phase;
- ``hinge_d_loss`` / ``hinge_g_loss``: hinge adversarial losses over every discriminator output;
- ``feature_matching_loss``: L1 between discriminator features of real and generated audio,
  relative to the real features' mean magnitude (EnCodec), averaged over layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from naturalspeech2_jax import SAMPLE_RATE
from naturalspeech2_jax.audio import features
from naturalspeech2_jax.audio.features import (
    MelConfig,
    codec_loss_mel,
    hann_window,
    log_mel_jax,
    magnitude_jax,
    stft_jax,
)

# The periodic Hann window (``audio.features.hann_window``) under its historical name here.
hann = hann_window


def mel_filterbank(
    n_fft: int, n_mels: int, sample_rate: int = SAMPLE_RATE, fmin: float = 0.0, fmax=None
) -> np.ndarray:
    """The mel loss's filters as [n_fft // 2 + 1, n_mels] (HTK scale, Slaney area-normalised)."""
    cfg = dataclasses.replace(
        codec_loss_mel(n_fft, n_mels), sample_rate=sample_rate, fmin=fmin, fmax=fmax
    )
    return features.mel_filterbank(cfg).T


def stft(x: jax.Array, n_fft: int, hop: int) -> jax.Array:
    """Complex STFT of ``x`` [B, N] -> [B, 1 + N // hop, n_fft // 2 + 1] (centred frames,
    reflect padding, periodic Hann window of ``n_fft``: ``librosa.stft``'s defaults)."""
    return stft_jax(x, MelConfig(n_fft=n_fft, win_length=n_fft, hop_length=hop, center=True))


def magnitude(spec: jax.Array, eps: float = 1e-7) -> jax.Array:
    # sqrt(re^2 + im^2 + eps): |.| has an infinite gradient at 0, this does not.
    return magnitude_jax(spec, eps)


def multi_scale_mel_loss(
    x: jax.Array, y: jax.Array, scales: Sequence[int], n_mels: int
) -> jax.Array:
    """Mean over FFT sizes of the L1 distance between log-mel spectrograms of x and y."""
    losses = []
    for n_fft in scales:
        cfg = codec_loss_mel(n_fft, min(n_mels, n_fft // 4))  # small FFTs resolve fewer bands
        losses.append(jnp.mean(jnp.abs(log_mel_jax(x, cfg) - log_mel_jax(y, cfg))))
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


def compressed_complex_loss(
    x: jax.Array, y: jax.Array, resolutions: Sequence[Sequence[int]], power: float = 0.3
) -> jax.Array:
    """Mean over (n_fft, hop) of E |c(X) - c(Y)|^2 with c(S) = |S|^power * S / |S|.

    The magnitude losses above are blind to phase, which a decoder that predicts its own phase
    (the spectral codec's iSTFT head) then learns only indirectly, through overlapping frames;
    PESQ and STOI hear the errors as roughness. Compressing the magnitude (power 0.3, as in
    speech enhancement: MetricGAN+, MP-SENet) keeps loud bins from dominating the phase term.
    """
    losses = []
    for n_fft, hop in resolutions:
        sx, sy = stft(x, n_fft, hop), stft(y, n_fft, hop)
        # |S|^(power - 1) with the magnitude's finite-gradient floor: c(S) = 0 where S = 0.
        cx = sx * magnitude(sx) ** (power - 1.0)
        cy = sy * magnitude(sy) ** (power - 1.0)
        d = cx - cy
        losses.append(jnp.mean(jnp.real(d) ** 2 + jnp.imag(d) ** 2))
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
