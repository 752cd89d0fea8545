"""Losses and training-target construction for NaturalSpeech 2 (pure functions, jittable).

Loss (paper): ||z0_hat - z0||^2 + ||score(z0_hat) - score_true||^2 + 0.1 CE-RVQ, plus L1 duration
and L1 pitch for the prior.

Score term. With z_t = alpha z0 + sigma eps, the score implied by an x0 prediction differs from the
true score by alpha / sigma^2 (z0_hat - z0), so the paper's term is the data term re-weighted by
w(t) = alpha_t^2 / sigma_t^4, which explodes as t -> 0 (w ~ 4e8 at t = 1e-3). Our choice: keep
the paper's term but cap its weight, w(t) = min(alpha^2 / sigma^4, ``score_weight_cap``), default
cap 1 (reached for t < ~0.3 with beta in [0.05, 20]): the score term then never outweighs the
data term, and for large t it adds the paper's emphasis on noisy inputs. t is drawn uniformly
from [t_min, 1] (t_min = 1e-3) as well, so sigma never reaches 0 anywhere.

Normalisation. Latents are normalised per channel, (z - mean) / std, before diffusion (codec
latents can span +-40); CE-RVQ compares the de-normalised z0_hat with the real codebooks.

Prompt. ``cut_prompt`` cuts the prompt at phoneme boundaries (see its docstring).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from naturalspeech2_jax.diffusion.sde import VPSDE, expand_like

FRAME_KEYS = ("latent", "log_f0", "voiced", "codes")
TOKEN_KEYS = ("phonemes", "durations")


def latents_from_codes(codes: jax.Array, codebooks: jax.Array) -> jax.Array:
    """z = sum_j codebooks[j, codes[..., j]]: codes [B, T, R], codebooks [R, K, D] -> [B, T, D]."""
    # One gather and add per quantizer, which XLA fuses into one loop. Gathering [B, T, R, D]
    # and summing over R instead took 150 ms per bench44m step on XLA:CPU (its reduction over a
    # non-minor axis is slow), 3 ms this way.
    r = codebooks.shape[0]
    codes = codes[..., :r].astype(jnp.int32)
    if r == 0:
        return jnp.zeros((*codes.shape[:-1], codebooks.shape[-1]), jnp.float32)
    z = codebooks[0].astype(jnp.float32)[codes[..., 0]]
    for j in range(1, r):
        z = z + codebooks[j].astype(jnp.float32)[codes[..., j]]
    return z


def normalize(z: jax.Array, stats: Mapping[str, jax.Array]) -> jax.Array:
    return (z - stats["mean"]) / stats["std"]


def denormalize(z: jax.Array, stats: Mapping[str, jax.Array]) -> jax.Array:
    return z * stats["std"] + stats["mean"]


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of x [B, T, ...] over positions where mask [B, T] is 1 (and over trailing dims)."""
    x = x.astype(jnp.float32)
    m = mask.astype(jnp.float32).reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
    per = x.size // (mask.size) if mask.size else 1
    return jnp.sum(x * m) / jnp.maximum(jnp.sum(mask) * per, 1.0)


def score_weight(sde: VPSDE, t: jax.Array, cap: float) -> jax.Array:
    """min(alpha_t^2 / sigma_t^4, cap): the re-weighting that turns the data term into the score
    term (module docstring)."""
    alpha, sigma = sde.alpha_sigma(t)
    return jnp.minimum(alpha**2 / jnp.maximum(sigma**4, 1e-20), cap)


