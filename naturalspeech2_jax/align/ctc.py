"""The aligner's acoustic model and losses: log-mel frames -> per-frame phoneme log-probabilities.

Model (``CTCAligner``): per-utterance mean/variance normalisation of the log-mel (masked, so
loudness and channel do not matter) -> linear projection -> residual dilated 1-D conv blocks
(LayerNorm, GELU; dilations 1, 2, 4, ... give a receptive field of a few hundred ms on both
sides) -> optional pre-norm Transformer encoder layers with a key padding mask -> a head over the
V phoneme ids plus the CTC blank, which is the LAST class (index V) so phoneme ids keep their own
values. Padded frames are zeroed after every layer so they never leak into real frames.

Losses (``aligner_losses``), both computed from the same head:
  * CTC (``optax.ctc_loss``) over the V+1 classes: learns *which* phonemes are present, robustly,
    from transcripts alone.
  * A blank-free "forward-sum" loss: -log sum over all monotonic segmentations of the transcript
    (every token >= 1 frame, sum = T) of prod_t p(token | frame t), with p the softmax over the V
    phoneme classes only. It is exactly the likelihood whose best path ``viterbi.viterbi_align``
    finds, so it trains the phoneme posteriors to be right on *every* frame. CTC alone makes spiky
    posteriors (one frame per phoneme, blank elsewhere) whose boundaries are poor; this term fixes
    that (the same idea as RAD-TTS's alignment loss).
  * A "flat start" cross-entropy against a uniform segmentation of the transcript. The task
    hands over from it to the forward-sum loss: weights f and 1 - f with f going 1 -> 0 over
    ``config.loss.flat_start_steps``. Started from uniform posteriors, the forward-sum loss
    otherwise tends to settle on a degenerate solution (the always-present silence token
    predicted everywhere and stretched over the utterance), for hundreds of steps or for good.
Alignment uses ``phoneme_log_probs`` (the non-blank log-softmax).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from naturalspeech2_jax.models import conv as conv_lib
from naturalspeech2_jax.models import transformer
from naturalspeech2_jax.models.transformer import dense

# The aligners' LayerNorms keep flax's default epsilon, which trained aligner checkpoints have.
LAYER_NORM_EPSILON = 1e-6


def layer_norm(dim: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """The aligners' LayerNorm: ``models.transformer.layer_norm`` with ``LAYER_NORM_EPSILON``."""
    return transformer.layer_norm(dim, rngs, epsilon=LAYER_NORM_EPSILON)


class ConvBlock(nnx.Module):
    """x + Dropout(Conv(GELU(LayerNorm(x)))) with a dilated 'same' convolution."""

    def __init__(self, dim: int, kernel: int, dilation: int, dropout: float, *, rngs: nnx.Rngs):
        self.norm = layer_norm(dim, rngs)
        kinit = nnx.with_partitioning(
            nnx.initializers.lecun_normal(), ("kernel", "conv_in", "embed")
        )
        self.conv = nnx.Conv(
            dim,
            dim,
            kernel_size=(kernel,),
            kernel_dilation=(dilation,),
            padding="SAME",
            kernel_init=kinit,
            bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("embed",)),
            conv_general_dilated=conv_lib.conv_general_dilated,
            rngs=rngs,
        )
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, mask: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        h = self.conv(jax.nn.gelu(self.norm(x)) * mask)
        return (x + self.dropout(h, rngs=rngs)) * mask


def conv_stack(
    dim: int, kernel: int, layers: int, dilation_cycle: int, dropout: float, rngs: nnx.Rngs
) -> nnx.List:
    """``layers`` ConvBlocks whose dilations cycle 1, 2, ..., 2^(dilation_cycle - 1): context
    grows geometrically but stays local-first (cycle 1: no dilation)."""
    cycle = max(dilation_cycle, 1)
    return nnx.List(
        [ConvBlock(dim, kernel, 2 ** (i % cycle), dropout, rngs=rngs) for i in range(layers)]
    )


