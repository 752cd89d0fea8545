"""The built-in aligner's models, built from a config: ``model.kind`` picks one.

"attention" (``attention.AttentionAligner``): RAD-TTS-style text-conditioned alignment;
"ctc" (``ctc.CTCAligner``): a phoneme recogniser whose posteriors are gathered at the
transcript's ids. Training (``tasks/aligner.py``) and alignment (``align/api.py``) build them here.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from naturalspeech2_jax.align import attention, ctc

MODEL_KINDS = ("ctc", "attention")


def model_kind(config: Any) -> str:
    """``config.model.kind``: "ctc" (phoneme recogniser, ``ctc.CTCAligner``; the default of
    configs written before the attention model existed) or "attention" (text-conditioned,
    ``attention.AttentionAligner``)."""
    kind = str(config.model.get("kind", "ctc"))
    if kind not in MODEL_KINDS:
        raise ValueError(f"config.model.kind={kind!r} is unknown; use one of {MODEL_KINDS}.")
    return kind


def build_aligner(config: Any, rngs: nnx.Rngs) -> nnx.Module:
    """The aligner model that ``config.model`` (``configs/aligner.py``) describes."""
    m = config.model
    kind = model_kind(config)
    if kind == "attention":
        return attention.AttentionAligner(
            n_mels=int(m.n_mels),
            vocab_size=int(m.vocab_size),
            dim=int(m.dim),
            conv_layers=int(m.conv_layers),
            text_layers=int(m.text_layers),
            kernel=int(m.kernel),
            dropout=float(m.dropout),
            dilation_cycle=int(m.get("dilation_cycle", 4)),
            ctc_head=float(config.loss.get("ctc_weight", 0.0)) > 0,
            rngs=rngs,
        )
    return ctc.CTCAligner(
        n_mels=int(m.n_mels),
        vocab_size=int(m.vocab_size),
        dim=int(m.dim),
        conv_layers=int(m.conv_layers),
        kernel=int(m.kernel),
        attn_layers=int(m.attn_layers),
        heads=int(m.heads),
        dropout=float(m.dropout),
        rngs=rngs,
    )
