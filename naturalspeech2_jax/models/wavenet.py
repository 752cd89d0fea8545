"""The diffusion denoiser: a WaveNet with FiLM from attention to the prompt query tokens.

Per layer (DiffWave-style): x + time projection -> dilated conv (kernel 3) to 2 x hidden, plus the
projected frame-level condition (phoneme hiddens + pitch embedding from the prior) -> gated
activation tanh(a) * sigmoid(b) -> dropout -> 1x1 conv to (residual, skip). Every ``film_every``
layers a FiLM block lets the hidden attend (Q-K-V, 8 heads) to the m query outputs of the prompt
and modulates it: x * (1 + gamma) + beta. The skips are summed and projected to the clean latent
z0_hat (the network predicts z0, not the noise: paper).

Sampling calls the denoiser 150 times with the same condition and prompt, so everything that does
not depend on (z_t, t) — the per-layer condition projections and the FiLM keys/values — is
computed once by ``prepare`` and reused by ``denoise``; ``__call__`` is the two together.

Parameter budget of the paper preset (183M in the paper): 40 layers of hidden 512 with 1x1
condition convs make 137M; we reach 181M with a condition conv of kernel 3 (``cond_kernel``),
which also lets each layer see the neighbouring frames of the prior's hiddens. See ns2.py.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from naturalspeech2_jax.models import conv as conv_lib
from naturalspeech2_jax.models import scan as scan_lib
from naturalspeech2_jax.models.transformer import (
    MultiHeadAttention,
    conv1d,
    dense,
    layer_norm,
    ln,
)
from naturalspeech2_jax.parallel import ACT_EMBED, ACT_MLP, constrain


def timestep_embedding(t: jax.Array, dim: int, scale: float = 1000.0) -> jax.Array:
    """Sinusoidal embedding [B, dim] of diffusion times t in [0, 1] (scaled like DDPM steps)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    ang = (t.astype(jnp.float32) * scale)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


