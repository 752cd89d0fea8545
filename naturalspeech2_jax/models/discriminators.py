"""Codec discriminators: multi-scale waveform (MelGAN) and multi-resolution STFT (EnCodec).

Each discriminator returns, per sub-discriminator, its logits and the list of intermediate
feature maps (for feature matching). ``CodecDiscriminators`` bundles both families and returns
flat lists, so the losses need not know how many there are.

- ``WaveDiscriminator`` (one scale): grouped strided 1-D convolutions over the waveform;
  ``MultiScaleDiscriminator`` runs one per scale on the waveform average-pooled by 1, 2, 4, ...
- ``STFTDiscriminator`` (one resolution): 2-D convolutions over the complex STFT (real and
  imaginary parts as two channels, time x frequency), dilated in time and strided in frequency;
  ``MultiResolutionSTFTDiscriminator`` runs one per FFT size.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from naturalspeech2_jax.models.codec_losses import stft
from naturalspeech2_jax.models.layers import Conv1d, Conv2d

Outputs = tuple[list[jax.Array], list[list[jax.Array]]]


def _lrelu(x):
    return jax.nn.leaky_relu(x, 0.2)


class WaveDiscriminator(nnx.Module):
    """MelGAN's per-scale discriminator: conv(15) -> grouped strided conv(41, /4)... -> logits."""

    def __init__(self, channels: Sequence[int], rngs: nnx.Rngs):
        layers = [Conv1d(1, channels[0], 15, rngs=rngs)]
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            groups = max(1, c_in // 4)
            while c_out % groups:  # keep groups dividing both widths
                groups //= 2
            layers.append(Conv1d(c_in, c_out, 41, stride=4, groups=groups, rngs=rngs))
        layers.append(Conv1d(channels[-1], channels[-1], 5, rngs=rngs))
        self.layers = nnx.List(layers)
        self.out = Conv1d(channels[-1], 1, 3, rngs=rngs)

    def __call__(self, wav: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        x, feats = wav[..., None].astype(self.out.dtype), []
        for layer in self.layers:
            x = _lrelu(layer(x))
            feats.append(x)
        return self.out(x)[..., 0].astype(jnp.float32), feats


class MultiScaleDiscriminator(nnx.Module):
    def __init__(self, num_scales: int, channels: Sequence[int], rngs: nnx.Rngs):
        self.discs = nnx.List([WaveDiscriminator(channels, rngs) for _ in range(num_scales)])

    def __call__(self, wav: jax.Array) -> Outputs:
        logits, feats = [], []
        for i, disc in enumerate(self.discs):
            if i:
                # Average-pool by 2 (kernel 4, stride 2, as MelGAN) for every further scale.
                padded = jnp.pad(wav, ((0, 0), (1, 1)), mode="edge")
                wav = jax.lax.reduce_window(padded, 0.0, jax.lax.add, (1, 4), (1, 2), "VALID") / 4
            lg, ft = disc(wav)
            logits.append(lg)
            feats.append(ft)
        return logits, feats


class STFTDiscriminator(nnx.Module):
    """EnCodec's STFT discriminator for one FFT size (input: real/imag of the complex STFT)."""

    def __init__(self, n_fft: int, channels: int, rngs: nnx.Rngs):
        self.n_fft, self.hop = n_fft, n_fft // 4
        c = channels
        self.layers = nnx.List(
            [
                Conv2d(2, c, (3, 9), rngs=rngs),
                Conv2d(c, c, (3, 9), stride=(1, 2), dilation=(1, 1), rngs=rngs),
                Conv2d(c, c, (3, 9), stride=(1, 2), dilation=(2, 1), rngs=rngs),
                Conv2d(c, c, (3, 9), stride=(1, 2), dilation=(4, 1), rngs=rngs),
                Conv2d(c, c, (3, 3), rngs=rngs),
            ]
        )
        self.out = Conv2d(c, 1, (3, 3), rngs=rngs)

    def __call__(self, wav: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        spec = stft(wav, self.n_fft, self.hop)  # [B, time, freq]
        x = jnp.stack([jnp.real(spec), jnp.imag(spec)], -1).astype(self.out.dtype)
        feats = []
        for layer in self.layers:
            x = _lrelu(layer(x))
            feats.append(x)
        return self.out(x)[..., 0].astype(jnp.float32), feats


class MultiResolutionSTFTDiscriminator(nnx.Module):
    def __init__(self, fft_sizes: Sequence[int], channels: int, rngs: nnx.Rngs):
        self.discs = nnx.List([STFTDiscriminator(n, channels, rngs) for n in fft_sizes])

    def __call__(self, wav: jax.Array) -> Outputs:
        logits, feats = [], []
        for disc in self.discs:
            lg, ft = disc(wav)
            logits.append(lg)
            feats.append(ft)
        return logits, feats


class CodecDiscriminators(nnx.Module):
    """Both discriminator families; ``__call__`` returns flat (logits, features) lists."""

    def __init__(
        self,
        *,
        msd_scales: int = 3,
        msd_channels: Sequence[int] = (16, 64, 256, 512),
        stft_fft_sizes: Sequence[int] = (1024, 512, 256),
        stft_channels: int = 32,
        rngs: nnx.Rngs,
    ):
        self.msd = MultiScaleDiscriminator(msd_scales, tuple(msd_channels), rngs)
        self.stftd = MultiResolutionSTFTDiscriminator(tuple(stft_fft_sizes), stft_channels, rngs)

    def __call__(self, wav: jax.Array) -> Outputs:
        l1, f1 = self.msd(wav)
        l2, f2 = self.stftd(wav)
        return l1 + l2, f1 + f2
