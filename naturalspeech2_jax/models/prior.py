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

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from naturalspeech2_jax.models import scan as scan_lib
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
        # In the embedding's own dtype: nnx.Embed promotes to its construction-time float32,
        # which would run a bf16-cast model's whole encoder in float32.
        table = self.embed.embedding[...]
        x = jnp.take(table, phonemes, axis=0) * jnp.asarray(self.embed.features**0.5, table.dtype)
        return self.encoder(x, token_mask, rngs=rngs)


class PredictorBlock(nnx.Module):
    """``len(convs)`` residual convs, then (with ``attn``) a residual attention to the prompt.

    Paper order conv -> ReLU -> LayerNorm -> dropout, each wrapped in a residual (pre-norm for
    the attention). The repeated unit of ``ConvAttnPredictor``.
    """

    def __init__(
        self,
        convs: Sequence[nnx.Conv],
        conv_norms: Sequence[nnx.LayerNorm],
        attn: MultiHeadAttention | None,
        attn_norm: nnx.LayerNorm | None,
        dropout: float,
    ):
        self.convs, self.conv_norms = nnx.List(convs), nnx.List(conv_norms)
        self.attn, self.attn_norm = attn, attn_norm
        self.dropout = nnx.Dropout(dropout)

    @classmethod
    def create(
        cls, dim: int, convs: int, kernel: int, heads: int, attn: bool, dropout: float, rngs
    ) -> PredictorBlock:
        return cls(
            [conv1d(dim, dim, kernel, rngs) for _ in range(convs)],
            [layer_norm(dim, rngs) for _ in range(convs)],
            MultiHeadAttention(dim, heads, dropout=0.0, rngs=rngs) if attn else None,
            layer_norm(dim, rngs) if attn else None,
            dropout,
        )

    def __call__(
        self,
        x: jax.Array,
        m: jax.Array,
        prompt: jax.Array,
        prompt_mask: jax.Array,
        *,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        for conv, norm in zip(self.convs, self.conv_norms, strict=True):
            h = ln(norm, jax.nn.relu(conv(x)))
            x = (x + self.dropout(h, deterministic=rngs is None, rngs=rngs)) * m
        if self.attn is not None:
            h = ln(self.attn_norm, x)
            x = (x + self.attn(h, prompt, prompt_mask, rngs=rngs)) * m
        return x


class ConvAttnPredictor(nnx.Module):
    """Conv stack with prompt cross-attention after every ``attn_every`` convs -> scalar per step.

    Input hiddens [B, L, dim] (tokens for durations, frames for pitch), prompt encoding [B, P, dim].
    Output [B, L] (masked to 0 on padding). The stack is ``layers // attn_every`` blocks of
    ``attn_every`` convs and one attention (``PredictorBlock``), plus a tail of the remaining
    convs. ``scan``: the blocks are one stacked module (``blocks``, ``tail``) applied by
    ``jax.lax.scan``, else the per-layer lists ``convs``, ``conv_norms``, ``attns`` and
    ``attn_norms`` looped over; ``remat``: "none", "dots_saveable" or "full" (``scan.py``).
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
        scan: bool = True,
        remat: str = "none",
        rngs: nnx.Rngs,
    ):
        self.attn_every, self.n_layers, self.dropout_rate = attn_every, layers, dropout
        self.period = attn_every if attn_every > 0 else 1
        self.n_blocks, self.n_tail = divmod(layers, self.period)
        self.scan, self.remat = bool(scan and self.n_blocks), scan_lib.check_remat(remat)
        has_attn = attn_every > 0
        if self.scan:
            self.blocks = scan_lib.stack(
                lambda r: PredictorBlock.create(dim, self.period, kernel, heads, has_attn,
                                                dropout, r),
                self.n_blocks, rngs,
            )  # fmt: skip
            self.tail = (
                PredictorBlock.create(dim, self.n_tail, kernel, heads, False, dropout, rngs)
                if self.n_tail
                else None
            )
        else:
            self.convs = nnx.List([conv1d(dim, dim, kernel, rngs) for _ in range(layers)])
            self.conv_norms = nnx.List([layer_norm(dim, rngs) for _ in range(layers)])
            n_attn = self.n_blocks if has_attn else 0
            self.attns = nnx.List(
                [MultiHeadAttention(dim, heads, dropout=0.0, rngs=rngs) for _ in range(n_attn)]
            )
            self.attn_norms = nnx.List([layer_norm(dim, rngs) for _ in range(n_attn)])
        self.out_norm = layer_norm(dim, rngs)
        self.out = dense(dim, 1, ("embed", None), rngs)

    def layout(self) -> list:
        """Stacked ``blocks``/``tail`` <-> the unrolled per-layer lists (``scan.py``)."""
        if not self.n_blocks:
            return []
        p, n = self.period, self.n_blocks
        out: list = []
        for i in range(p):
            for name in ("convs", "conv_norms"):
                out.append((("blocks", name, i), [(name, r * p + i) for r in range(n)]))
        if self.attn_every > 0:
            out.append((("blocks", "attn"), [("attns", r) for r in range(n)]))
            out.append((("blocks", "attn_norm"), [("attn_norms", r) for r in range(n)]))
        for i in range(self.n_tail):
            for name in ("convs", "conv_norms"):
                out.append((("tail", name, i), (name, n * p + i)))
        return out

    def _stack(self) -> tuple[Any, PredictorBlock | None]:
        """(the repeated blocks: stacked or a list, the tail block or None)."""
        if self.scan:
            return self.blocks, self.tail
        p, n = self.period, self.n_blocks
        convs, norms = list(self.convs), list(self.conv_norms)

        def block(lo: int, hi: int, r: int | None) -> PredictorBlock:
            attn = None if r is None or not len(self.attns) else self.attns[r]
            attn_norm = None if attn is None else self.attn_norms[r]
            return PredictorBlock(convs[lo:hi], norms[lo:hi], attn, attn_norm, self.dropout_rate)

        blocks = [block(r * p, (r + 1) * p, r) for r in range(n)]
        return blocks, block(n * p, n * p + self.n_tail, None) if self.n_tail else None

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

        def body(block: PredictorBlock, x: jax.Array, _, r: nnx.Rngs | None):
            return block(x, m, prompt, prompt_mask, rngs=r), None

        blocks, tail = self._stack()
        x, _ = scan_lib.run(body, x * m, blocks, rngs=rngs, remat=self.remat)
        if tail is not None:
            x, _ = scan_lib.run(body, x, [tail], rngs=rngs, remat=self.remat)
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
