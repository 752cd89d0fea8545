"""The prior of NaturalSpeech 2: phoneme encoder, duration/pitch predictors, length regulator.

- ``PhonemeEncoder``: phoneme embedding + Transformer with convolutional feed-forward.
- ``ConvAttnPredictor``: the paper's duration (kernel 3) and pitch (kernel 5) predictors: conv
  layers (ReLU + LayerNorm + dropout) with a Q-K-V attention layer after every 3 convs whose
  keys/values are the prompt encoding. We add residual connections around each conv and attention
  (pre-norm): a plain stack of 30 convolutions trains poorly, and residuals add no parameters.
- ``length_regulate``: expand token hiddens to frames by integer durations, jit-friendly.
- ``PitchEmbedding``: quantised log-F0 bins -> embedding (see the class for why).

Targets: the duration predictor outputs log(1 + d) per token (d in codec frames, L1 in the log
domain, which treats long and short phonemes alike); the pitch predictor outputs log-F0 per frame
(natural log of Hz; unvoiced frames are already interpolated by the data pipeline).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from naturalspeech2_jax.models.transformer import (
    MultiHeadAttention,
    TransformerEncoder,
    conv1d,
    dense,
    layer_norm,
    ln,
)


class PhonemeEncoder(nnx.Module):
    """Phoneme ids [B, N] -> hiddens [B, N, dim].

    ``encoder_args``: the arguments of ``TransformerEncoder`` after ``dim`` (heads, filter_size,
    layers, kernels, dropout).
    """

    def __init__(self, vocab_size: int, dim: int, *encoder_args, rngs: nnx.Rngs, **encoder_kw):
        self.embed = nnx.Embed(
            vocab_size,
            dim,
            embedding_init=nnx.with_partitioning(
                nnx.initializers.normal(dim**-0.5), ("vocab", "embed")
            ),
            rngs=rngs,
        )
        self.encoder = TransformerEncoder(dim, *encoder_args, rngs=rngs, **encoder_kw)

    def __call__(
        self, phonemes: jax.Array, token_mask: jax.Array, *, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        x = self.embed(phonemes) * (self.embed.features**0.5)
        return self.encoder(x, token_mask, rngs=rngs)


class ConvAttnPredictor(nnx.Module):
    """Conv stack with prompt cross-attention after every ``attn_every`` convs -> scalar per step.

    Input hiddens [B, L, dim] (tokens for durations, frames for pitch), prompt encoding [B, P, dim].
    Output [B, L] (masked to 0 on padding).
    """

    def __init__(
        self,
        dim: int,
        layers: int,
        kernel: int,
        heads: int,
        attn_every: int = 3,
        dropout: float = 0.5,
        *,
        rngs: nnx.Rngs,
    ):
        self.attn_every = attn_every
        self.convs = nnx.List([conv1d(dim, dim, kernel, rngs) for _ in range(layers)])
        self.conv_norms = nnx.List([layer_norm(dim, rngs) for _ in range(layers)])
        n_attn = layers // attn_every if attn_every > 0 else 0
        self.attns = nnx.List(
            [MultiHeadAttention(dim, heads, dropout=0.0, rngs=rngs) for _ in range(n_attn)]
        )
        self.attn_norms = nnx.List([layer_norm(dim, rngs) for _ in range(n_attn)])
        self.out_norm = layer_norm(dim, rngs)
        self.out = dense(dim, 1, ("embed", None), rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array,
        prompt: jax.Array,
        prompt_mask: jax.Array,
        *,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        m = mask[..., None].astype(x.dtype)
        det = rngs is None
        x = x * m
        for i, (conv, norm) in enumerate(zip(self.convs, self.conv_norms, strict=True)):
            # Paper order conv -> ReLU -> LayerNorm -> dropout, wrapped in a residual.
            h = ln(norm, jax.nn.relu(conv(x)))
            x = (x + self.dropout(h, deterministic=det, rngs=rngs)) * m
            if self.attn_every and (i + 1) % self.attn_every == 0:
                j = (i + 1) // self.attn_every - 1
                if j < len(self.attns):
                    h = ln(self.attn_norms[j], x)
                    x = (x + self.attns[j](h, prompt, prompt_mask, rngs=rngs)) * m
        y = self.out(ln(self.out_norm, x))[..., 0]
        return y.astype(jnp.float32) * mask


def length_regulate(
    hiddens: jax.Array, durations: jax.Array, max_frames: int
) -> tuple[jax.Array, jax.Array]:
    """Expand token hiddens [B, N, C] by integer durations [B, N] to [B, max_frames, C].

    Frame f takes the token i with cum[i-1] <= f < cum[i] (``searchsorted`` on the cumulative
    durations, side='right'); frames past the total are zero and masked. Padding tokens must have
    duration 0. Fixed output shape, so it jits once per ``max_frames``. Returns (frames, mask).
    """
    durations = jnp.maximum(durations.astype(jnp.int32), 0)
    cum = jnp.cumsum(durations, axis=-1)  # [B, N]
    frames = jnp.arange(max_frames, dtype=jnp.int32)
    idx = jax.vmap(lambda c: jnp.searchsorted(c, frames, side="right"))(cum)  # [B, T]
    n = hiddens.shape[1]
    idx = jnp.clip(idx, 0, n - 1)
    out = jnp.take_along_axis(hiddens, idx[..., None], axis=1)
    mask = (frames[None] < cum[:, -1:]).astype(jnp.float32)
    return out * mask[..., None].astype(out.dtype), mask


def length_regulate_reference(
    hiddens: np.ndarray, durations: np.ndarray, max_frames: int
) -> np.ndarray:
    """NumPy reference of ``length_regulate`` (np.repeat, then pad/truncate); used in tests."""
    out = np.zeros((hiddens.shape[0], max_frames, hiddens.shape[2]), hiddens.dtype)
    for b in range(hiddens.shape[0]):
        rep = np.repeat(hiddens[b], np.maximum(durations[b], 0), axis=0)[:max_frames]
        out[b, : len(rep)] = rep
    return out


class PitchEmbedding(nnx.Module):
    """Per-frame log-F0 -> embedding added to the frame-level hiddens.

    Choice: quantise log-F0 into ``bins`` uniform bins between log(f0_min) and log(f0_max) and look
    up a learned embedding (FastSpeech 2's scheme). A table gives each pitch region its own vector
    (a conv on the raw value is nearly linear in F0), is insensitive to the scale of log-F0, and
    treats ground-truth (training) and predicted (inference) pitch identically. Values outside the
    range fall into the end bins.
    """

    def __init__(
        self,
        dim: int,
        bins: int = 256,
        f0_min: float = 40.0,
        f0_max: float = 1100.0,
        *,
        rngs: nnx.Rngs,
    ):
        self.bins = bins
        self.lo, self.hi = float(np.log(f0_min)), float(np.log(f0_max))
        self.embed = nnx.Embed(
            bins,
            dim,
            embedding_init=nnx.with_partitioning(nnx.initializers.normal(0.02), ("vocab", "embed")),
            rngs=rngs,
        )

    def quantize(self, log_f0: jax.Array) -> jax.Array:
        """Bin index in [0, bins) of each log-F0 value."""
        x = (log_f0.astype(jnp.float32) - self.lo) / (self.hi - self.lo)
        return jnp.clip(jnp.floor(x * self.bins), 0, self.bins - 1).astype(jnp.int32)

    def __call__(self, log_f0: jax.Array) -> jax.Array:
        return self.embed(self.quantize(jax.lax.stop_gradient(log_f0)))
