"""Transformer building blocks for NaturalSpeech 2: masked attention, conv feed-forward, encoder.

Everything works on [batch, length, channels] arrays with a float mask [batch, length] (1 = real,
0 = padding). Padded positions are zeroed before every convolution so that padding never leaks into
real frames through a kernel, and attention ignores padded keys. Parameters name logical axes
(``parallel.py``) so the same model shards over any mesh.

Numerics under a bf16 compute dtype: attention logits, softmax and layer-norm statistics are
computed in float32 and cast back, because bf16's 8-bit mantissa loses the small differences that
softmax and variance depend on.

The helpers here (``dense``, ``conv1d``, ``layer_norm``, ``MultiHeadAttention``) are shared by the
other NS2 modules (prior, prompt, WaveNet).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from naturalspeech2_jax.models import conv as conv_lib
from naturalspeech2_jax.models import scan as scan_lib

# Imported for its side effect: variables carry logical axis names as metadata only (the loop places
# the state on the mesh), so creating a model needs no mesh context.
from naturalspeech2_jax.parallel import ACT_EMBED, ACT_HEADS, ACT_MLP, constrain

# Logits of masked keys. Finite (not -inf) so that a row with no valid key gives a uniform softmax
# instead of NaN; such rows are then zeroed explicitly (an empty prompt under prompt dropout).
_MASK_VALUE = -1e9


def dense(
    din: int,
    dout: int,
    axes: tuple[str | None, str | None],
    rngs: nnx.Rngs,
    *,
    use_bias: bool = True,
    kernel_init=None,
) -> nnx.Linear:
    """A Linear layer whose kernel and bias carry logical axis names."""
    init = kernel_init or nnx.initializers.lecun_normal()
    return nnx.Linear(
        din,
        dout,
        use_bias=use_bias,
        kernel_init=nnx.with_partitioning(init, axes),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axes[1],)),
        rngs=rngs,
    )


def conv1d(
    cin: int,
    cout: int,
    kernel: int,
    rngs: nnx.Rngs,
    *,
    dilation: int = 1,
    out_axis: str = "embed",
    kernel_init=None,
) -> nnx.Conv:
    """A same-padded 1-D convolution over [B, T, C] with logical axes (kernel, conv_in, out)."""
    init = kernel_init or nnx.initializers.lecun_normal()
    return nnx.Conv(
        cin,
        cout,
        kernel_size=(kernel,),
        kernel_dilation=(dilation,),
        padding="SAME",
        kernel_init=nnx.with_partitioning(init, ("kernel", "conv_in", out_axis)),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (out_axis,)),
        conv_general_dilated=conv_lib.conv_general_dilated,
        rngs=rngs,
    )


def layer_norm(dim: int, rngs: nnx.Rngs, *, epsilon: float = 1e-5) -> nnx.LayerNorm:
    """LayerNorm with logical axes on scale and bias (statistics upcast in ``ln``)."""
    return nnx.LayerNorm(
        dim,
        epsilon=epsilon,
        scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ("embed",)),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("embed",)),
        rngs=rngs,
    )


def ln(norm: nnx.LayerNorm, x: jax.Array) -> jax.Array:
    """Apply a LayerNorm in float32 and return the input dtype (bf16-safe variance)."""
    return norm(x.astype(jnp.float32)).astype(x.dtype)


def sinusoidal_positions(length: int, dim: int, dtype=jnp.float32) -> jax.Array:
    """Fixed sinusoidal position encodings [length, dim] (Vaswani et al.)."""
    pos = jnp.arange(length, dtype=jnp.float32)[:, None]
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    ang = pos * freqs[None]
    enc = jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], axis=-1)
    if dim % 2:
        enc = jnp.pad(enc, ((0, 0), (0, 1)))
    return enc.astype(dtype)


class MultiHeadAttention(nnx.Module):
    """Multi-head Q-K-V attention; keys/values may come from another sequence (cross-attention).

    ``key_mask`` [B, S] marks valid keys. A query whose keys are all masked gets a zero output
    (prompt dropout for classifier-free guidance produces such empty prompts).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        kv_dim: int | None = None,
        dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        if dim % heads:
            raise ValueError(f"attention dim {dim} is not divisible by {heads} heads.")
        kv_dim = kv_dim or dim
        self.heads, self.head_dim = heads, dim // heads
        self.q = dense(dim, dim, ("embed", "heads"), rngs)
        self.k = dense(kv_dim, dim, ("embed", "heads"), rngs)
        self.v = dense(kv_dim, dim, ("embed", "heads"), rngs)
        self.o = dense(dim, dim, ("heads", "embed"), rngs)
        self.dropout = nnx.Dropout(dropout)

    def project_kv(self, kv: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keys and values [B, S, heads, head_dim]; cacheable when kv is fixed (sampling)."""
        b, s, _ = kv.shape
        k = self.k(kv).reshape(b, s, self.heads, self.head_dim)
        v = self.v(kv).reshape(b, s, self.heads, self.head_dim)
        return constrain(k, ACT_HEADS), constrain(v, ACT_HEADS)

    def attend(
        self,
        x: jax.Array,
        k: jax.Array,
        v: jax.Array,
        key_mask: jax.Array | None,
        *,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """Attention of queries from ``x`` [B, L, dim] to projected keys/values."""
        b, length, _ = x.shape
        q = constrain(self.q(x).reshape(b, length, self.heads, self.head_dim), ACT_HEADS)
        logits = jnp.einsum("blhd,bshd->bhls", q.astype(jnp.float32), k.astype(jnp.float32))
        logits = logits / math.sqrt(self.head_dim)
        if key_mask is not None:
            valid = key_mask[:, None, None, :] > 0
            logits = jnp.where(valid, logits, _MASK_VALUE)
        weights = jax.nn.softmax(logits, axis=-1)
        weights = self.dropout(weights, deterministic=rngs is None, rngs=rngs)
        out = jnp.einsum("bhls,bshd->blhd", weights.astype(v.dtype), v)
        out = self.o(out.reshape(b, length, self.heads * self.head_dim))
        if key_mask is not None:
            any_valid = (jnp.sum(key_mask, axis=-1) > 0).astype(out.dtype)
            out = out * any_valid[:, None, None]
        return out

    def __call__(
        self,
        x: jax.Array,
        kv: jax.Array,
        key_mask: jax.Array | None = None,
        *,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        k, v = self.project_kv(kv)
        return self.attend(x, k, v, key_mask, rngs=rngs)


class ConvFeedForward(nnx.Module):
    """FastSpeech-style feed-forward: conv(kernel k1) -> ReLU -> dropout -> conv(kernel k2).

    The paper's phoneme/prompt encoders replace the Transformer FFN by 1-D convolutions (filter
    2048, kernel 9). We use kernels (9, 1) as FastSpeech 2 does: with (9, 9) a 6x512 encoder has
    119M parameters, with (9, 1) 69M, matching the paper's 72M / 69M.
    """

    def __init__(
        self,
        dim: int,
        filter_size: int,
        kernels: Sequence[int] = (9, 1),
        dropout: float = 0.0,
        *,
        rngs: nnx.Rngs,
    ):
        self.conv1 = conv1d(dim, filter_size, kernels[0], rngs, out_axis="mlp")
        self.conv2 = nnx.Conv(
            filter_size,
            dim,
            kernel_size=(kernels[1],),
            padding="SAME",
            kernel_init=nnx.with_partitioning(
                nnx.initializers.lecun_normal(), ("kernel", "mlp", "embed")
            ),
            bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("embed",)),
            conv_general_dilated=conv_lib.conv_general_dilated,
            rngs=rngs,
        )
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, mask: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        m = mask[..., None].astype(x.dtype)
        h = constrain(jax.nn.relu(self.conv1(x * m)), ACT_MLP)
        h = self.dropout(h, deterministic=rngs is None, rngs=rngs)
        return self.conv2(h * m)


class EncoderLayer(nnx.Module):
    """Pre-norm Transformer layer: x + SelfAttn(LN x), then x + ConvFFN(LN x)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        filter_size: int,
        kernels: Sequence[int],
        dropout: float,
        *,
        rngs: nnx.Rngs,
    ):
        self.norm1 = layer_norm(dim, rngs)
        self.attn = MultiHeadAttention(dim, heads, dropout=dropout, rngs=rngs)
        self.norm2 = layer_norm(dim, rngs)
        self.ffn = ConvFeedForward(dim, filter_size, kernels, dropout, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, mask: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        det = rngs is None
        h = ln(self.norm1, x)
        x = x + self.dropout(self.attn(h, h, mask, rngs=rngs), deterministic=det, rngs=rngs)
        h = ln(self.norm2, x)
        x = x + self.dropout(self.ffn(h, mask, rngs=rngs), deterministic=det, rngs=rngs)
        return constrain(x * mask[..., None].astype(x.dtype), ACT_EMBED)


class TransformerEncoder(nnx.Module):
    """A stack of ``EncoderLayer`` with sinusoidal positions and a final LayerNorm.

    ``scan``: the layers are one stacked module applied by ``jax.lax.scan`` (``scan.py``), else
    ``layers/0``, ``layers/1``, ... looped over; ``remat``: "none", "dots_saveable" or "full".
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        filter_size: int,
        layers: int,
        kernels: Sequence[int] = (9, 1),
        dropout: float = 0.0,
        *,
        scan: bool = True,
        remat: str = "none",
        rngs: nnx.Rngs,
    ):
        self.dim, self.n_layers = dim, layers
        self.scan, self.remat = bool(scan and layers > 0), scan_lib.check_remat(remat)

        def make(r: nnx.Rngs) -> EncoderLayer:
            return EncoderLayer(dim, heads, filter_size, kernels, dropout, rngs=r)

        if self.scan:
            self.layers = scan_lib.stack(make, layers, rngs)
        else:
            self.layers = nnx.List([make(rngs) for _ in range(layers)])
        self.norm = layer_norm(dim, rngs)

    def layout(self) -> list:
        """Stacked ``layers/<leaf>`` [n, ...] <-> unrolled ``layers/<i>/<leaf>`` (``scan.py``)."""
        return [(("layers",), [("layers", i) for i in range(self.n_layers)])]

    def __call__(self, x: jax.Array, mask: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = x + sinusoidal_positions(x.shape[1], self.dim, x.dtype)[None]
        x = constrain(x * mask[..., None].astype(x.dtype), ACT_EMBED)

        def body(layer: EncoderLayer, x: jax.Array, _, r: nnx.Rngs | None):
            return layer(x, mask, rngs=r), None

        x, _ = scan_lib.run(body, x, self.layers, rngs=rngs, remat=self.remat)
        return ln(self.norm, x) * mask[..., None].astype(x.dtype)
