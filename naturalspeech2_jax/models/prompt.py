"""Speech prompt modules: prompt encoder and the m learned query tokens.

The prompt encoder is a Transformer like the phoneme encoder, over the (normalised) prompt latents.
The duration/pitch predictors attend to its output directly. The diffusion model does not: m = 32
learned query vectors first attend to the prompt encoding (``QueryAttention``), and the WaveNet
attends to those m outputs (paper: attending directly hurt, and without a prompt the diffusion
model did not converge).
"""

from __future__ import annotations

import jax
from flax import nnx

from naturalspeech2_jax.models.transformer import (
    MultiHeadAttention,
    TransformerEncoder,
    dense,
    layer_norm,
    ln,
)


class PromptEncoder(nnx.Module):
    """Prompt latents [B, P, latent_dim] -> prompt encoding [B, P, dim].

    ``encoder_args``: the arguments of ``TransformerEncoder`` after ``dim`` (heads, filter_size,
    layers, kernels, dropout).
    """

    def __init__(self, latent_dim: int, dim: int, *encoder_args, rngs: nnx.Rngs, **encoder_kw):
        self.proj = dense(latent_dim, dim, ("conv_in", "embed"), rngs)
        self.encoder = TransformerEncoder(dim, *encoder_args, rngs=rngs, **encoder_kw)

    def __call__(
        self, latent: jax.Array, mask: jax.Array, *, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        return self.encoder(self.proj(latent), mask, rngs=rngs)


class QueryAttention(nnx.Module):
    """m learned queries attend to the prompt encoding: [B, P, dim] -> [B, m, dim].

    queries + Attn(LN queries, prompt), then a LayerNorm. With an empty prompt (prompt dropout for
    classifier-free guidance) the attention contributes zero and the output is the bare queries,
    which is the "unconditional" prompt the diffusion model learns.
    """

    def __init__(self, num_queries: int, dim: int, heads: int, *, rngs: nnx.Rngs):
        self.queries = nnx.Param(
            nnx.with_partitioning(nnx.initializers.normal(0.02), ("queries", "embed"))(
                rngs.params(), (num_queries, dim)
            )
        )
        self.norm_q = layer_norm(dim, rngs)
        self.attn = MultiHeadAttention(dim, heads, rngs=rngs)
        self.norm_out = layer_norm(dim, rngs)

    def __call__(
        self, prompt: jax.Array, prompt_mask: jax.Array, *, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        q = jax.numpy.broadcast_to(
            self.queries[...].astype(prompt.dtype), (prompt.shape[0], *self.queries.shape)
        )
        x = q + self.attn(ln(self.norm_q, q), prompt, prompt_mask, rngs=rngs)
        return ln(self.norm_out, x)
