"""Text (or phonemes) + a few seconds of prompt speech -> 16 kHz speech in the prompt's voice.

    from naturalspeech2_jax.inference import Synthesizer
    synth = Synthesizer.from_checkpoint("runs/ns2_tiny")        # local or gs:// (etils.epath)
    out = synth.synthesize("Hello there. How are you?", "prompt.wav", sampler="dpm++2m", steps=12)
    out.wav            # float32 [samples] at 16 kHz
    out.alignment      # [(phoneme, start_s, end_s), ...]; out.durations: frames per phoneme
    outs = synth.synthesize_batch(["One.", "Two sentences here."], "prompt.wav")

An NS2 run (the ``--workdir`` of ``launch/train.py --config=configs/diffusion.py``) records in every
checkpoint the phoneme vocabulary, the codec run and the latent statistics, so the run directory is
all inference needs; a model folder written by ``launch/export.py`` (weights, configs, codec and
vocabulary in one folder: ``inference/exported.py``) loads the same way. Long text is split at
sentence boundaries, synthesised as one batch and joined. Shapes are bucketed (batch, phonemes,
frames; the prompt is always padded to ``max_prompt_seconds``), so one compiled program serves every
input of a bucket; ``warmup()`` compiles the buckets ahead of time. ``speed`` and ``pitch_shift``
are traced values: changing them never recompiles.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE
from naturalspeech2_jax.audio.io import AudioError, load_audio, normalize_loudness, resample
from naturalspeech2_jax.diffusion import losses as L
from naturalspeech2_jax.diffusion.defaults import DEFAULT_SAMPLER, DEFAULT_STEPS
from naturalspeech2_jax.inference import exported
from naturalspeech2_jax.inference.codec import Codec
from naturalspeech2_jax.models.ns2 import abstract_model, predict_durations_jit
from naturalspeech2_jax.text.g2p import WB, phonemize
from naturalspeech2_jax.text.vocab import PhonemeVocab, UnknownSymbolError
from naturalspeech2_jax.train.restore import latest_step, restore_meta, restore_params

log = logging.getLogger(__name__)

FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH
BATCH_BUCKETS = (1, 2, 4, 8)
TOKEN_BUCKETS = (32, 64, 96, 128, 192, 256)
FRAME_BUCKETS = (128, 256, 384, 512, 768, 1024, 1536, 2048)
MIN_PROMPT_SECONDS = 1.0
# Sentences longer than this many phonemes are split again at clause punctuation, and clauses
# still longer at word boundaries (split_at_word_boundaries).
MAX_SENTENCE_TOKENS = 160
_TRAIN_HINT = "pass the --workdir of an NS2 run (launch/train.py --config=configs/diffusion.py)"


class SynthesisError(ValueError):
    """Input that cannot be synthesised (empty text, a bad prompt, too long...): one sentence."""


class CheckpointError(FileNotFoundError):
    """An NS2 checkpoint directory that is missing, incomplete or of another kind."""


class SynthesisResult(NamedTuple):
    """One synthesised utterance. As a tuple ``(wav, durations, ...)`` it is what the evaluation
    suite's ``Synthesize`` protocol expects."""

    wav: np.ndarray  # float32 [samples], 16 kHz
    durations: np.ndarray  # int32 [phonemes]: codec frames (12.5 ms) per phoneme
    phonemes: list[str]  # the phoneme tokens, aligned with durations
    log_f0: np.ndarray  # float32 [frames]: the log-F0 contour the denoiser was conditioned on
    sample_rate: int = SAMPLE_RATE

    @property
    def alignment(self) -> list[tuple[str, float, float]]:
        """(phoneme, start seconds, end seconds) per phoneme."""
        ends = np.cumsum(self.durations) / FRAMES_PER_SECOND
        starts = ends - np.asarray(self.durations) / FRAMES_PER_SECOND
        return [
            (p, float(s), float(e)) for p, s, e in zip(self.phonemes, starts, ends, strict=True)
        ]


