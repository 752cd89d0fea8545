"""Voice conversion (NaturalSpeech 2's extension): source speech re-spoken in a target voice.

1. The source's codec latent is encoded to noise by running the probability-flow ODE from t=0
   to t=1 (``samplers.ddim_encode``), conditioned on the source's own phonemes, durations and
   pitch, with the source itself as the speech prompt;
2. a sampler runs the ODE back from that z_1 with the TARGET prompt, the same phonemes and
   durations, and the source's pitch contour moved to the target's register (its mean log-F0
   is shifted to the target prompt's).

The source's phonemes come from its transcript (``text``) or ``phonemes``. Their durations are,
in order of preference: given (``durations``); read off the source by pocketsphinx
(``aligner="pocketsphinx"``, ``align/sphinx.py``: needs ``text``) or by the built-in aligner
(``aligner``: the one ``launch/prepare_data.py --durations=aligner`` trained on the same corpus,
``DATA/_work/<name>/aligner``, whose phoneme ids are the NS2 vocabulary's); or predicted with the
source as prompt and rescaled to the source's length (no aligner needed, but each phoneme's
timing is then the predictor's, not the source's, so the content drifts against the latent).
The output has exactly the source's number of frames.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE
from naturalspeech2_jax.align import api as align_api
from naturalspeech2_jax.align import sphinx
from naturalspeech2_jax.audio import (
    log_mel_spectrogram,
    normalize_loudness,
    pad_or_trim_to_frames,
    to_pcm16,
)
from naturalspeech2_jax.audio.io import AudioError, load_audio
from naturalspeech2_jax.audio.pitch import extract_pitch
from naturalspeech2_jax.diffusion import losses as L
from naturalspeech2_jax.diffusion.samplers import ddim_encode
from naturalspeech2_jax.inference.synthesizer import (
    FRAME_BUCKETS,
    TOKEN_BUCKETS,
    SynthesisError,
    SynthesisResult,
    Synthesizer,
    bucket,
    tame_huge_samples,
)
from naturalspeech2_jax.models.ns2 import predict_durations_jit
from naturalspeech2_jax.text.g2p import is_phoneme


def rescale_durations(durations: np.ndarray, total: int) -> np.ndarray:
    """Integer durations proportional to ``durations`` summing to ``total`` (largest remainder)."""
    d = np.maximum(np.asarray(durations, np.float64), 1e-3)
    exact = d / d.sum() * total
    out = np.floor(exact).astype(np.int64)
    rest = total - int(out.sum())
    out[np.argsort(-(exact - out))[:rest]] += 1
    return out.astype(np.int32)


@functools.partial(nnx.jit, static_argnames=("steps", "max_frames"))
def _encode_jit(model, phonemes, token_mask, pz, prompt_mask, durations, log_f0, z0, *, steps,
                max_frames):  # fmt: skip
    """Source latent (normalised) -> z_1 by the deterministic ODE, conditioned on the source."""
    cache, _, _, fm = model.prepare_denoiser(
        phonemes, token_mask, pz, prompt_mask, durations, log_f0, max_frames
    )
    dtype = model._dtype()

    def x0_fn(z, t):
        return model.denoiser.denoise(z.astype(dtype), t, fm, cache).astype(jnp.float32)

    return ddim_encode(x0_fn, z0 * fm[..., None], model.sde, steps) * fm[..., None]


def _preparation_mel(wav: np.ndarray, frames: int) -> np.ndarray:
    """The log-mel [frames, 80] that launch/prepare_data.py showed the aligner for this audio:
    its own steps (loudness-normalised, then cut or padded to whole frames, then the mel)."""
    wav = normalize_loudness(np.asarray(wav, np.float32))
    return log_mel_spectrogram(pad_or_trim_to_frames(wav, n_frames=frames))


def align_source(aligner: Any, wav: np.ndarray, tokens: list[str], ids: np.ndarray,
                 frames: int) -> np.ndarray:  # fmt: skip
    """Durations [len(ids)] summing to ``frames``: the built-in aligner's Viterbi path on ``wav``.

    The aligner (a checkpoint directory or an ``align.api.Aligner``) sees what preparation showed
    it: phonemes as themselves and ``<sil>``, ``<wb>`` and punctuation as its optional silence
    class, which may take zero frames.
    """
    if not isinstance(aligner, align_api.Aligner):
        aligner = align_api.Aligner.from_checkpoint(str(aligner))
    spoken = np.asarray([is_phoneme(t) for t in tokens], bool)
    if not aligner.optional_ids:
        raise SynthesisError(
            "the aligner has no silence class (data.optional_ids); pass the one "
            "launch/prepare_data.py trained, DATA/_work/<name>/aligner."
        )
    acoustic = np.where(spoken, ids, aligner.optional_ids[0]).astype(np.int64)
    if int(acoustic.max()) >= aligner.vocab_size:
        raise SynthesisError(
            f"the aligner's vocabulary ({aligner.vocab_size} ids) is smaller than the NS2 "
            "checkpoint's; pass the aligner trained on its corpus."
        )
    mel = _preparation_mel(wav, frames)
    try:
        durations = aligner.align(mel, acoustic, min_frames=spoken.astype(np.int64))
    except align_api.AlignmentError as e:
        raise SynthesisError(f"the aligner could not align the source to its transcript ({e}); "
                             "check the text, or leave out the aligner.") from None  # fmt: skip
    return np.asarray(durations, np.int32)


def sphinx_align_source(wav: np.ndarray, text: str, tokens: list[str], frames: int) -> np.ndarray:
    """Durations [len(tokens)] summing to ``frames`` from pocketsphinx's forced alignment of
    ``wav`` to ``text`` (``align/sphinx.py``), on the audio preparation would have aligned."""
    wav = pad_or_trim_to_frames(normalize_loudness(np.asarray(wav, np.float32)), n_frames=frames)
    pcm = to_pcm16(wav)  # as preparation stores it
    try:
        d, _ = sphinx.SphinxAligner().align(
            pcm, sphinx.transcript_words(text), tokens, [is_phoneme(t) for t in tokens],
            frames, SAMPLE_RATE / HOP_LENGTH, pronounce=sphinx.espeak_pronunciation,
        )  # fmt: skip
    except sphinx.AlignmentError as e:
        raise SynthesisError(f"pocketsphinx could not align the source to its transcript ({e}); "
                             "check the text, or leave out the aligner.") from None  # fmt: skip
    return d


def _source_pitch(wav: np.ndarray, frames: int) -> tuple[np.ndarray, float]:
    """(log-F0 [frames] interpolated, mean voiced log-F0) of a waveform."""

    log_f0, voiced = extract_pitch(wav, method="dio")
    log_f0 = np.pad(log_f0[:frames], (0, max(frames - len(log_f0), 0)), mode="edge")
    voiced = np.asarray(voiced[:frames], bool)
    mean = float(log_f0[: len(voiced)][voiced].mean()) if voiced.any() else float(log_f0.mean())
    return log_f0.astype(np.float32), mean


MIN_SOURCE_SECONDS = 0.5
MAX_SOURCE_SECONDS = FRAME_BUCKETS[-1] * HOP_LENGTH / SAMPLE_RATE  # 25.6 s: the largest bucket


def read_source(source_audio: Any) -> np.ndarray:
    """The source speech (a path, or a 16 kHz waveform) as float32 16 kHz mono, checked:
    SynthesisError (one sentence naming it and the fix) when it is not audio, NaN or infinite,
    shorter than 0.5 s, silent, or longer than the largest frame bucket (25.6 s; a longer file is
    refused after reading only its header)."""
    if isinstance(source_audio, str | os.PathLike):
        name = str(source_audio)
        try:
            import soundfile

            wav = load_audio(source_audio, end=MAX_SOURCE_SECONDS + 1.0)
            seconds = float(soundfile.info(name).duration)
        except (AudioError, RuntimeError, OSError) as e:
            raise SynthesisError(str(e) if isinstance(e, AudioError) else
                                 f"source {name} cannot be read ({e}).") from None  # fmt: skip
    else:
        name = "the source audio"
        arr = np.asarray(source_audio)
        if arr.dtype.kind not in "fiub":
            raise SynthesisError(f"the source audio is not a waveform ({arr.dtype} array); pass "
                                 "a path or an array of 16 kHz samples.")  # fmt: skip
        wav = arr.astype(np.float32).reshape(-1)
        seconds = len(wav) / SAMPLE_RATE
        if not np.all(np.isfinite(wav)):
            raise SynthesisError("the source audio holds NaN or infinite samples; pass finite "
                                 "audio.")  # fmt: skip
        wav = tame_huge_samples(wav)
    if seconds > MAX_SOURCE_SECONDS:
        raise SynthesisError(
            f"{name} lasts {seconds:.1f} s; voice conversion takes at most "
            f"{MAX_SOURCE_SECONDS:.1f} s at once, so cut it into shorter pieces."
        )
    if len(wav) < MIN_SOURCE_SECONDS * SAMPLE_RATE:
        raise SynthesisError(f"{name} lasts {len(wav) / SAMPLE_RATE:.2f} s; pass at least "
                             f"{MIN_SOURCE_SECONDS} s of speech to convert.")  # fmt: skip
    if np.abs(wav).max() < 1e-3:
        raise SynthesisError(f"{name} is silent; pass the speech to convert.")
    return wav


def convert(
    synth: Synthesizer,
    source_audio: Any,
    target_prompt: Any,
    *,
    text: str | None = None,
    phonemes: list[str] | None = None,
    durations: np.ndarray | None = None,
    sampler: str = "dpm++2m",
    steps: int = 25,
    encode_steps: int | None = None,
    keep_pitch: bool = False,
    aligner: Any = None,
) -> SynthesisResult:
    """Re-speak ``source_audio`` (path or 16 kHz waveform) in the voice of ``target_prompt``."""
    if text is None and phonemes is None:
        raise SynthesisError("voice conversion needs the source's transcript; pass text=... (or "
                             "phonemes=...).")  # fmt: skip
    src = read_source(source_audio)
    tokens = list(phonemes) if phonemes is not None else synth.phonemize(text)
    ids = synth.encode_tokens(tokens)
    nt = bucket(len(ids), TOKEN_BUCKETS, "phonemes")
    z_src = synth.codec.latent(synth.codec.encode(src))
    frames = len(z_src)
    nf = bucket(frames, FRAME_BUCKETS, "source frames")
    src_prompt = synth.prompt_latent(synth.load_prompt(src))
    tgt_wav = synth.load_prompt(target_prompt)
    tgt_prompt = synth.prompt_latent(tgt_wav)
    stats = {k: jnp.asarray(v) for k, v in synth.latent_stats.items()}
    phon = np.zeros((1, nt), np.int32)
    tmask = np.zeros((1, nt), np.float32)
    phon[0, : len(ids)], tmask[0, : len(ids)] = ids, 1.0
    pz = L.normalize(jnp.asarray(src_prompt[0][None]), stats)
    pm = jnp.asarray(src_prompt[1][None])
    if durations is None and aligner == "pocketsphinx":
        if text is None:
            raise SynthesisError("aligner='pocketsphinx' aligns words: pass text=..., not only "
                                 "phonemes.")  # fmt: skip
        durations = sphinx_align_source(src, text, tokens, frames)
    elif durations is None and aligner is not None:
        durations = align_source(aligner, src, tokens, ids, frames)
    if durations is None:
        pred = np.asarray(predict_durations_jit(
            synth.model, jnp.asarray(phon), jnp.asarray(tmask), pz, pm, jnp.float32(1.0)
        ))[0, : len(ids)]  # fmt: skip
        durations = rescale_durations(pred, frames)
    durations = np.asarray(durations, np.int32)
    if len(durations) != len(ids) or int(durations.sum()) != frames:
        raise SynthesisError(f"durations must give one value per phoneme ({len(ids)}) summing to "
                             f"the source's {frames} frames.")  # fmt: skip
    log_f0, src_mean = _source_pitch(src, frames)
    d = np.zeros((1, nt), np.int32)
    d[0, : len(ids)] = durations
    lf = np.pad(log_f0, (0, nf - frames), mode="edge")[None]
    z0 = np.zeros((1, nf, z_src.shape[-1]), np.float32)
    z0[0, :frames] = z_src
    z1 = _encode_jit(
        synth.model, jnp.asarray(phon), jnp.asarray(tmask), pz, pm, jnp.asarray(d),
        jnp.asarray(lf), L.normalize(jnp.asarray(z0), stats),
        steps=int(encode_steps or steps), max_frames=nf,
    )  # fmt: skip
    if not keep_pitch:  # move the contour to the target's register, keeping its shape
        _, tgt_mean = _source_pitch(tgt_wav, len(tgt_wav) // HOP_LENGTH)
        log_f0 = log_f0 + (tgt_mean - src_mean)
    out = synth._generate(
        [tokens], tgt_prompt, durations=[durations], log_f0=[log_f0], sampler=sampler,
        steps=steps, init=np.asarray(jax.device_get(z1))[:, :frames],
    )[0]  # fmt: skip
    return out