def run_blocks(blocks: nnx.List, h: jax.Array, mask: jax.Array, rngs: nnx.Rngs | None):
    """h through each block of ``blocks`` in turn (ConvBlock / EncoderLayer: (h, mask, rngs))."""
    for block in blocks:
        h = block(h, mask, rngs)
    return h


class EncoderLayer(nnx.Module):
    """Pre-norm Transformer layer: self-attention with a key padding mask, then a GELU MLP."""

    def __init__(self, dim: int, heads: int, dropout: float, *, rngs: nnx.Rngs):
        self.norm1 = layer_norm(dim, rngs)
        self.attn = nnx.MultiHeadAttention(
            num_heads=heads,
            in_features=dim,
            kernel_init=nnx.with_partitioning(
                nnx.initializers.lecun_normal(), ("embed", "heads", None)
            ),
            out_kernel_init=nnx.with_partitioning(
                nnx.initializers.lecun_normal(), ("heads", None, "embed")
            ),
            bias_init=nnx.initializers.zeros_init(),
            decode=False,
            rngs=rngs,
        )
        self.norm2 = layer_norm(dim, rngs)
        self.up = dense(dim, 4 * dim, ("embed", "mlp"), rngs)
        self.down = dense(4 * dim, dim, ("mlp", "embed"), rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, mask: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        key_mask = mask[:, None, None, :, 0] > 0  # [B, 1, 1, T]: attend to real frames only
        h = self.attn(self.norm1(x), mask=key_mask, deterministic=True)
        x = x + self.dropout(h, rngs=rngs)
        h = self.down(jax.nn.gelu(self.up(self.norm2(x))))
        return (x + self.dropout(h, rngs=rngs)) * mask


class MelEncoder(nnx.Module):
    """What both aligners start with: normalised log-mel -> ``inp`` projection -> ``convs``
    (``conv_stack``). Their constructors take these keyword arguments and their own."""

    def __init__(
        self,
        *,
        n_mels: int,
        vocab_size: int,
        dim: int,
        conv_layers: int,
        kernel: int,
        dropout: float,
        dilation_cycle: int = 4,
        rngs: nnx.Rngs,
    ):
        self.vocab_size = vocab_size
        self.inp = dense(n_mels, dim, (None, "embed"), rngs)
        self.convs = conv_stack(dim, kernel, conv_layers, dilation_cycle, dropout, rngs)

    def encode_mel(
        self, mel: jax.Array, frame_mask: jax.Array, rngs: nnx.Rngs | None
    ) -> tuple[jax.Array, jax.Array]:
        """(hiddens [B, T, dim] after the conv stack, frame mask [B, T, 1] in mel's dtype)."""
        mask = frame_mask[..., None].astype(mel.dtype)
        h = self.inp(normalise_mel(mel, mask)) * mask
        return run_blocks(self.convs, h, mask, rngs), mask


class CTCAligner(MelEncoder):
    """log-mel [B, T, n_mels] + frame mask [B, T] -> log-probs [B, T, V + 1] (blank = index V).

    ``mel_args``: those of ``MelEncoder`` (the default dilation cycle 4: dilations 1-8).
    """

    def __init__(self, *, attn_layers: int, heads: int, **mel_args):
        super().__init__(**mel_args)
        dim, dropout, rngs = mel_args["dim"], mel_args["dropout"], mel_args["rngs"]
        self.attn = nnx.List(
            [EncoderLayer(dim, heads, dropout, rngs=rngs) for _ in range(attn_layers)]
        )
        self.out_norm = layer_norm(dim, rngs)
        self.head = dense(dim, self.vocab_size + 1, ("embed", "vocab"), rngs)

    def __call__(
        self, mel: jax.Array, frame_mask: jax.Array, *, rngs: nnx.Rngs | None = None
    ) -> jax.Array:
        h, mask = self.encode_mel(mel, frame_mask, rngs)
        h = run_blocks(self.attn, h, mask, rngs)
        logits = self.head(self.out_norm(h)).astype(jnp.float32)
        return jax.nn.log_softmax(logits, axis=-1)


def normalise_mel(mel: jax.Array, mask: jax.Array) -> jax.Array:
    """Per-utterance, per-channel mean/variance normalisation over real frames (``mask``
    [B, T, 1]), zero on padding: loudness and channel colouring do not matter to the aligner."""
    count = jnp.maximum(jnp.sum(mask, axis=1, keepdims=True), 1.0)
    mean = jnp.sum(mel * mask, axis=1, keepdims=True) / count
    var = jnp.sum(jnp.square(mel - mean) * mask, axis=1, keepdims=True) / count
    return (mel - mean) * jax.lax.rsqrt(var + 1e-5) * mask


def phoneme_log_probs(log_probs: jax.Array) -> jax.Array:
    """Blank-free per-frame log-probs [..., V]: the softmax renormalised over phoneme classes."""
    return jax.nn.log_softmax(log_probs[..., :-1], axis=-1)


def ctc_loss(
    log_probs: jax.Array, frame_mask: jax.Array, labels: jax.Array, label_mask: jax.Array
) -> jax.Array:
    """Per-utterance CTC negative log-likelihood [B] (blank = last class)."""
    return optax.ctc_loss(
        log_probs,
        1.0 - frame_mask.astype(jnp.float32),
        labels,
        1.0 - label_mask.astype(jnp.float32),
        blank_id=log_probs.shape[-1] - 1,
    )


def log_beta_binomial_prior(
    frame_mask: jax.Array, label_mask: jax.Array, scale: float = 1.0
) -> jax.Array:
    """log P(token k | frame t) [B, T, N] of the beta-binomial alignment prior.

    For frame t of T the token position k of N follows BetaBinomial(N - 1, scale (t + 1),
    scale (T - t)): a soft band along the diagonal, as in RAD-TTS and FastPitch's aligner. Added
    to the emissions it rules out the degenerate optimum of the forward-sum loss (one token
    stretched over most of the utterance) without fixing any boundary. 0 outside real frames and
    tokens. ``viterbi.beta_binomial_log_prior`` is the same for one utterance in numpy.
    """
    t_len = jnp.sum(frame_mask, axis=1)[:, None, None]
    n_tok = jnp.sum(label_mask, axis=1)[:, None, None]
    t = jnp.arange(frame_mask.shape[1], dtype=jnp.float32)[None, :, None]
    k = jnp.arange(label_mask.shape[1], dtype=jnp.float32)[None, None, :]
    valid = (t < t_len) & (k < n_tok)
    n = jnp.where(valid, n_tok - 1.0, 0.0)
    k = jnp.where(valid, k, 0.0)
    a = jnp.where(valid, scale * (t + 1.0), 1.0)
    b = jnp.where(valid, scale * (t_len - t), 1.0)
    gammaln, betaln = jax.scipy.special.gammaln, jax.scipy.special.betaln
    lp = (
        gammaln(n + 1)
        - gammaln(k + 1)
        - gammaln(n - k + 1)
        + betaln(k + a, n - k + b)
        - betaln(a, b)
    )
    return jnp.where(valid, lp, 0.0)


def forward_sum_loss(
    phone_log_probs: jax.Array,
    frame_mask: jax.Array,
    labels: jax.Array,
    label_mask: jax.Array,
    *,
    log_prior: jax.Array | None = None,
    optional: jax.Array | None = None,
) -> jax.Array:
    """Per-utterance -log sum over monotonic segmentations [B] of the transcript ``labels``
    under per-frame phoneme log-probs [B, T, V], ``log_prior`` [B, T, N] added to the
    emissions; see ``forward_sum_from_emissions``."""
    emis = jnp.take_along_axis(phone_log_probs, labels[:, None, :], axis=-1)  # [B, T, N]
    if log_prior is not None:
        emis = emis + log_prior
    return forward_sum_from_emissions(emis, frame_mask, label_mask, optional)


def forward_sum_from_emissions(
    emis: jax.Array,
    frame_mask: jax.Array,
    label_mask: jax.Array,
    optional: jax.Array | None = None,
) -> jax.Array:
    """Per-utterance -log sum over monotonic segmentations [B] of emissions ``emis`` [B, T, N]
    (log-prob of token n at frame t, any prior included).

    Every token takes >= 1 frame, except ``optional`` ones [B, N] (word boundaries, silences,
    punctuation: most word boundaries have no pause), which may take none; up to two optional
    tokens in a row can be skipped together.

    alpha[t, n] = e[t, n] + logsumexp(alpha[t-1, n], alpha[t-1, n-1], skips over optional
    tokens); padded frames carry alpha unchanged, and the answer is alpha at the last real token
    (or before trailing optional ones) after the last real frame.
    """
    neg = jnp.asarray(-1e9, emis.dtype)
    emis = jnp.where(label_mask[:, None, :] > 0, emis, neg)
    b, _, n = emis.shape
    opt = jnp.zeros((b, n), bool) if optional is None else (optional > 0) & (label_mask > 0)

    def shift(x, k, fill):
        return jnp.concatenate([jnp.full((b, k), fill, x.dtype), x[:, : n - k]], axis=1)

    # token n may follow token n-2 (n-3) when token n-1 (n-1 and n-2) is optional
    skip1 = shift(opt, 1, False)
    skip2 = skip1 & shift(opt, 2, False)
    first = jnp.full((b, n), neg).at[:, 0].set(0.0)  # a path may start on token 0 ...
    first = jnp.where(skip1, shift(first, 1, neg), first)  # ... or on 1 if 0 is optional
    first = jnp.where(skip2 & (jnp.arange(n) == 2), 0.0, first)  # ... or on 2 if 0, 1 are
    alpha0 = first + emis[:, 0]

    def step(alpha, xs):
        e_t, m_t = xs
        prev = jnp.logaddexp(alpha, shift(alpha, 1, neg))
        prev = jnp.logaddexp(prev, jnp.where(skip1, shift(alpha, 2, neg), neg))
        prev = jnp.logaddexp(prev, jnp.where(skip2, shift(alpha, 3, neg), neg))
        return jnp.where(m_t[:, None] > 0, prev + e_t, alpha), None

    xs = (jnp.swapaxes(emis[:, 1:], 0, 1), jnp.swapaxes(frame_mask[:, 1:], 0, 1))
    alpha, _ = jax.lax.scan(step, alpha0, xs)
    last = jnp.sum(label_mask, axis=1).astype(jnp.int32) - 1

    def at(i):
        return jnp.take_along_axis(alpha, jnp.maximum(i, 0)[:, None], axis=1)[:, 0]

    def opt_at(i):
        return jnp.take_along_axis(opt, jnp.maximum(i, 0)[:, None], axis=1)[:, 0] & (i >= 0)

    end = at(last)
    end = jnp.logaddexp(end, jnp.where(opt_at(last) & (last >= 1), at(last - 1), neg))
    both = opt_at(last) & opt_at(last - 1) & (last >= 2)
    end = jnp.logaddexp(end, jnp.where(both, at(last - 2), neg))
    return -end


def relative_energy(mel: jax.Array, frame_mask: jax.Array) -> jax.Array:
    """Frame energy [B, T] rescaled to 0 at the utterance's 2nd and 1 at its 98th percentile
    over real frames, clipped to [0, 1] (0 everywhere when the energy is constant): what
    ``pause_log_gate``, ``edge_log_gate`` and ``speech_span`` threshold.

    The energy is the log of the frame's total power (logsumexp of 2 x log-mel magnitude), which
    the formants of speech dominate; the mean log-mel, used first, put the background noise of
    real recordings at 0.3-0.5 of the range and speech at 0.7-1, too close for one threshold.
    Percentiles instead of min/max keep one click or one digital-silence frame from setting the
    scale."""
    energy = jax.nn.logsumexp(2.0 * mel.astype(jnp.float32), axis=-1)
    real = frame_mask > 0
    masked = jnp.where(real, energy, jnp.nan)
    lo = jnp.nanpercentile(masked, 2.0, axis=1, keepdims=True)
    hi = jnp.nanpercentile(masked, 98.0, axis=1, keepdims=True)
    return jnp.clip((energy - lo) / jnp.maximum(hi - lo, 1e-6), 0.0, 1.0)


def pause_log_gate(
    mel: jax.Array,
    frame_mask: jax.Array,
    level: float = 0.3,
    penalty: float = 10.0,
    *,
    energy: jax.Array | None = None,
) -> jax.Array:
    """Log-emission penalty [B, T] for pause (optional) tokens: 0 on quiet frames, ramping to
    ``-penalty`` on frames whose ``relative_energy`` (pass it as ``energy`` when already
    computed) is above ``level`` + 0.2. A pause is quiet; without this a weak acoustic model on
    real speech let word-boundary pauses swallow whole words."""
    z = relative_energy(mel, frame_mask) if energy is None else energy
    return jnp.where(frame_mask > 0, -penalty * jnp.clip((z - level) / 0.2, 0.0, 1.0), 0.0)


def speech_span(
    mel: jax.Array,
    frame_mask: jax.Array,
    level: float = 0.3,
    *,
    energy: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """First and last frame [B] whose ``relative_energy`` (``energy`` when already computed) is
    above ``level``: the span between leading and trailing silence. An utterance with no such
    frame (constant energy) spans all its real frames."""
    real = frame_mask > 0
    z = relative_energy(mel, frame_mask) if energy is None else energy
    loud = real & (z > level)
    t_len = mel.shape[1]
    n_real = jnp.sum(real, axis=1).astype(jnp.int32)
    any_loud = jnp.any(loud, axis=1)
    first = jnp.where(any_loud, jnp.argmax(loud, axis=1), 0)
    last = jnp.where(any_loud, t_len - 1 - jnp.argmax(loud[:, ::-1], axis=1), n_real - 1)
    return first.astype(jnp.int32), last.astype(jnp.int32)


def edge_log_gate(
    mel: jax.Array,
    frame_mask: jax.Array,
    level: float = 0.3,
    penalty: float = 10.0,
    margin: int = 3,
    *,
    energy: jax.Array | None = None,
) -> jax.Array:
    """Log-emission penalty [B, T] for spoken tokens on the utterance's leading and trailing
    silence: ``-penalty`` on real frames more than ``margin`` frames before the first or after
    the last frame of ``speech_span``, 0 elsewhere.

    The mirror image of ``pause_log_gate``. Read speech often starts and ends with a second of
    silence; a model still learning what silence looks like, pulled towards the diagonal by the
    prior, otherwise spreads the first and last phonemes over it, and the words in between are
    left too few frames. Only the edges are gated: a quiet frame inside the speech may be a stop
    closure, which belongs to a phoneme. With a transcript that starts (ends) with a spoken token
    every path pays the same at that edge, so the gate then changes nothing there.
    """
    first, last = speech_span(mel, frame_mask, level, energy=energy)
    t = jnp.arange(frame_mask.shape[1])[None, :]
    outside = (t < first[:, None] - margin) | (t > last[:, None] + margin)
    return jnp.where((frame_mask > 0) & outside, -penalty, 0.0)


def flat_start_targets(
    labels: jax.Array,
    label_mask: jax.Array,
    frame_mask: jax.Array,
    *,
    optional: jax.Array | None = None,
    span: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
    """The flat-start frame labels [B, T]: a uniform segmentation of the transcript.

    Without ``optional`` every token gets an equal share of the real frames. With it, optional
    tokens (silences, word boundaries, punctuation) get no share: the frames are divided among
    the spoken tokens only, and ``span`` (first, last frame of speech, from ``speech_span``)
    gives the frames before and after the speech to a leading / trailing optional token (the
    utterance's edge silences). Uniform shares for optional tokens taught the silence class to
    fire in the middle of words: on espeak speech it then took 54% of the frames, 17% true.
    """
    b = labels.shape[0]
    t_idx = jnp.arange(frame_mask.shape[1], dtype=jnp.float32)[None, :]
    n_frames = jnp.maximum(jnp.sum(frame_mask, axis=1, keepdims=True), 1.0)
    if optional is None:
        n_tokens = jnp.sum(label_mask, axis=1, keepdims=True)
        pos = jnp.clip(jnp.floor((t_idx + 0.5) * n_tokens / n_frames), 0, n_tokens - 1)
        return jnp.take_along_axis(labels, pos.astype(jnp.int32), axis=1)
    spoken, spoken_mask = spoken_labels(labels, label_mask, optional)
    n_spoken = jnp.maximum(jnp.sum(spoken_mask, axis=1, keepdims=True), 1.0)
    if span is None:
        first, last = jnp.zeros((b, 1)), n_frames - 1.0
    else:
        first, last = span[0][:, None].astype(jnp.float32), span[1][:, None].astype(jnp.float32)
    width = jnp.maximum(last - first + 1.0, 1.0)
    pos = jnp.clip(jnp.floor((t_idx - first + 0.5) * n_spoken / width), 0, n_spoken - 1)
    target = jnp.take_along_axis(spoken, pos.astype(jnp.int32), axis=1)
    opt = (optional > 0) & (label_mask > 0)
    last_tok = jnp.sum(label_mask, axis=1).astype(jnp.int32) - 1
    lead = opt[:, :1] & (t_idx < first)
    trail_opt = jnp.take_along_axis(opt, jnp.maximum(last_tok, 0)[:, None], axis=1)
    trail = trail_opt & (t_idx > last)
    target = jnp.where(lead, labels[:, :1], target)
    trail_label = jnp.take_along_axis(labels, jnp.maximum(last_tok, 0)[:, None], axis=1)
    target = jnp.where(trail, trail_label, target)
    # no spoken token at all (a pause-only transcript): every frame to the first token
    return jnp.where(jnp.sum(spoken_mask, axis=1, keepdims=True) > 0, target, labels[:, :1])


def flat_start_loss(
    phone_log_probs: jax.Array,
    frame_mask: jax.Array,
    labels: jax.Array,
    label_mask: jax.Array,
    *,
    optional: jax.Array | None = None,
    span: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
    """Per-utterance frame cross-entropy [B] against ``flat_start_targets``.

    The classic HMM "flat start": wrong in detail but right on average, it breaks the symmetry
    that otherwise lets the forward-sum loss settle into a degenerate optimum (one always-present
    token, e.g. the leading silence, predicted everywhere and stretched over the utterance).
    """
    target = flat_start_targets(labels, label_mask, frame_mask, optional=optional, span=span)
    ce = -jnp.take_along_axis(phone_log_probs, target[..., None], axis=-1)[..., 0]
    return jnp.sum(ce * frame_mask, axis=1)


def spoken_labels(
    labels: jax.Array, label_mask: jax.Array, optional: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """The CTC targets: ``labels`` [B, N] without the optional tokens (kept ones moved to the
    front, in order) and their mask. Silences and pauses are CTC's blank; a CTC target that may
    be acoustically absent (a word boundary without a pause) would teach a spurious class."""
    if optional is None:
        return labels, label_mask
    n = labels.shape[1]
    keep = (label_mask > 0) & ~optional
    order = jnp.argsort(jnp.where(keep, 0, n) + jnp.arange(n)[None, :], axis=1)
    return (
        jnp.take_along_axis(labels, order, axis=1),
        jnp.take_along_axis(keep, order, axis=1).astype(label_mask.dtype),
    )


@dataclasses.dataclass(frozen=True)
class EmissionPrior:
    """The terms ``emission_log_prior`` adds to the emissions, as in ``config.loss`` (frozen and
    hashable: ``api.Aligner`` passes it to jit as a static argument)."""

    prior_weight: float = 0.0  # x the beta-binomial diagonal prior (``prior_scale`` its width)
    prior_scale: float = 1.0
    pause_penalty: float = 0.0  # pause_log_gate on optional tokens, from ``pause_level``
    pause_level: float = 0.3
    edge_penalty: float = 0.0  # edge_log_gate on spoken tokens, speech from ``edge_level``
    edge_level: float = 0.5

    @classmethod
    def from_config(cls, loss: Any) -> EmissionPrior:
        """From ``config.loss`` (keys missing from older configs keep the defaults above)."""
        return cls(**{f.name: float(loss.get(f.name, f.default)) for f in dataclasses.fields(cls)})


def emission_log_prior(
    mel: jax.Array,
    frame_mask: jax.Array,
    label_mask: jax.Array,
    optional: jax.Array | None,
    terms: EmissionPrior,
) -> jax.Array:
    """What the forward-sum (and Viterbi) adds to the emissions [B, T, N] (zeros when every term
    is off): ``prior_weight`` x the beta-binomial diagonal prior, the pause gate on optional
    tokens and the edge gate on spoken ones."""
    p = terms
    prior = jnp.zeros(frame_mask.shape + label_mask.shape[1:], jnp.float32)
    if p.prior_weight:
        prior = prior + p.prior_weight * log_beta_binomial_prior(
            frame_mask, label_mask, p.prior_scale
        )
    if optional is None or not (p.pause_penalty or p.edge_penalty):
        return prior
    energy = relative_energy(mel, frame_mask)  # both gates threshold it: computed once
    if p.pause_penalty:
        gate = pause_log_gate(mel, frame_mask, p.pause_level, p.pause_penalty, energy=energy)
        prior = prior + gate[:, :, None] * optional[:, None, :].astype(gate.dtype)
    if p.edge_penalty:
        gate = edge_log_gate(mel, frame_mask, p.edge_level, p.edge_penalty, energy=energy)
        spoken = (~optional) & (label_mask > 0)
        prior = prior + gate[:, :, None] * spoken[:, None, :].astype(gate.dtype)
    return prior


def aligner_losses(
    model: CTCAligner,
    batch: dict[str, jax.Array],
    *,
    forward_sum_weight: jax.Array | float,
    flat_start_weight: jax.Array | float = 0.0,
    optional_ids: tuple[int, ...] = (),
    prior: EmissionPrior = EmissionPrior(),
    rngs: nnx.Rngs | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean per-frame CTC + weight * forward-sum (+ flat-start CE) loss; metrics per frame.

    Tokens in ``optional_ids`` (on real speech: the silence class, which word boundaries and
    punctuation are mapped to by ``data.prepare``) are left out of the CTC targets and may take
    zero frames in the forward-sum, whose emissions get ``emission_log_prior`` with ``prior``:
    the beta-binomial prior, ``pause_log_gate`` on the optional tokens (pauses are quiet) and
    ``edge_log_gate`` on the spoken ones.
    """
    frame_mask = batch["frame_mask"].astype(jnp.float32)
    label_mask = batch["phoneme_mask"].astype(jnp.float32)
    log_probs = model(batch["mel"], frame_mask, rngs=rngs)
    frames = jnp.maximum(jnp.sum(frame_mask), 1.0)
    optional = (
        jnp.isin(batch["phonemes"], jnp.asarray(optional_ids, jnp.int32)) if optional_ids else None
    )
    ctc_labels, ctc_mask = spoken_labels(batch["phonemes"], label_mask, optional)
    ctc = jnp.sum(ctc_loss(log_probs, frame_mask, ctc_labels, ctc_mask)) / frames
    phone = phoneme_log_probs(log_probs)
    log_prior = emission_log_prior(batch["mel"], frame_mask, label_mask, optional, prior)
    fs = forward_sum_loss(
        phone, frame_mask, batch["phonemes"], label_mask, log_prior=log_prior, optional=optional
    )
    fs = jnp.sum(fs) / frames
    span = speech_span(batch["mel"], frame_mask) if optional is not None else None
    flat = flat_start_loss(
        phone, frame_mask, batch["phonemes"], label_mask, optional=optional, span=span
    )
    flat = jnp.sum(flat) / frames
    loss = ctc + forward_sum_weight * fs + flat_start_weight * flat
    metrics = {"ctc_per_frame": ctc, "forward_sum_per_frame": fs, "flat_start_per_frame": flat}
    return loss, metrics