def bucket(n: int, buckets: Sequence[int], what: str) -> int:
    """The smallest bucket >= n (one compiled shape per bucket)."""
    for b in buckets:
        if n <= b:
            return b
    raise SynthesisError(
        f"{n} {what} exceed the largest bucket ({buckets[-1]}); split the input into shorter "
        "sentences."
    )


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: split after . ! ? ; (kept) followed by white space."""
    parts = re.split(r"(?<=[.!?;])\s+", text.strip())
    return [p.strip() for p in parts if p.strip()]


def split_at_word_boundaries(tokens: Sequence[str], max_tokens: int) -> list[list[str]]:
    """Phoneme tokens ``[<sil>, ..., <sil>]`` in chunks of at most ``max_tokens``, cut at ``<wb>``.

    Each chunk keeps the convention of a whole utterance (one ``<sil>`` at each end; the ``<wb>``
    where it is cut is dropped) and holds as many whole words as fit. A single word longer than a
    chunk (never in practice) is cut where the chunk is full.
    """
    tokens = list(tokens)
    if len(tokens) <= max_tokens:
        return [tokens]
    if max_tokens < 3:
        raise ValueError(f"max_tokens must be >= 3 (two <sil> and a phoneme), got {max_tokens}.")
    sil = tokens[0]
    inner = tokens[1:-1] if tokens[-1] == sil else tokens[1:]
    words: list[list[str]] = [[]]
    for t in inner:
        if t == WB:
            words.append([])
        else:
            words[-1].append(t)
    room = max_tokens - 2  # the two <sil>
    chunks: list[list[str]] = []
    current: list[str] = []
    for word in (w for w in words if w):
        while len(word) > room:  # a word longer than a chunk: cut it
            if current:
                chunks.append(current)
                current = []
            chunks.append(word[:room])
            word = word[room:]
        if current and len(current) + 1 + len(word) > room:
            chunks.append(current)
            current = []
        current = [*current, WB, *word] if current else list(word)
    if current:
        chunks.append(current)
    return [[sil, *c, sil] for c in chunks]


def check_options(
    *, steps: Any = DEFAULT_STEPS, speed: Any = 1.0, temperature: Any = 1.0,
    guidance_scale: Any = 1.0, pitch_shift: Any = 0.0, seed: Any = 0,
) -> None:  # fmt: skip
    """SynthesisError (one sentence) for a sampler/prosody option synthesis cannot use."""

    def number(x: Any) -> bool:
        return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)

    def integer(x: Any) -> bool:  # 25 or 25.0, not 2.5
        return number(x) and math.isfinite(x) and float(x).is_integer()

    if not integer(steps) or steps < 1:
        raise SynthesisError(f"steps must be an integer >= 1, got {steps!r}; try {DEFAULT_STEPS}.")
    if not number(speed) or not math.isfinite(speed) or speed <= 0:
        raise SynthesisError(f"speed must be > 0, got {speed!r} (1 is normal, 2 twice as fast).")
    if not number(temperature) or not math.isfinite(temperature) or temperature <= 0:
        raise SynthesisError(f"temperature must be > 0, got {temperature!r}; try 0.83 (1/1.2).")
    if not number(guidance_scale) or not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise SynthesisError(f"guidance_scale must be >= 0, got {guidance_scale!r}; try 1.")
    if not number(pitch_shift) or not math.isfinite(pitch_shift):
        raise SynthesisError(f"pitch_shift must be a finite number of semitones, got "
                             f"{pitch_shift!r}.")  # fmt: skip
    if not integer(seed) or not 0 <= seed < 2**32:
        raise SynthesisError(f"seed must be an integer in [0, 2**32), got {seed!r}.")


def hz_to_log_f0(f0: np.ndarray) -> np.ndarray:
    """Per-frame F0 in Hz (0 = unvoiced) -> log-F0, unvoiced frames interpolated (as training)."""
    f0 = np.asarray(f0, np.float64).reshape(-1)
    voiced = f0 > 0
    if not voiced.any():
        raise SynthesisError("the given f0 has no voiced frame (all <= 0 Hz); pass F0 in Hz.")
    idx = np.arange(len(f0))
    log_f0 = np.interp(idx, idx[voiced], np.log(f0[voiced]))
    return log_f0.astype(np.float32)


# ------------------------------------------------------------------------------------ prompts
CLIPPED_SHARE = 0.01  # more samples than this at full scale: the prompt is called clipped


def _waveform(x: Any, sample_rate: Any, name: str, max_seconds: float | None) -> np.ndarray:
    """An array given as audio -> float32 mono 16 kHz (its first ``max_seconds``), checked."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub" or arr.size == 0:
        raise SynthesisError(f"{name} is not a waveform ({arr.dtype} array of shape {arr.shape}); "
                             "pass a path or a non-empty array of samples.")  # fmt: skip
    if not (isinstance(sample_rate, int | np.integer) and sample_rate > 0):
        raise SynthesisError(f"the prompt's sample rate must be a positive integer, got "
                             f"{sample_rate!r}; pass e.g. 16000.")  # fmt: skip
    if arr.ndim == 2 and arr.shape[1] <= 8 < arr.shape[0]:  # [samples, channels]
        arr = arr.mean(axis=1)
    arr = arr.astype(np.float32).reshape(-1)
    if max_seconds is not None:
        arr = arr[: int(math.ceil(max_seconds * sample_rate))]
    if not np.all(np.isfinite(arr)):
        raise SynthesisError(f"{name} holds NaN or infinite samples; pass finite audio.")
    return resample(tame_huge_samples(arr), int(sample_rate), SAMPLE_RATE)