class WaveNetLayer(nnx.Module):
    """One gated dilated-conv residual layer; returns (residual output, skip)."""

    def __init__(
        self,
        dim: int,
        cond_dim: int,
        kernel: int,
        dilation: int,
        cond_kernel: int,
        dropout: float,
        *,
        rngs: nnx.Rngs,
    ):
        self.time = dense(dim, dim, ("embed", "mlp"), rngs)
        self.dilated = conv1d(dim, 2 * dim, kernel, rngs, dilation=dilation, out_axis="mlp")
        self.cond = conv1d(cond_dim, 2 * dim, cond_kernel, rngs, out_axis="mlp")
        self.out = nnx.Conv(
            dim,
            2 * dim,
            kernel_size=(1,),
            kernel_init=nnx.with_partitioning(
                nnx.initializers.lecun_normal(), ("kernel", "embed", "mlp")
            ),
            bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("mlp",)),
            conv_general_dilated=conv_lib.conv_general_dilated,
            rngs=rngs,
        )
        self.dropout = nnx.Dropout(dropout)
        self.dim = dim

    def __call__(
        self,
        x: jax.Array,
        temb: jax.Array,
        cond_proj: jax.Array,
        m: jax.Array,
        *,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        y = (x + self.time(temb)[:, None]) * m
        y = constrain(self.dilated(y) + cond_proj, ACT_MLP)
        a, b = jnp.split(y, 2, axis=-1)
        g = jnp.tanh(a) * jax.nn.sigmoid(b)
        g = self.dropout(g, deterministic=rngs is None, rngs=rngs)
        res, skip = jnp.split(self.out(g), 2, axis=-1)
        return constrain((x + res) * (m / math.sqrt(2.0)), ACT_EMBED), skip


class FiLMAttention(nnx.Module):
    """Attend to the m prompt query outputs and modulate the hidden: x * (1 + gamma) + beta.

    The FiLM projection starts at zero, so every block is the identity at initialisation.
    """

    def __init__(self, dim: int, heads: int, *, kv_dim: int | None = None, rngs: nnx.Rngs):
        self.norm = layer_norm(dim, rngs)
        self.attn = MultiHeadAttention(dim, heads, kv_dim=kv_dim, rngs=rngs)
        self.film = dense(
            dim, 2 * dim, ("embed", "mlp"), rngs, kernel_init=jax.nn.initializers.zeros
        )

    def __call__(
        self,
        x: jax.Array,
        k: jax.Array,
        v: jax.Array,
        query_mask: jax.Array | None,
        m: jax.Array,
    ) -> jax.Array:
        h = self.attn.attend(ln(self.norm, x), k, v, query_mask)
        gamma, beta = jnp.split(self.film(h), 2, axis=-1)
        return (x * (1.0 + gamma) + beta) * m


def _dilation(position: int, cycle: int) -> int:
    return 2 ** (position % cycle) if cycle > 0 else 1


class WaveNetBlock(nnx.Module):
    """Consecutive WaveNet layers and the FiLM block after every ``film_every``-th of them.

    The repeated unit of ``WaveNetDenoiser``: lcm(dilation cycle, FiLM period) layers, so that
    layer ``p`` of every block has the same dilation and the same FiLM position.
    """

    def __init__(
        self,
        layers: Sequence[WaveNetLayer],
        films: Sequence[FiLMAttention],
        film_every: int,
    ):
        self.layers, self.films, self.film_every = nnx.List(layers), nnx.List(films), film_every

    @classmethod
    def create(cls, n: int, dim: int, cond_dim: int, *, kernel: int, dilation_cycle: int,
               cond_kernel: int, film_every: int, heads: int, query_dim: int | None,
               dropout: float, rngs: nnx.Rngs) -> WaveNetBlock:  # fmt: skip
        """``n`` layers (dilations from position 0 of the cycle) and their FiLM blocks."""
        layers = [
            WaveNetLayer(dim, cond_dim, kernel, _dilation(p, dilation_cycle), cond_kernel,
                         dropout, rngs=rngs)
            for p in range(n)
        ]  # fmt: skip
        n_film = n // film_every if film_every > 0 else 0
        films = [FiLMAttention(dim, heads, kv_dim=query_dim, rngs=rngs) for _ in range(n_film)]
        return cls(layers, films, film_every)

    def prepare_cond(self, c: jax.Array) -> tuple[jax.Array, ...]:
        """Each layer's condition projection [B, T, 2 dim] of the masked condition ``c``."""
        return tuple(layer.cond(c) for layer in self.layers)

    def prepare_kv(self, queries: jax.Array) -> tuple[tuple[jax.Array, jax.Array], ...]:
        """Each FiLM block's keys and values of the prompt query outputs."""
        return tuple(film.attn.project_kv(queries) for film in self.films)

    def __call__(
        self,
        x: jax.Array,
        skips: jax.Array,
        temb: jax.Array,
        conds: Sequence[jax.Array],
        kvs: Sequence[tuple[jax.Array, jax.Array]],
        query_mask: jax.Array | None,
        m: jax.Array,
        *,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        for p, layer in enumerate(self.layers):
            x, skip = layer(x, temb, conds[p], m, rngs=rngs)
            skips = skips + skip
            if self.film_every and (p + 1) % self.film_every == 0:
                j = (p + 1) // self.film_every - 1
                k, v = kvs[j]
                x = self.films[j](x, k, v, query_mask, m)
        return x, skips


class WaveNetDenoiser(nnx.Module):
    """(z_t [B, T, latent], t [B], condition [B, T, cond_dim], queries [B, m, dim]) -> z0_hat.

    The layers are ``layers // P`` blocks of P = lcm(dilation_cycle, film_every) layers
    (``WaveNetBlock``) and a tail block of the remaining ``layers % P``. ``scan``: the blocks are
    one stacked module (``blocks``, ``tail``) applied by ``jax.lax.scan``, else the per-layer
    lists ``layers`` and ``films`` looped over (with fewer than P layers there is nothing to
    scan: the lists); ``remat``: "none", "dots_saveable" or "full" (``scan.py``).
    """

    def __init__(
        self,
        latent_dim: int,
        dim: int,
        layers: int,
        cond_dim: int,
        *,
        kernel: int = 3,
        dilation_cycle: int = 2,
        cond_kernel: int = 1,
        film_every: int = 3,
        heads: int = 8,
        query_dim: int | None = None,
        dropout: float = 0.2,
        scan: bool = True,
        remat: str = "none",
        rngs: nnx.Rngs,
    ):
        self.dim, self.film_every, self.n_layers = dim, film_every, layers
        self.period = math.lcm(max(dilation_cycle, 1), max(film_every, 1))
        self.n_blocks, self.n_tail = divmod(layers, self.period)
        self.scan, self.remat = bool(scan and self.n_blocks), scan_lib.check_remat(remat)
        self.in_proj = dense(latent_dim, dim, ("conv_in", "embed"), rngs)
        self.time_in = dense(dim, 4 * dim, ("embed", "mlp"), rngs)
        self.time_out = dense(4 * dim, dim, ("mlp", "embed"), rngs)
        block = functools.partial(
            WaveNetBlock.create, dim=dim, cond_dim=cond_dim, kernel=kernel,
            dilation_cycle=dilation_cycle, cond_kernel=cond_kernel, film_every=film_every,
            heads=heads, query_dim=query_dim, dropout=dropout,
        )  # fmt: skip
        if self.scan:
            self.blocks = scan_lib.stack(lambda r: block(self.period, rngs=r), self.n_blocks, rngs)
            self.tail = block(self.n_tail, rngs=rngs) if self.n_tail else None
        else:
            self.layers = nnx.List([
                WaveNetLayer(dim, cond_dim, kernel, _dilation(i, dilation_cycle), cond_kernel,
                             dropout, rngs=rngs)
                for i in range(layers)
            ])  # fmt: skip
            n_film = layers // film_every if film_every > 0 else 0
            self.films = nnx.List(
                [FiLMAttention(dim, heads, kv_dim=query_dim, rngs=rngs) for _ in range(n_film)]
            )
        self.skip_proj = dense(dim, dim, ("embed", "mlp"), rngs)
        self.out = dense(
            dim, latent_dim, ("mlp", "conv_in"), rngs, kernel_init=jax.nn.initializers.zeros
        )

    @property
    def films_per_block(self) -> int:
        return self.period // self.film_every if self.film_every > 0 else 0

    def layout(self) -> list:
        """Stacked ``blocks``/``tail`` <-> the unrolled ``layers``/``films`` (``scan.py``)."""
        if not self.n_blocks:
            return []
        p, n, f = self.period, self.n_blocks, self.films_per_block
        out: list = [(("blocks", "layers", i), [("layers", r * p + i) for r in range(n)])
                     for i in range(p)]  # fmt: skip
        out += [(("blocks", "films", j), [("films", r * f + j) for r in range(n)])
                for j in range(f)]  # fmt: skip
        out += [(("tail", "layers", i), ("layers", n * p + i)) for i in range(self.n_tail)]
        tail_films = self.n_tail // self.film_every if self.film_every > 0 else 0
        out += [(("tail", "films", j), ("films", n * f + j)) for j in range(tail_films)]
        return out

    def _stack(self) -> tuple[Any, WaveNetBlock | None]:
        """(the repeated blocks: stacked or a list, the tail block or None)."""
        if self.scan:
            return self.blocks, self.tail
        p, n, f = self.period, self.n_blocks, self.films_per_block
        layers, films = list(self.layers), list(self.films)
        blocks = [
            WaveNetBlock(layers[r * p : (r + 1) * p], films[r * f : (r + 1) * f], self.film_every)
            for r in range(n)
        ]
        tail = WaveNetBlock(layers[n * p :], films[n * f :], self.film_every)
        return blocks, tail if self.n_tail else None

    def _per_block(self, fn) -> tuple[Any, Any]:
        """(``fn`` of every repeated block: stacked or a list, ``fn`` of the tail or None)."""
        blocks, tail = self._stack()
        _, ys = scan_lib.run(lambda b, c, x, r: (c, fn(b)), None, blocks)
        return ys, None if tail is None else fn(tail)

    def prepare_kv(self, queries: jax.Array) -> tuple[Any, Any]:
        """The FiLM keys/values of every block (the ``kv`` of a ``prepare`` cache)."""
        return self._per_block(lambda b: b.prepare_kv(queries))

    def prepare(
        self,
        cond: jax.Array,
        mask: jax.Array,
        queries: jax.Array,
        query_mask: jax.Array | None = None,
    ) -> dict:
        """Everything independent of (z_t, t): per-layer condition projections, FiLM keys/values
        (stacked along a leading block axis when scanned)."""
        # In the compute dtype of the (cast) parameters: a float32 condition would promote the
        # residual stream, which a scanned stack's carry cannot change dtype to.
        dtype = self.in_proj.kernel[...].dtype
        c = (cond * mask[..., None].astype(cond.dtype)).astype(dtype)
        return {
            "cond": self._per_block(lambda b: b.prepare_cond(c)),
            "kv": self.prepare_kv(queries.astype(dtype)),
            "query_mask": query_mask,
        }

    def denoise(
        self,
        z_t: jax.Array,
        t: jax.Array,
        mask: jax.Array,
        cache: dict,
        *,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """z0_hat [B, T, latent] from a ``prepare``d condition."""
        m = mask[..., None].astype(z_t.dtype)
        x = constrain(self.in_proj(z_t) * m, ACT_EMBED)
        temb = timestep_embedding(t, self.dim).astype(x.dtype)
        temb = self.time_out(jax.nn.silu(self.time_in(temb)))
        query_mask = cache["query_mask"]

        def body(block: WaveNetBlock, carry, xs, r: nnx.Rngs | None):
            conds, kvs = xs
            return block(*carry, temb, conds, kvs, query_mask, m, rngs=r), None

        (cond, tail_cond), (kv, tail_kv) = cache["cond"], cache["kv"]
        blocks, tail = self._stack()
        carry = (x, jnp.zeros_like(x))
        xs = scan_lib.zip_xs(cond, kv)
        carry, _ = scan_lib.run(body, carry, blocks, xs, rngs=rngs, remat=self.remat)
        if tail is not None:
            xs = [(tail_cond, tail_kv)]
            carry, _ = scan_lib.run(body, carry, [tail], xs, rngs=rngs, remat=self.remat)
        h = jax.nn.relu(carry[1] / math.sqrt(self.n_layers))
        h = jax.nn.relu(self.skip_proj(h))
        return self.out(h) * m

    def __call__(
        self,
        z_t: jax.Array,
        t: jax.Array,
        mask: jax.Array,
        cond: jax.Array,
        queries: jax.Array,
        query_mask: jax.Array | None = None,
        *,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        cache = self.prepare(cond, mask, queries, query_mask)
        return self.denoise(z_t, t, mask, cache, rngs=rngs)
