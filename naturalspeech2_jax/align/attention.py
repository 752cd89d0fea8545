"""Text-conditioned alignment model (RAD-TTS / "One TTS Alignment To Rule Them All" style).

Why a second model. The CTC aligner (``ctc.CTCAligner``) is a phoneme *recogniser*: it must tell
every phoneme of the vocabulary from every other from the audio alone, and Viterbi then follows
its posteriors. On espeak speech that works (median boundary error 37.5 ms); on 2.7 h of real,
mostly non-native read speech the recogniser stayed weak (CTC 0.23 nats per frame after 2400
steps) and Viterbi stretched a few tokens over whole words (55-62% of phonemes got one frame).
This model only has to decide which token *of this utterance's transcript* each frame belongs
to, and it sees the transcript: a much easier problem, which is why TTS systems learn their
alignments this way.

Model. A mel encoder (per-utterance normalised log-mel -> linear -> residual dilated 1-D conv
blocks, as in the CTC model) gives a query q_t per frame; a text encoder (token embedding ->
``text_layers`` residual 1-D conv blocks over the token sequence) gives a key k_n per token. Keep
both local (configs/aligner.py: 3 undilated mel layers, no text blocks): the forward-sum loss
cannot tell the true alignment from a shifted one when a query may stand for the frames of a
neighbouring phoneme or a key for a neighbouring token, and with wide context the alignment
drifted further from the true one the longer it trained. The emission is the log-softmax over the
utterance's tokens of the negative squared distance, scaled by 1/sqrt(dim):

    log A[t, n] = log_softmax_n( -|q_t - k_n|^2 / sqrt(d) )        (padded tokens excluded)

Training (``attention_aligner_losses``) maximises the forward-sum likelihood of log A plus the
beta-binomial diagonal prior (``ctc.forward_sum_from_emissions``: every spoken token takes >= 1
frame, optional tokens may take none), with the pause gate on optional tokens and the edge gate
on spoken ones (``ctc.emission_log_prior``; the edge gate taught the model that the leading and
trailing silence of real recordings belongs to ``<sil>``: pauses 22% of the frames instead of
5%), and optionally an auxiliary CTC head on the mel encoder (``ctc_weight``; measured worse on
real speech: 46% one-frame phonemes at 600 steps against 38%). No flat start is needed: at
initialisation the softmax is near uniform, so the prior alone makes the first alignments
diagonal, and the encoders sharpen them from there.

Alignment is Viterbi on log A (+ the same prior and gates), exactly as for the CTC model; see
``api.Aligner.emissions``. Measured accuracy: configs/aligner.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from naturalspeech2_jax.align import ctc
from naturalspeech2_jax.models.transformer import dense


class AttentionAligner(ctc.MelEncoder):
    """(log-mel [B, T, n_mels], frame mask [B, T], tokens [B, N], token mask [B, N]) ->
    log-attention [B, T, N] (and CTC log-probs [B, T, V + 1] when built with a CTC head).

    ``mel_args``: those of ``ctc.MelEncoder``, the mel (query) side: the CTC model's conv stack;
    a short dilation cycle keeps the receptive field (and so the blur of each query over
    neighbouring phonemes) small.
    """

    def __init__(self, *, text_layers: int, ctc_head: bool = False, **mel_args):
        super().__init__(**mel_args)
        vocab_size, dim, dropout, rngs = (
            mel_args[k] for k in ("vocab_size", "dim", "dropout", "rngs")
        )
        self.dim = dim
        self.mel_norm = ctc.layer_norm(dim, rngs)
        self.query = dense(dim, dim, ("embed", "embed_out"), rngs)
        # text (key) side: kernel 3, no dilation: a token's context is its near neighbours
        self.embed = nnx.Embed(
            vocab_size,
            dim,
            embedding_init=nnx.with_partitioning(nnx.initializers.normal(1.0), ("vocab", "embed")),
            rngs=rngs,
        )
        self.text_convs = ctc.conv_stack(dim, 3, text_layers, 1, dropout, rngs)
        self.text_norm = ctc.layer_norm(dim, rngs)
        self.key = dense(dim, dim, ("embed", "embed_out"), rngs)
        self.ctc = dense(dim, vocab_size + 1, ("embed", "vocab"), rngs) if ctc_head else None

    def __call__(
        self,
        mel: jax.Array,
        frame_mask: jax.Array,
        phonemes: jax.Array,
        phoneme_mask: jax.Array,
        *,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[jax.Array, jax.Array | None]:
        h, _ = self.encode_mel(mel, frame_mask, rngs)
        h = self.mel_norm(h)
        q = self.query(h).astype(jnp.float32)
        tmask = phoneme_mask[..., None].astype(mel.dtype)
        g = ctc.run_blocks(self.text_convs, self.embed(phonemes) * tmask, tmask, rngs)
        k = self.key(self.text_norm(g)).astype(jnp.float32)
        # -|q - k|^2 = 2 q.k - |q|^2 - |k|^2; |q|^2 is constant over n and cancels in the softmax
        logits = (2.0 * jnp.einsum("btd,bnd->btn", q, k) - jnp.sum(k * k, -1)[:, None, :]) / (
            jnp.sqrt(float(self.dim))
        )
        logits = jnp.where(phoneme_mask[:, None, :] > 0, logits, -1e9)
        log_attn = jax.nn.log_softmax(logits, axis=-1)
        ctc_log_probs = None
        if self.ctc is not None:
            ctc_log_probs = jax.nn.log_softmax(self.ctc(h).astype(jnp.float32), axis=-1)
        return log_attn, ctc_log_probs


def attention_aligner_losses(
    model: AttentionAligner,
    batch: dict[str, jax.Array],
    *,
    optional_ids: tuple[int, ...] = (),
    prior: ctc.EmissionPrior = ctc.EmissionPrior(prior_weight=1.0),
    ctc_weight: float = 0.0,
    rngs: nnx.Rngs | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean per-frame forward-sum loss of the log-attention (+ ``ctc_weight`` x CTC)."""
    frame_mask = batch["frame_mask"].astype(jnp.float32)
    label_mask = batch["phoneme_mask"].astype(jnp.float32)
    log_attn, ctc_lp = model(batch["mel"], frame_mask, batch["phonemes"], label_mask, rngs=rngs)
    frames = jnp.maximum(jnp.sum(frame_mask), 1.0)
    optional = (
        jnp.isin(batch["phonemes"], jnp.asarray(optional_ids, jnp.int32)) if optional_ids else None
    )
    emis = log_attn + ctc.emission_log_prior(batch["mel"], frame_mask, label_mask, optional, prior)
    fs = jnp.sum(ctc.forward_sum_from_emissions(emis, frame_mask, label_mask, optional)) / frames
    loss = fs
    metrics = {"forward_sum_per_frame": fs}
    if ctc_lp is not None and ctc_weight:
        labels, mask = ctc.spoken_labels(batch["phonemes"], label_mask, optional)
        c = jnp.sum(ctc.ctc_loss(ctc_lp, frame_mask, labels, mask)) / frames
        loss = loss + ctc_weight * c
        metrics["ctc_per_frame"] = c
    # how peaked the attention is: mean over real frames of max_n A[t, n] (1 = hard alignment)
    peak = jnp.max(jnp.exp(log_attn), axis=-1)
    metrics["attention_peak"] = jnp.sum(peak * frame_mask) / frames
    return loss, metrics