def tame_huge_samples(wav: np.ndarray) -> np.ndarray:
    """Samples far beyond full scale (a float file in another unit) scaled to a peak of 1, so
    that resampling and features cannot overflow; the prompt's level is normalised anyway."""
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    return wav / np.float32(peak) if peak > 1e3 else wav


def read_prompt(
    prompt: Any, max_seconds: float | None, sample_rate: int = SAMPLE_RATE
) -> tuple[np.ndarray, float, str]:
    """``(wav, seconds, name)``: the first ``max_seconds`` of a prompt (a path, read no further,
    or an array at ``sample_rate``) as 16 kHz float32, its whole length and its name for
    messages. SynthesisError (one sentence naming it) when it is missing, not audio, NaN or
    infinite, shorter than ``MIN_PROMPT_SECONDS`` or silent; a clipped prompt is used with a
    warning; far-too-large sample values are scaled down."""
    if isinstance(prompt, str | os.PathLike):
        name = str(prompt)
        if epath.Path(prompt).is_dir():
            raise SynthesisError(f"prompt {name} is a folder; pass a recording (a .wav file).")
        try:
            wav = load_audio(prompt, end=max_seconds)
            import soundfile

            seconds = float(soundfile.info(str(prompt)).duration)
        except AudioError as e:
            raise SynthesisError(str(e)) from None
    else:
        if prompt is None:
            raise SynthesisError("no prompt audio; pass a recording of the target voice.")
        name = "the prompt"
        seconds = np.asarray(prompt).size / max(float(sample_rate), 1.0)
        wav = _waveform(prompt, sample_rate, name, max_seconds)
    used = len(wav) / SAMPLE_RATE
    if used < MIN_PROMPT_SECONDS:
        raise SynthesisError(
            f"{name} lasts {used:.2f} s; pass at least {MIN_PROMPT_SECONDS:.0f} s of speech "
            "(3 s works best)."
        )
    if float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))) < 1e-4 or np.abs(wav).max() < 1e-3:
        where = "" if seconds <= used + 1e-3 else f" in its first {used:.1f} s"
        raise SynthesisError(f"{name} is silent{where}; pass a recording of the target voice.")
    peak = float(np.abs(wav).max())
    clipped = float(np.mean(np.abs(wav) >= 0.999 * peak)) if peak >= 0.99 else 0.0
    if clipped > CLIPPED_SHARE:
        log.warning("%s is clipped (%.0f%% of its samples at full scale); the voice may come out "
                    "distorted", name, 100 * clipped)  # fmt: skip
    return wav, seconds, name


# ------------------------------------------------------------------------------------ loading
def _load_ns2_config(workdir: epath.Path) -> ml_collections.ConfigDict:
    if not workdir.is_dir():
        raise CheckpointError(f"NS2 checkpoint {workdir} does not exist; {_TRAIN_HINT}.")
    path = workdir / "config.json"
    if not path.exists():
        raise CheckpointError(f"{workdir} has no config.json, so it is not a training run; "
                              f"{_TRAIN_HINT}.")  # fmt: skip
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); {_TRAIN_HINT}.") from None
    if data.get("task") != "ns2":
        raise CheckpointError(
            f"{workdir} is a {data.get('task')!r} run, not an NS2 run; {_TRAIN_HINT}."
        )
    return ml_collections.ConfigDict(data)


def _load_vocab(data: Any, source: str, vocab_size: int):
    if data is None:
        raise CheckpointError(f"{source} records no phoneme vocabulary; {_TRAIN_HINT} on a "
                              "prepared dataset (it saves vocab.json).")  # fmt: skip
    try:
        vocab = PhonemeVocab.from_json(data, source=source)
    except ValueError as e:
        raise SynthesisError(f"phoneme vocabulary of {source} is unusable: {e}") from None
    if len(vocab) > vocab_size:
        raise SynthesisError(
            f"phoneme vocabulary mismatch: {source} has {len(vocab)} phonemes but the model embeds "
            f"{vocab_size}; use the vocab.json of the dataset this model was trained on."
        )
    return vocab


