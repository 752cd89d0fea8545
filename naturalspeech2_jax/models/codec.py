"""SoundStream-style neural audio codec: conv encoder -> residual VQ -> conv decoder.

16 kHz waveform ``[B, N]`` (N a multiple of 200) -> latent ``[B, N / 200, latent_dim]`` (one frame
per 12.5 ms) -> 16 quantizers x 1024 codes -> waveform ``[B, N]``. The encoder is a 1-D conv
stack whose stages each hold three residual units (dilations 1, 3, 9) and end in a strided conv
(strides 2, 4, 5, 5 multiply to the 200-sample hop, channels double per stage); the decoder
mirrors it with transposed convolutions. ELU activations, weight-normed convolutions.

``kind="spectral"`` swaps the encoder and decoder for frame-rate ConvNeXt stacks behind a fixed
STFT/iSTFT (``codec_spectral.py``): the same contract with every layer at 80 frames per second
instead of up to 16 000; ``channels`` is then their width and ``layers`` their depths.

Public pieces used by NaturalSpeech 2: ``encode(wav) -> codes``, ``latent(codes) -> z`` (the
diffusion target, the sum of quantized embeddings), ``decode(z) -> wav`` and ``codebooks``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from naturalspeech2_jax.models.codec_spectral import ISTFTDecoder, SpectralEncoder
from naturalspeech2_jax.models.discriminators import CodecDiscriminators
from naturalspeech2_jax.models.layers import Conv1d, ConvTranspose1d
from naturalspeech2_jax.models.quantizer import ResidualVQ


class ResidualUnit(nnx.Module):
    """x + conv1(elu(conv_k(elu(x)))) with a dilated kernel-7 conv (SoundStream's unit)."""

    def __init__(self, channels: int, dilation: int, kernel_size: int, wn: bool, rngs: nnx.Rngs):
        self.conv = Conv1d(
            channels, channels, kernel_size, dilation=dilation, weight_norm=wn, rngs=rngs
        )
        self.proj = Conv1d(channels, channels, 1, weight_norm=wn, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.proj(jax.nn.elu(self.conv(jax.nn.elu(x))))


class EncoderBlock(nnx.Module):
    """Residual units at ``channels``, then a strided conv to ``2 * channels`` (T -> T / s)."""

    def __init__(self, channels, stride, dilations, kernel_size, wn, rngs):
        self.units = nnx.List([ResidualUnit(channels, d, kernel_size, wn, rngs) for d in dilations])
        self.down = Conv1d(
            channels, 2 * channels, 2 * stride, stride=stride, weight_norm=wn, rngs=rngs
        )

    def __call__(self, x):
        for unit in self.units:
            x = unit(x)
        return self.down(jax.nn.elu(x))


class DecoderBlock(nnx.Module):
    """A transposed conv from ``channels`` to ``channels / 2`` (T -> T * s), then residual units."""

    def __init__(self, channels, stride, dilations, kernel_size, wn, rngs):
        self.up = ConvTranspose1d(channels, channels // 2, stride, weight_norm=wn, rngs=rngs)
        self.units = nnx.List(
            [ResidualUnit(channels // 2, d, kernel_size, wn, rngs) for d in dilations]
        )

    def __call__(self, x):
        x = self.up(jax.nn.elu(x))
        for unit in self.units:
            x = unit(x)
        return x


class Encoder(nnx.Module):
    """[B, N] waveform -> [B, N / prod(strides), latent_dim]."""

    def __init__(self, channels, strides, dilations, kernel_size, latent_dim, wn, rngs):
        self.stem = Conv1d(1, channels, kernel_size, weight_norm=wn, rngs=rngs)
        blocks, c = [], channels
        for s in strides:
            blocks.append(EncoderBlock(c, s, dilations, kernel_size, wn, rngs))
            c *= 2
        self.blocks = nnx.List(blocks)
        self.out = Conv1d(c, latent_dim, 3, weight_norm=wn, rngs=rngs)

    def __call__(self, wav):
        x = self.stem(wav[..., None].astype(self.stem.dtype))
        for block in self.blocks:
            x = block(x)
        return self.out(jax.nn.elu(x))


class Decoder(nnx.Module):
    """[B, T, latent_dim] -> [B, T * prod(strides)] waveform in (-1, 1)."""

    def __init__(self, channels, strides, dilations, kernel_size, latent_dim, wn, rngs):
        c = channels * 2 ** len(strides)
        self.stem = Conv1d(latent_dim, c, kernel_size, weight_norm=wn, rngs=rngs)
        blocks = []
        for s in reversed(strides):
            blocks.append(DecoderBlock(c, s, dilations, kernel_size, wn, rngs))
            c //= 2
        self.blocks = nnx.List(blocks)
        self.out = Conv1d(c, 1, kernel_size, weight_norm=wn, rngs=rngs)

    def __call__(self, z):
        x = self.stem(z.astype(self.stem.dtype))
        for block in self.blocks:
            x = block(x)
        # float32 audio whatever the compute dtype: the spectral losses need its precision.
        return jnp.tanh(self.out(jax.nn.elu(x))[..., 0].astype(jnp.float32))


CODEC_KINDS = ("wave", "spectral")


class NeuralCodec(nnx.Module):
    """Encoder + residual VQ + decoder (the generator of the codec GAN)."""

    def __init__(
        self,
        *,
        channels: int = 32,
        strides: Sequence[int] = (2, 4, 5, 5),
        dilations: Sequence[int] = (1, 3, 9),
        kernel_size: int = 7,
        latent_dim: int = 256,
        num_quantizers: int = 16,
        codebook_size: int = 1024,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 0.1,
        kmeans_iters: int = 0,
        quantizer_dropout: float = 1.0,
        weight_norm: bool = True,
        kind: str = "wave",
        layers: Sequence[int] = (4, 8),
        mlp_ratio: int = 3,
        phase: str = "absolute",
        rngs: nnx.Rngs,
    ):
        if kind not in CODEC_KINDS:
            raise ValueError(f"codec kind {kind!r} is not one of {CODEC_KINDS}; set model.kind.")
        self.hop = math.prod(strides)
        self.kind = kind
        self.num_quantizers = num_quantizers
        self.quantizer_dropout = quantizer_dropout
        # Built in the order encoder, quantizer, decoder (the initialisers' random stream).
        wn = weight_norm
        if kind == "wave":
            args = (channels, tuple(strides), tuple(dilations), kernel_size, latent_dim, wn)
            self.encoder = Encoder(*args, rngs)
        else:
            enc_layers, dec_layers = layers
            spectral = (self.hop, channels, mlp_ratio, latent_dim)
            self.encoder = SpectralEncoder(*spectral, enc_layers, rngs)
        self.quantizer = ResidualVQ(
            num_quantizers,
            codebook_size,
            latent_dim,
            decay=ema_decay,
            dead_code_threshold=dead_code_threshold,
            kmeans_iters=kmeans_iters,
            rngs=rngs,
        )
        if kind == "wave":
            self.decoder = Decoder(*args, rngs)
        else:
            self.decoder = ISTFTDecoder(*spectral, dec_layers, rngs, phase=phase)

    def _check(self, wav: jax.Array) -> None:
        if wav.shape[-1] % self.hop:
            raise ValueError(
                f"waveform length {wav.shape[-1]} is not a multiple of the hop {self.hop}; "
                "pad or trim it to whole frames."
            )

    def sample_n_quantizers(self, rng: jax.Array) -> jax.Array:
        """Quantizer dropout: uniform in 1..n_q with probability ``quantizer_dropout``, else n_q."""
        k_use, k_n = jax.random.split(rng)
        n = jax.random.randint(k_n, (), 1, self.num_quantizers + 1)
        use = jax.random.uniform(k_use) < self.quantizer_dropout
        return jnp.where(use, n, self.num_quantizers)

    def __call__(
        self,
        wav: jax.Array,
        frame_mask: jax.Array | None = None,
        *,
        rng: jax.Array | None = None,
        train: bool = False,
        update_codebooks: bool | None = None,
        n_quantizers: jax.Array | int | None = None,
    ) -> dict[str, jax.Array]:
        """Reconstruct ``wav`` [B, N]; returns audio, z (quantized latent), codes and VQ metrics.

        ``train=True`` applies quantizer dropout (unless ``n_quantizers`` is given) and, unless
        ``update_codebooks=False``, updates the EMA codebooks in place.
        """
        self._check(wav)
        rng = jax.random.key(0) if rng is None else rng
        k_drop, k_vq = jax.random.split(rng)
        if n_quantizers is None:
            n_quantizers = self.sample_n_quantizers(k_drop) if train else self.num_quantizers
        update = train if update_codebooks is None else update_codebooks
        h = self.encoder(wav)
        z, codes, aux = self.quantizer(
            h, frame_mask, n_active=n_quantizers, rng=k_vq, update=update
        )
        return {"audio": self.decoder(z), "z": z, "codes": codes, "latent": h, **aux}

    def encode(self, wav: jax.Array, n_q: int | None = None) -> jax.Array:
        """Waveform [B, N] -> codes int32 [B, N / hop, n_q]."""
        self._check(wav)
        return self.quantizer.encode(self.encoder(wav), n_q)

    def latent(self, codes: jax.Array) -> jax.Array:
        """Codes [B, T, k] -> z = sum of the k quantized embeddings [B, T, latent_dim]."""
        return self.quantizer.decode_codes(codes)

    quantize = latent

    def decode(self, z: jax.Array) -> jax.Array:
        """Latent z [B, T, latent_dim] -> waveform [B, T * hop]."""
        return self.decoder(z)

    @property
    def codebooks(self) -> jax.Array:
        """All codebooks, [num_quantizers, codebook_size, latent_dim]."""
        return self.quantizer.codebook[...]


def neural_codec_from_config(m: Any, rngs: nnx.Rngs) -> NeuralCodec:
    """The codec that ``config.model`` (``configs/codec.py``) describes."""
    return NeuralCodec(
        channels=m.channels,
        strides=tuple(m.strides),
        dilations=tuple(m.dilations),
        kernel_size=m.kernel_size,
        latent_dim=m.latent_dim,
        num_quantizers=m.num_quantizers,
        codebook_size=m.codebook_size,
        ema_decay=m.ema_decay,
        dead_code_threshold=m.dead_code_threshold,
        kmeans_iters=m.kmeans_iters,
        quantizer_dropout=m.quantizer_dropout,
        weight_norm=m.weight_norm,
        # Absent from configs written before the spectral codec existed: the waveform codec.
        kind=m.get("kind", "wave"),
        layers=tuple(m.get("layers", (4, 8))),
        mlp_ratio=m.get("mlp_ratio", 3),
        phase=m.get("phase", "absolute"),  # absent from configs before it existed
        rngs=rngs,
    )


class CodecGAN(nnx.Module):
    """What the codec task trains: ``codec`` (generator) and ``discriminators``. A run's
    checkpoint holds this tree; inference restores its ``codec`` subtree alone."""

    def __init__(self, config: Any, rngs: nnx.Rngs):
        d = config.disc
        self.codec = neural_codec_from_config(config.model, rngs)
        self.discriminators = CodecDiscriminators(
            msd_scales=d.msd_scales,
            msd_channels=tuple(d.msd_channels),
            stft_fft_sizes=tuple(d.stft_fft_sizes),
            stft_channels=d.stft_channels,
            rngs=rngs,
        )


# Jitted entry points (one compiled program per input shape), shared by the codec's task, its
# runtime (inference/codec.py) and the latent statistics.
def _entry_point(name: str, *stages: str):
    """``nnx.jit``-ed ``fn(codec, x)``: x through the codec's methods ``stages`` in turn."""

    def fn(codec: NeuralCodec, x: jax.Array) -> jax.Array:
        for stage in stages:
            x = getattr(codec, stage)(x)
        return x

    fn.__name__ = fn.__qualname__ = name
    return nnx.jit(fn)


encode_jit = _entry_point("encode_jit", "encode")  # wav [B, N] -> codes
decode_codes_jit = _entry_point("decode_codes_jit", "latent", "decode")  # codes -> wav
latent_from_codes_jit = _entry_point("latent_from_codes_jit", "latent")  # codes -> z
decode_latent_jit = _entry_point("decode_latent_jit", "decode")  # z -> wav
latent_of_wave_jit = _entry_point("latent_of_wave_jit", "encode", "latent")  # wav -> z