def diffusion_terms(
    z0_hat: jax.Array,
    z0: jax.Array,
    t: jax.Array,
    mask: jax.Array,
    sde: VPSDE,
    score_weight_cap: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """(data term, score term), both masked means of squared errors per latent element."""
    sq = jnp.square(z0_hat.astype(jnp.float32) - z0.astype(jnp.float32))
    data = masked_mean(sq, mask)
    w = score_weight(sde, t, score_weight_cap)
    score = masked_mean(expand_like(w, sq) * sq, mask)
    return data, score


def ce_rvq_loss(
    z0_hat: jax.Array, codes: jax.Array, codebooks: jax.Array, mask: jax.Array
) -> jax.Array:
    """Cross-entropy RVQ loss: mean over quantizers j and valid frames of CE(logits_j, code_j).

    z0_hat [B, T, D] de-normalised; codes [B, T, R]; codebooks [R, K, D]; mask [B, T].
    r_j = z0_hat - sum_{i<j} e_i with e_i the ground-truth quantized embeddings and
    logits_j = -||r_j - c_jk||^2. Expanding the square, ||r_j||^2 is the same for every code k and
    cancels in the softmax, so we use 2 r_j.c_jk - ||c_jk||^2: identical loss, no [.., K, D] tensor.
    Computed in float32 (logits of large latents).

    Speed (the logits are the step's largest tensor, B T R K): they are made in the [R, B T, K]
    layout the batched matmul produces (no transpose of them), only their log-sum-exp is kept,
    and the true code's logit comes from the gathered embeddings, 2 r_j.e_j - ||e_j||^2, instead of
    a gather from the logits (whose gradient would be a scatter as large as the logits).
    """
    codebooks = jax.lax.stop_gradient(codebooks.astype(jnp.float32))
    r = codebooks.shape[0]
    codes = codes[..., :r].astype(jnp.int32)
    emb = jax.vmap(lambda cb, c: cb[c], in_axes=(0, -1), out_axes=-2)(codebooks, codes)
    prefix = jnp.cumsum(emb, axis=-2) - emb  # sum_{i<j} e_i, [B, T, R, D]
    resid = z0_hat.astype(jnp.float32)[..., None, :] - prefix
    b, t, _, d = resid.shape
    per_q = jnp.transpose(resid.reshape(b * t, r, d), (1, 0, 2))  # [R, BT, D]
    logits = 2.0 * jnp.einsum("rnd,rkd->rnk", per_q, codebooks)
    logits = logits - jnp.sum(codebooks**2, axis=-1)[:, None, :]
    lse = jax.nn.logsumexp(logits, axis=-1).T.reshape(b, t, r)
    true = 2.0 * jnp.sum(resid * emb, axis=-1) - jnp.sum(emb**2, axis=-1)
    return masked_mean(lse - true, mask)


def sample_frames(
    rng: jax.Array, n: int, z: jax.Array, codes: jax.Array, mask: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``n`` random valid frames per row of (z [B, T, D], codes [B, T, R], mask [B, T]), without
    replacement; rows with fewer valid frames keep them all (the rest masked). n <= 0 or n >= T:
    everything unchanged. The masked mean of a per-frame loss over the subset is an unbiased
    estimate of its mean over all valid frames (per row)."""
    if n <= 0 or n >= mask.shape[1]:
        return z, codes, mask
    keys = jax.random.uniform(rng, mask.shape) + 2.0 * (mask <= 0)  # valid frames sort first
    idx = jnp.argsort(keys, axis=1)[:, :n]
    take = lambda x: jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)
    return take(z), take(codes), take(mask)


def duration_loss(log_dur_pred: jax.Array, durations: jax.Array, token_mask: jax.Array):
    """L1 between predicted log(1 + d) and log(1 + d_true), over valid tokens."""
    target = jnp.log1p(durations.astype(jnp.float32))
    return masked_mean(jnp.abs(log_dur_pred.astype(jnp.float32) - target), token_mask)


def pitch_loss(log_f0_pred: jax.Array, log_f0: jax.Array, frame_mask: jax.Array):
    """L1 on per-frame log-F0 over valid frames."""
    return masked_mean(jnp.abs(log_f0_pred.astype(jnp.float32) - log_f0), frame_mask)


def _gather_frames(x: jax.Array, idx: jax.Array, valid: jax.Array) -> jax.Array:
    """x [B, T, ...] gathered at idx [B, T'] along time; invalid positions zero."""
    idx = jnp.clip(idx, 0, x.shape[1] - 1)
    ix = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    out = jnp.take_along_axis(x, ix, axis=1)
    return jnp.where(valid.reshape(valid.shape + (1,) * (x.ndim - 2)), out, jnp.zeros_like(out))


def cut_prompt(
    batch: Mapping[str, jax.Array],
    rng: jax.Array,
    min_frames: int,
    max_frames: int,
    *,
    max_ratio: float = 0.5,
    drop_prob: float = 0.0,
    frame_keys: Sequence[str] = FRAME_KEYS,
    token_keys: Sequence[str] = TOKEN_KEYS,
) -> dict[str, jax.Array]:
    """Cut a random segment of whole phonemes out of each utterance as its speech prompt.

    The prompt is frames [u, v) where u and v are phoneme boundaries (u = cum[a-1], v = cum[b] for
    tokens [a, b)); the target is frames [0, u) ++ [v, T) with tokens [0, a) ++ [b, N). Cutting at
    token boundaries keeps the invariant sum(target durations) == target frames exactly, so the
    length regulator, the pitch and the latent stay aligned. The phoneme side is cut too: at
    inference the text describes only the target (the prompt comes from another utterance).

    Length: a target L ~ U[min_frames, max_frames], capped at ``max_ratio`` of the utterance so a
    target always remains; the segment starts at the phoneme boundary at or before a uniform random
    frame and extends by whole tokens until it holds >= L frames (so it may exceed L by less than
    one token). Prompt arrays have ``max_frames`` frames; a longer segment (one very long token)
    is truncated in the prompt only (the target still excludes all of it).

    Inputs: ``frame_mask`` [B, T], ``token_mask`` [B, N], ``durations`` [B, N] and any present
    ``frame_keys`` [B, T, ...] / ``token_keys`` [B, N]. Output: the same keys for the target
    (same shapes, compacted to the front, re-masked), ``prompt_<key>`` [B, max_frames, ...] for
    frame keys, ``prompt_mask`` [B, max_frames] (all zero with probability ``drop_prob``: prompt
    dropout), and ``prompt_start``/``prompt_frames``/``prompt_tokens`` [B] for inspection.
    """
    k_len, k_start, k_drop = jax.random.split(rng, 3)
    frame_mask, token_mask = batch["frame_mask"], batch["token_mask"]
    b, t_len = frame_mask.shape
    n_tok = token_mask.shape[1]
    dur = (batch["durations"] * (token_mask > 0)).astype(jnp.int32)
    cum = jnp.cumsum(dur, axis=-1)  # token i covers frames [cum[i]-dur[i], cum[i])
    n_frames = cum[:, -1]

    want = jax.random.randint(k_len, (b,), min_frames, max_frames + 1)
    want = jnp.maximum(jnp.minimum(want, jnp.floor(n_frames * max_ratio).astype(jnp.int32)), 1)
    start_frame = jax.random.randint(k_start, (b,), 0, 1 << 30) % jnp.maximum(
        n_frames - want + 1, 1
    )
    # a = the token holding start_frame (token i starts at cum[i] - dur[i]); u <= start_frame, so
    # u + want <= n_frames and the segment fits.
    starts = cum - dur
    a = jax.vmap(lambda s, f: jnp.searchsorted(s, f, side="right"))(starts, start_frame) - 1
    a = jnp.clip(a, 0, n_tok - 1)
    u = jnp.take_along_axis(starts, a[:, None], axis=1)[:, 0]
    # b = first token end with cum[b-1] >= u + want; tokens [a, b).
    bnd = jax.vmap(lambda c, f: jnp.searchsorted(c, f, side="left"))(cum, u + want) + 1
    n_valid_tok = jnp.sum(token_mask > 0, axis=-1).astype(jnp.int32)
    bnd = jnp.clip(bnd, a + 1, jnp.maximum(n_valid_tok, a + 1))
    v = jnp.take_along_axis(cum, (bnd - 1)[:, None], axis=1)[:, 0]
    cut = v - u
    cut_tok = bnd - a

    out: dict[str, jax.Array] = {}
    # Target frames: position f' reads source f' (< u) or f' + cut (>= u).
    fpos = jnp.arange(t_len)[None]
    src = jnp.where(fpos < u[:, None], fpos, fpos + cut[:, None])
    fvalid = src < n_frames[:, None]
    out["frame_mask"] = fvalid.astype(frame_mask.dtype)
    tpos = jnp.arange(n_tok)[None]
    tsrc = jnp.where(tpos < a[:, None], tpos, tpos + cut_tok[:, None])
    tvalid = tsrc < n_valid_tok[:, None]
    out["token_mask"] = tvalid.astype(token_mask.dtype)
    for key in token_keys:
        if key in batch:
            out[key] = _gather_frames(batch[key], tsrc, tvalid)
    # Prompt frames: u + p for p < min(cut, max_frames).
    ppos = jnp.arange(max_frames)[None]
    p_len = jnp.minimum(cut, max_frames)
    pvalid = ppos < p_len[:, None]
    keep = jax.random.uniform(k_drop, (b,)) >= drop_prob
    out["prompt_mask"] = (pvalid & keep[:, None]).astype(jnp.float32)
    for key in frame_keys:
        if key in batch:
            out[key] = _gather_frames(batch[key], src, fvalid)
            out["prompt_" + key] = _gather_frames(batch[key], u[:, None] + ppos, pvalid)
    out["prompt_start"], out["prompt_frames"], out["prompt_tokens"] = u, cut, cut_tok
    return out