def _run_meta(workdir: epath.Path) -> tuple[ml_collections.ConfigDict, int, dict[str, Any]]:
    """(config, latest step, its checkpoint's ``ns2`` meta: vocab, codec run, latent statistics)
    of an NS2 training run."""
    config = _load_ns2_config(workdir)
    step = latest_step(workdir)
    if step is None:
        raise CheckpointError(
            f"{workdir}/checkpoints holds no checkpoint; train longer or {_TRAIN_HINT}."
        )
    meta = restore_meta(workdir, step).get("ns2")
    if not meta:
        raise CheckpointError(
            f"the checkpoint of {workdir} at step {step} records no codec or vocabulary "
            "(trained before checkpoints carried them); retrain it with this version."
        )
    return config, int(step), meta


def _exported_meta(part: epath.Path) -> tuple[ml_collections.ConfigDict, int, dict[str, Any]]:
    """The same for the NS2 part of an exported model: its codec is the folder's own."""
    root = part.parent
    config = _load_ns2_config(part)
    stats = exported.read_latent_stats(part)
    if stats is None:
        raise exported.ExportedModelError(
            f"{part} has no latent statistics; copy the whole folder again or re-export it."
        )
    vocab_path = root / exported.VOCAB
    try:
        vocab = json.loads(vocab_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise exported.ExportedModelError(f"cannot read {vocab_path} ({e}); copy the whole "
                                          "folder again or re-export it.") from None  # fmt: skip
    meta = {"vocab": vocab, "latent_stats": stats, "codec_checkpoint": str(root)}
    return config, int(exported.part_info(part)["step"]), meta


class Synthesizer:
    """A restored NS2 model + its codec + its phoneme vocabulary, with bucketed jitted synthesis."""

    def __init__(
        self,
        model: Any,
        codec: Any,
        vocab: Any,
        latent_stats: dict[str, np.ndarray],
        config: Any,
        *,
        checkpoint: str = "",
        step: int | None = None,
        max_prompt_seconds: float | None = None,
    ):
        self.model, self.codec, self.vocab, self.config = model, codec, vocab, config
        self.latent_stats = {k: np.asarray(latent_stats[k], np.float32) for k in ("mean", "std")}
        self.checkpoint, self.step = checkpoint, step
        prompt_frames = int(config.eval.get("prompt_frames", 240)) if "eval" in config else 240
        self.max_prompt_seconds = float(max_prompt_seconds or prompt_frames / FRAMES_PER_SECOND)
        self.prompt_frames = int(round(self.max_prompt_seconds * FRAMES_PER_SECOND))
        self.timing: dict[str, float] = {}

    @classmethod
    def from_checkpoint(
        cls,
        ns2_dir: str | epath.Path,
        *,
        codec_checkpoint: str | None = None,
        vocab: Any = None,
        max_prompt_seconds: float | None = None,
    ) -> Synthesizer:
        """Restore the latest checkpoint of an NS2 run (local or gs://) with its codec and vocab,
        or the model folder ``launch/export.py`` wrote (``ns2_dir`` is then that folder).

        ``codec_checkpoint`` overrides the recorded codec run (e.g. after moving it); ``vocab``
        (a PhonemeVocab or a vocab.json path) is checked against the checkpoint's vocabulary.
        """
        workdir = epath.Path(ns2_dir)
        part = exported.locate(workdir, "ns2")
        if part is None:  # a training run: its latest Orbax checkpoint
            config, step, meta = _run_meta(workdir)
            restore = lambda m: restore_params(workdir, m, step=step)[0]
        else:  # a folder of launch/export.py: numpy weights, no Orbax
            workdir = part.parent
            config, step, meta = _exported_meta(part)
            restore = lambda m: exported.load_weights(part, m)
        source = f"{workdir} (step {step})"
        ckpt_vocab = _load_vocab(meta.get("vocab"), source, int(config.model.vocab_size))
        beside = workdir / "vocab.json"
        if part is None and beside.exists():
            ckpt_vocab.check_compatible(json.loads(beside.read_text()).get("version", "?"),
                                        where=str(beside))  # fmt: skip
        if vocab is not None:
            given = vocab if isinstance(vocab, PhonemeVocab) else PhonemeVocab.load(vocab)
            ckpt_vocab.check_compatible(given, where=source)
        codec = Codec.from_checkpoint(codec_checkpoint or meta["codec_checkpoint"])
        want = tuple(
            int(config.codec[k]) for k in ("num_quantizers", "codebook_size", "latent_dim")
        )
        if tuple(codec.codebooks.shape) != want:
            raise CheckpointError(
                f"codec {codec.workdir} has codebooks {tuple(codec.codebooks.shape)} but {workdir} "
                f"was trained with {want}; pass the codec run it was trained with."
            )
        model = restore(abstract_model(config.model, want))
        return cls(
            model, codec, ckpt_vocab, meta["latent_stats"], config, checkpoint=str(workdir),
            step=int(step), max_prompt_seconds=max_prompt_seconds,
        )  # fmt: skip

    # ------------------------------------------------------------------------------- inputs
    def phonemize(self, text: str) -> list[str]:
        """Text -> phoneme tokens (G2P), with one clear error for empty or unpronounceable text."""
        if not isinstance(text, str) or not text.strip():
            raise SynthesisError("the text is empty; pass a sentence to synthesise.")
        try:
            tokens = phonemize(text)
        except ValueError as e:
            raise SynthesisError(
                f"the text {text[:60]!r} has nothing pronounceable ({e}); pass words."
            ) from None
        if not any(t not in self.vocab.tokens[:10] for t in tokens):
            raise SynthesisError(f"the text {text[:60]!r} has nothing pronounceable; pass words.")
        return tokens

    def encode_tokens(self, tokens: Sequence[str]) -> np.ndarray:
        if isinstance(tokens, str):
            tokens = tokens.split()
        if not tokens:
            raise SynthesisError("the phoneme sequence is empty; pass phoneme tokens or text.")
        try:
            return np.asarray(self.vocab.encode(list(tokens)), np.int32)
        except UnknownSymbolError as e:
            raise SynthesisError(
                f"phonemes {e.symbols} are not in the checkpoint's vocabulary "
                f"{self.vocab.version}; pass tokens from naturalspeech2_jax.text.g2p.phonemize."
            ) from None

    def load_prompt(self, prompt: Any, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """A prompt (path or waveform) as 16 kHz loudness-normalised audio, checked and cropped
        to its first ``max_prompt_seconds`` (see :func:`read_prompt`)."""
        wav, seconds, name = read_prompt(prompt, self.max_prompt_seconds, sample_rate)
        if seconds > self.max_prompt_seconds + 1e-3:
            log.warning("%s lasts %.1f s; using its first %.1f s (max_prompt_seconds)", name,
                        seconds, self.max_prompt_seconds)  # fmt: skip
        return normalize_loudness(wav[: self.prompt_frames * HOP_LENGTH])

    def prompt_latent(self, prompt_wav: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(latent [prompt_frames, D] padded, mask [prompt_frames]) of a loaded prompt."""
        z = self.codec.latent(self.codec.encode(prompt_wav))
        n = min(len(z), self.prompt_frames)
        latent = np.zeros((self.prompt_frames, z.shape[-1]), np.float32)
        mask = np.zeros((self.prompt_frames,), np.float32)
        latent[:n], mask[:n] = z[:n], 1.0
        return latent, mask

    # ----------------------------------------------------------------------------- synthesis
    def synthesize(
        self,
        text: str | None = None,
        prompt_audio: Any = None,
        *,
        phonemes: Sequence[str] | None = None,
        sampler: str = DEFAULT_SAMPLER,
        steps: int = DEFAULT_STEPS,
        seed: int = 0,
        speed: float = 1.0,
        pitch_shift: float = 0.0,
        durations: Sequence[int] | None = None,
        f0: np.ndarray | None = None,
        temperature: float = 1 / 1.2,
        guidance_scale: float = 1.0,
        prompt_sample_rate: int = SAMPLE_RATE,
    ) -> SynthesisResult:
        """Speech for ``text`` (or ``phonemes``) in the voice of ``prompt_audio`` (path/array).

        Long text is split at sentence boundaries and joined. ``durations`` (frames per phoneme)
        and ``f0`` (Hz per frame, 0 = unvoiced) replace the predictors (they need ``phonemes``,
        or text whose phonemes they match); ``speed`` > 1 speaks faster (predicted durations
        only); ``pitch_shift`` transposes by semitones.
        """
        if prompt_audio is None:
            raise SynthesisError("no prompt audio; pass a recording of the target voice.")
        if phonemes is None and text is None:
            raise SynthesisError("the text is empty; pass a sentence to synthesise.")
        check_options(steps=steps, speed=speed, temperature=temperature,
                      guidance_scale=guidance_scale, pitch_shift=pitch_shift,
                      seed=seed)  # fmt: skip
        self.check_guidance(guidance_scale)
        if phonemes is not None or durations is not None or f0 is not None:
            tokens = list(phonemes) if phonemes is not None else self.phonemize(text)
            chunks = [tokens]
        else:
            chunks = self.sentence_tokens(text)
        prompt = self.prompt_latent(self.load_prompt(prompt_audio, prompt_sample_rate))
        log_f0 = None if f0 is None else [hz_to_log_f0(f0)]
        given = None if durations is None else [np.asarray(durations, np.int32)]
        results = self._generate(
            chunks, prompt, durations=given, log_f0=log_f0, sampler=sampler, steps=steps,
            seed=seed, speed=speed, pitch_shift=pitch_shift, temperature=temperature,
            guidance_scale=guidance_scale,
        )  # fmt: skip
        return join_results(results)

    def synthesize_batch(
        self, texts: Sequence[str], prompt_audio: Any, *, progress: bool = False, **kwargs: Any
    ) -> list[SynthesisResult]:
        """Many texts in one voice, batched (sentences sorted by length into padded batches)."""
        if not texts:
            raise SynthesisError("no texts to synthesise; pass at least one sentence.")
        names = ("steps", "speed", "temperature", "guidance_scale", "pitch_shift", "seed")
        check_options(**{k: kwargs[k] for k in names if k in kwargs})
        self.check_guidance(kwargs.get("guidance_scale", 1.0))
        prompt_sr = kwargs.pop("prompt_sample_rate", SAMPLE_RATE)
        prompt = self.prompt_latent(self.load_prompt(prompt_audio, prompt_sr))
        per_text = [self.sentence_tokens(t) for t in texts]
        flat = [(i, tok) for i, chunks in enumerate(per_text) for tok in chunks]
        results = self._generate([tok for _, tok in flat], prompt, progress=progress, **kwargs)
        out: list[list[SynthesisResult]] = [[] for _ in texts]
        for (i, _), r in zip(flat, results, strict=True):
            out[i].append(r)
        return [join_results(rs) for rs in out]

    def sentence_tokens(self, text: str) -> list[list[str]]:
        """The phoneme tokens of ``text`` in the pieces it is synthesised in: sentences, a long
        sentence split at clause punctuation, a long clause at word boundaries (each piece at
        most ``MAX_SENTENCE_TOKENS``). SynthesisError for empty or unpronounceable text."""
        if not isinstance(text, str) or not text.strip():
            raise SynthesisError("the text is empty; pass a sentence to synthesise.")
        chunks = []
        for sentence in split_sentences(text):
            tokens = self.phonemize(sentence)
            if len(tokens) > MAX_SENTENCE_TOKENS:  # a very long sentence: split at clauses
                parts = [p for p in re.split(r"(?<=[,:])\s+", sentence) if p.strip()]
                pieces = [self.phonemize(p) for p in parts] if len(parts) > 1 else [tokens]
                for piece in pieces:  # and clauses still too long at word boundaries
                    chunks += split_at_word_boundaries(piece, MAX_SENTENCE_TOKENS)
            else:
                chunks.append(tokens)
        return chunks

    _sentence_tokens = sentence_tokens

    def _generate(
        self,
        token_lists: Sequence[Sequence[str]],
        prompt: tuple[np.ndarray, np.ndarray],
        *,
        durations: Sequence[np.ndarray] | None = None,
        log_f0: Sequence[np.ndarray] | None = None,
        sampler: str = DEFAULT_SAMPLER,
        steps: int = DEFAULT_STEPS,
        seed: int = 0,
        speed: float = 1.0,
        pitch_shift: float = 0.0,
        temperature: float = 1 / 1.2,
        guidance_scale: float = 1.0,
        progress: bool = False,
        init: np.ndarray | None = None,
    ) -> list[SynthesisResult]:
        """Synthesise token lists in batches of at most ``BATCH_BUCKETS[-1]`` (by length)."""
        from tqdm import tqdm

        check_options(steps=steps, speed=speed, temperature=temperature,
                      guidance_scale=guidance_scale, pitch_shift=pitch_shift,
                      seed=seed)  # fmt: skip

        ids = [self.encode_tokens(t) for t in token_lists]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        size = BATCH_BUCKETS[-1]
        groups = [order[k : k + size] for k in range(0, len(order), size)]
        out: list[SynthesisResult | None] = [None] * len(ids)
        timing = {"prior_diffusion_s": 0.0, "decode_s": 0.0, "audio_s": 0.0}
        for g, group in enumerate(tqdm(groups, disable=not progress, unit="batch")):
            rows = self._run_batch(
                [ids[i] for i in group], [list(token_lists[i]) for i in group], prompt,
                None if durations is None else [durations[i] for i in group],
                None if log_f0 is None else [log_f0[i] for i in group],
                sampler=sampler, steps=steps, rng=jax.random.fold_in(jax.random.key(seed), g),
                speed=speed, pitch_shift=pitch_shift, temperature=temperature,
                guidance_scale=guidance_scale, timing=timing, init=init,
            )  # fmt: skip
            for i, r in zip(group, rows, strict=True):
                out[i] = r
        self.timing = timing
        return out  # type: ignore[return-value]

    def check_guidance(self, guidance_scale: float) -> None:
        """Guidance needs an unconditional branch, which only condition dropout trains."""
        if guidance_scale == 1.0:
            return
        m = self.config.model
        if not (m.get("cond_drop_prob", 0.0) > 0 or m.get("prompt_drop_prob", 0.0) > 0):
            raise SynthesisError(
                f"guidance_scale {guidance_scale} needs a model trained with "
                f"model.cond_drop_prob or model.prompt_drop_prob > 0, and {self.checkpoint} was "
                "trained with neither; use guidance_scale 1."
            )

    def _run_batch(
        self, ids, tokens, prompt, durations, log_f0, *, sampler, steps, rng, speed, pitch_shift,
        temperature, guidance_scale, timing, init=None,
    ) -> list[SynthesisResult]:  # fmt: skip
        """One padded batch: phonemes -> durations -> (pitch, diffusion) latent -> waveform."""
        n = len(ids)
        b = bucket(n, BATCH_BUCKETS, "sentences in a batch")
        phon, tmask = pad_rows(ids, b, bucket(max(len(x) for x in ids), TOKEN_BUCKETS, "phonemes"))
        platent = np.broadcast_to(prompt[0], (b, *prompt[0].shape))
        pmask = np.broadcast_to(prompt[1], (b, *prompt[1].shape))
        start = time.perf_counter()
        if durations is None:
            stats = {k: jnp.asarray(v) for k, v in self.latent_stats.items()}
            pz = L.normalize(jnp.asarray(platent), stats)
            d = predict_durations_jit(
                self.model, jnp.asarray(phon), jnp.asarray(tmask), pz, jnp.asarray(pmask),
                jnp.float32(speed),
            )  # fmt: skip
            d = np.asarray(d)
        else:
            d = given_durations(durations, ids, phon.shape)
        totals = d.sum(axis=1)
        nf = bucket(int(totals.max()), FRAME_BUCKETS, "frames")
        lf = None if log_f0 is None else given_log_f0(log_f0, totals[:n], b, nf)
        z_init = None
        if init is not None:
            z_init = (
                jnp.zeros((b, nf, init.shape[-1]), jnp.float32)
                .at[:n, : init.shape[1]]
                .set(init[:, :nf])
            )
        out = self.model.synthesize(
            jnp.asarray(phon), jnp.asarray(tmask), jnp.asarray(platent), jnp.asarray(pmask), rng,
            sampler=sampler, steps=int(steps), temperature=float(temperature),
            durations=jnp.asarray(d), log_f0=None if lf is None else jnp.asarray(lf),
            latent_stats=self.latent_stats, guidance_scale=float(guidance_scale),
            max_frames=nf, pitch_shift=float(pitch_shift), init=z_init,
        )  # fmt: skip
        latent = np.asarray(jax.block_until_ready(out["latent"]))
        mid = time.perf_counter()
        wav = self.codec.decode(latent)
        end = time.perf_counter()
        timing["prior_diffusion_s"] += mid - start
        timing["decode_s"] += end - mid
        lf_out = np.asarray(out["log_f0"])
        rows = []
        for r in range(n):
            k, t = len(ids[r]), int(totals[r])
            rows.append(SynthesisResult(
                wav=np.asarray(wav[r, : t * HOP_LENGTH], np.float32),
                durations=d[r, :k].astype(np.int32), phonemes=list(tokens[r]),
                log_f0=lf_out[r, :t].astype(np.float32),
            ))  # fmt: skip
            timing["audio_s"] += t / FRAMES_PER_SECOND
        return rows

    # ------------------------------------------------------------------------------- warm-up
    def warmup(
        self,
        *,
        batch: int = 1,
        tokens: Sequence[int] = (TOKEN_BUCKETS[0],),
        frames: Sequence[int] = (FRAME_BUCKETS[0],),
        sampler: str = DEFAULT_SAMPLER,
        steps: int = DEFAULT_STEPS,
    ) -> float:
        """Compile the programs of these buckets now (returns the seconds it took)."""
        start = time.perf_counter()
        dim = self.codec.latent_dim
        prompt = (np.zeros((self.prompt_frames, dim), np.float32),
                  np.ones((self.prompt_frames,), np.float32))  # fmt: skip
        stats = {k: jnp.asarray(v) for k, v in self.latent_stats.items()}
        for nt in tokens:
            ones = jnp.ones((batch, nt), jnp.float32)
            pz = L.normalize(jnp.broadcast_to(prompt[0], (batch, *prompt[0].shape)), stats)
            pm = jnp.broadcast_to(prompt[1], (batch, self.prompt_frames))
            predict_durations_jit(
                self.model, ones.astype(jnp.int32), ones, pz, pm, jnp.float32(1.0)
            )
            for nf in frames:
                per = max(nf // nt, 1)
                ids = [np.full((nt,), self.vocab.wb_id, np.int32)] * batch
                d = [np.full((nt,), per, np.int32)] * batch
                self._run_batch(
                    ids, [["<wb>"] * nt] * batch, prompt, d, None, sampler=sampler, steps=steps,
                    rng=jax.random.key(0), speed=1.0, pitch_shift=0.0, temperature=1 / 1.2,
                    guidance_scale=1.0, timing={"prior_diffusion_s": 0, "decode_s": 0,
                                                "audio_s": 0},
                )  # fmt: skip
        return time.perf_counter() - start


def pad_rows(ids: Sequence[np.ndarray], rows: int, tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """(phonemes [rows, tokens], mask): padding rows repeat the first row (no empty rows, which
    would give NaNs in the attention softmax)."""
    phon = np.zeros((rows, tokens), np.int32)
    mask = np.zeros((rows, tokens), np.float32)
    for r in range(rows):
        x = ids[r] if r < len(ids) else ids[0]
        phon[r, : len(x)], mask[r, : len(x)] = x, 1.0
    return phon, mask


def given_durations(
    durations: Sequence[np.ndarray], ids: Sequence[np.ndarray], shape: tuple[int, int]
) -> np.ndarray:
    """User durations (frames per phoneme) checked and padded like the phonemes."""
    n = len(ids)
    d = np.zeros(shape, np.int32)
    for r in range(shape[0]):
        x = durations[r] if r < n else durations[0]
        if len(x) != len(ids[min(r, n - 1)]):
            raise SynthesisError(
                f"{len(x)} durations for {len(ids[min(r, n - 1)])} phonemes; pass one "
                "duration (frames) per phoneme."
            )
        if np.any(np.asarray(x) < 0):
            raise SynthesisError("durations must be >= 0 frames.")
        d[r, : len(x)] = x
    return d


def given_log_f0(
    log_f0: Sequence[np.ndarray], totals: np.ndarray, rows: int, frames: int
) -> np.ndarray:
    """User log-F0 contours [rows, frames], each checked against its utterance's frame count and
    held at its last value past the end."""
    n = len(totals)
    lf = np.zeros((rows, frames), np.float32)
    for r in range(rows):
        x = np.asarray(log_f0[r] if r < n else log_f0[0], np.float32)
        if len(x) != totals[min(r, n - 1)]:
            raise SynthesisError(
                f"f0 has {len(x)} frames but the durations sum to {totals[min(r, n - 1)]}; "
                "pass one F0 value per 12.5 ms frame."
            )
        lf[r, : len(x)] = x
        lf[r, len(x) :] = x[-1]
    return lf


def join_results(results: Sequence[SynthesisResult]) -> SynthesisResult:
    """Concatenate consecutive pieces (sentences) into one utterance."""
    if len(results) == 1:
        return results[0]
    return SynthesisResult(
        wav=np.concatenate([r.wav for r in results]),
        durations=np.concatenate([r.durations for r in results]),
        phonemes=[p for r in results for p in r.phonemes],
        log_f0=np.concatenate([r.log_f0 for r in results]),
    )


def load_synthesizer(checkpoint: str, **kwargs: Any) -> Synthesizer:
    """The evaluation suite's loader (``launch/evaluate.py tts --checkpoint DIR``)."""
    return Synthesizer.from_checkpoint(checkpoint, **kwargs)


def real_time_factor(seconds: float, audio_seconds: float) -> float:
    """Compute seconds per second of audio (< 1: faster than real time)."""
    return seconds / max(audio_seconds, 1e-9) if math.isfinite(seconds) else math.nan
