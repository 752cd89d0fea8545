"""Python API of the built-in aligner: train it on a corpus, then (mel, phonemes) -> durations.

    from naturalspeech2_jax.align import api
    examples = [{"mel": api.log_mel(wav, n_frames=len(wav) // 200), "phonemes": ids}, ...]
    tasks.aligner.train_aligner(examples, "runs/aligner", preset="tiny")
    aligner = api.Aligner.from_checkpoint("runs/aligner")
    durations = aligner.align(mel, ids)          # int32 [N], sum == len(mel)

Inference pads frames up to a multiple of ``FRAME_BUCKET`` and the batch up to ``BATCH``, so one
jitted program serves every utterance of a bucket; Viterbi runs on the host in numpy (a few ms).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import nnx

from naturalspeech2_jax import SAMPLE_RATE
from naturalspeech2_jax.align import ctc
from naturalspeech2_jax.align.models import build_aligner, model_kind
from naturalspeech2_jax.align.viterbi import (  # noqa: F401  (re-exported for callers)
    Alignment,
    AlignmentError,
    beta_binomial_log_prior,
    boundary_errors_ms,
    viterbi_align,
)
from naturalspeech2_jax.audio.features import ALIGNER_MEL, log_mel_spectrogram
from naturalspeech2_jax.train.restore import latest_step, restore_params

FRAME_BUCKET = 128  # inference pads T up to a multiple of this (bounded number of programs)
TOKEN_BUCKET = 64  # ... and N (attention model) up to a multiple of this
BATCH = 8  # inference batch (padded with empty rows)


def log_mel(wav: np.ndarray, *, n_frames: int | None = None, sample_rate: int = SAMPLE_RATE):
    """The aligner's features: log-mel [T, 80] at hop 200 (16 kHz), 1024-point FFT, 0-8 kHz
    (``audio.features.ALIGNER_MEL``: librosa's ``melspectrogram`` framing, 1 + len // 200 frames).

    Frame t is centred on sample 200*t. ``n_frames`` (the codec's frame count for this audio)
    crops or edge-pads the result so durations will sum to exactly that many frames.
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(
            f"log_mel expects {SAMPLE_RATE} Hz audio; resample first (got {sample_rate})."
        )
    out = log_mel_spectrogram(np.asarray(wav, np.float32), ALIGNER_MEL)
    if n_frames is not None:
        out = out[:n_frames]
        if len(out) < n_frames:
            out = np.pad(out, ((0, n_frames - len(out)), (0, 0)), mode="edge")
    return out


@functools.partial(jax.jit, static_argnums=0)
def _phoneme_log_probs(graphdef, state, mel, frame_mask):
    model = nnx.merge(graphdef, state)
    return ctc.phoneme_log_probs(model(mel, frame_mask))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _emissions_and_prior(
    graphdef, kind, optional_ids, terms, state, mel, frame_mask, phonemes, phoneme_mask
):
    """Emissions [B, T, N] of the transcripts and the log-prior [B, T, N] that training added
    to them (``ctc.emission_log_prior``: the same function, so alignment matches training)."""
    model = nnx.merge(graphdef, state)
    if kind == "ctc":
        lp = ctc.phoneme_log_probs(model(mel, frame_mask))
        emis = jnp.take_along_axis(lp, phonemes[:, None, :], axis=-1)
    else:
        emis = model(mel, frame_mask, phonemes, phoneme_mask)[0]
    optional = jnp.isin(phonemes, jnp.asarray(optional_ids, jnp.int32)) if optional_ids else None
    return emis, ctc.emission_log_prior(mel, frame_mask, phoneme_mask, optional, terms)


class Aligner:
    """A trained aligner model: per-frame phoneme log-probs and Viterbi durations."""

    def __init__(self, model: nnx.Module, config: Any):
        self.config = config
        self.vocab_size = int(config.model.vocab_size)
        self.kind = model_kind(config)
        self.optional_ids = tuple(int(i) for i in config.data.get("optional_ids", ()) or ())
        self.prior = ctc.EmissionPrior.from_config(config.get("loss", {}))
        self._graphdef, self._state = nnx.split(model)

    @classmethod
    def from_checkpoint(cls, workdir: str) -> Aligner:
        """Load the EMA (else raw) weights of the latest checkpoint in an aligner workdir."""
        path = epath.Path(workdir) / "config.json"
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: {workdir} is not an aligner workdir (train one with "
                "naturalspeech2_jax.align.api.train_aligner or launch/train.py)."
            )
        config = ml_collections.ConfigDict(json.loads(path.read_text()))
        if config.task != "aligner":
            raise ValueError(f"{workdir} holds a {config.task!r} run, not an aligner.")
        if latest_step(workdir) is None:
            raise FileNotFoundError(f"{workdir}/checkpoints has no checkpoint; train first.")
        model = nnx.eval_shape(lambda: build_aligner(config, nnx.Rngs(0)))
        return cls(restore_params(workdir, model)[0], config)

    def log_probs(self, mels: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Blank-free phoneme log-probs [T_i, V] for each mel [T_i, n_mels] (CTC model only)."""
        if self.kind != "ctc":
            raise ValueError(
                "per-frame phoneme log-probs exist only for the CTC aligner; this one is "
                f"{self.kind!r} (use Aligner.emissions)."
            )
        return self._batched(mels, None)

    def emissions(
        self, mels: Sequence[np.ndarray], phonemes: Sequence[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(emissions, log-prior), each [T_i, N_i], for every utterance: log p(token n of the
        transcript | frame t) (the CTC model's phoneme log-probs at the transcript's ids, or the
        attention model's log-attention over its tokens) and what Viterbi adds to them."""
        return self._batched(mels, phonemes)

    def _batched(
        self, mels: Sequence[np.ndarray], phonemes: Sequence[np.ndarray] | None
    ) -> list[Any]:
        """Run the model over length-sorted, padded batches of BATCH utterances."""
        out: list[Any] = [None] * len(mels)
        order = sorted(range(len(mels)), key=lambda i: len(mels[i]))
        for start in range(0, len(order), BATCH):
            idx = order[start : start + BATCH]
            t_pad = _bucket(max(len(mels[i]) for i in idx), FRAME_BUCKET)
            mel = np.zeros((BATCH, t_pad, mels[idx[0]].shape[1]), np.float32)
            mask = np.zeros((BATCH, t_pad), np.float32)
            for row, i in enumerate(idx):
                mel[row, : len(mels[i])] = mels[i]
                mask[row, : len(mels[i])] = 1.0
            if phonemes is None:
                lp = np.asarray(_phoneme_log_probs(self._graphdef, self._state, mel, mask))
                for row, i in enumerate(idx):
                    out[i] = lp[row, : len(mels[i])]
                continue
            n_pad = _bucket(max(len(phonemes[i]) for i in idx), TOKEN_BUCKET)
            ids = np.zeros((BATCH, n_pad), np.int32)
            ids_mask = np.zeros((BATCH, n_pad), np.float32)
            for row, i in enumerate(idx):
                ids[row, : len(phonemes[i])] = phonemes[i]
                ids_mask[row, : len(phonemes[i])] = 1.0
            emis, prior = _emissions_and_prior(
                self._graphdef,
                self.kind,
                self.optional_ids,
                self.prior,
                self._state,
                mel,
                mask,
                ids,
                ids_mask,
            )
            emis, prior = np.asarray(emis), np.asarray(prior)
            for row, i in enumerate(idx):
                t, n = len(mels[i]), len(phonemes[i])
                out[i] = (emis[row, :t, :n], prior[row, :t, :n])
        return out

    def align_batch(
        self,
        mels: Sequence[np.ndarray],
        phonemes: Sequence[np.ndarray],
        *,
        min_frames: Sequence[np.ndarray | int] | None = None,
        min_confidence: float | None = None,
        on_error: str = "raise",
    ) -> list[Alignment | AlignmentError]:
        """Viterbi alignments (durations sum to each mel's T exactly).

        ``min_frames[k]`` is utterance k's per-token minimum (0 for optional silences and word
        boundaries; default 1 everywhere). An utterance that cannot be aligned (fewer frames than
        tokens) or whose confidence is below ``min_confidence`` raises ``AlignmentError``, or,
        with ``on_error="return"``, leaves the error in its place so a corpus job can report and
        skip it.
        """
        if on_error not in ("raise", "return"):
            raise ValueError(f"on_error must be 'raise' or 'return', not {on_error!r}.")
        if len(mels) != len(phonemes):
            raise ValueError(f"{len(mels)} mels but {len(phonemes)} phoneme sequences.")
        n_mels = int(self.config.model.n_mels)
        for mel, p in zip(mels, phonemes, strict=True):
            if np.ndim(mel) != 2 or np.shape(mel)[1] != n_mels:
                raise ValueError(f"mel must be [T, {n_mels}] (api.log_mel); got {np.shape(mel)}.")
            if len(p) and int(np.max(p)) >= self.vocab_size:
                raise ValueError(f"phoneme id {int(np.max(p))} >= aligner vocab {self.vocab_size}.")
        optional = np.asarray(self.optional_ids, np.int64)
        results: list[Alignment | AlignmentError] = []
        # empty transcripts have nothing to attend to: Viterbi reports them below
        safe = [p if len(p) else np.zeros(1, np.int64) for p in phonemes]
        for k, (em, prior) in enumerate(self.emissions(mels, safe)):
            ids = np.asarray(phonemes[k], np.int64)
            em, prior = em[:, : len(ids)], prior[:, : len(ids)]
            if min_frames is not None:
                mf = min_frames[k]
            else:  # tokens the aligner was trained to let take no frames
                mf = np.where(np.isin(ids, optional), 0, 1) if len(optional) else 1
            try:
                results.append(
                    viterbi_align(em, mf, min_confidence=min_confidence, log_prior=prior)
                )
            except AlignmentError as err:
                if on_error == "raise":
                    raise
                results.append(err)
        return results

    def align(
        self,
        mel: np.ndarray,
        phoneme_ids: np.ndarray,
        *,
        min_frames: np.ndarray | int = 1,
        min_confidence: float | None = None,
    ) -> np.ndarray:
        """Durations int32 [N] (sum == len(mel)) of one utterance."""
        return self.align_batch(
            [mel], [phoneme_ids], min_frames=[min_frames], min_confidence=min_confidence
        )[0].durations


def _bucket(n: int, step: int) -> int:
    """``n`` rounded up to a multiple of ``step`` (at least ``step``)."""
    return max(step, -(-n // step) * step)
