"""Zero-shot TTS evaluation: run every evaluator on generated speech beside its references.

Systems evaluated per test pair (same prompt, same text):

- ``ground_truth``: the recorded target (always);
- ``ground_truth_codec``: the recording passed through the codec (when a :class:`CodecResynthesis`
  is given), the ceiling a latent-diffusion model can reach;
- ``generated``: the output of a :class:`Synthesize` callable (when given).

Per system: WER with each ASR (the first is primary), speaker similarity to the prompt, DNSMOS,
prosody vs prompt (phoneme-level when both sides have phoneme durations, otherwise the audio-only
frame-level variant on both sides) and, for generated speech with durations, prosody vs ground
truth.
Every evaluator's compute time is recorded so the report can give its real-time factor.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from naturalspeech2_jax import SAMPLE_RATE
from naturalspeech2_jax.evaluation import prosody
from naturalspeech2_jax.evaluation.asr import get_asr, word_error_rate
from naturalspeech2_jax.evaluation.corpus import TestPair, load_audio
from naturalspeech2_jax.evaluation.dnsmos import get_dnsmos
from naturalspeech2_jax.evaluation.plugins import EvaluatorUnavailable
from naturalspeech2_jax.evaluation.report import summarize_records
from naturalspeech2_jax.evaluation.speaker import cosine_similarity, get_speaker_encoder

FAILURE_WER = 0.5


class Synthesize(Protocol):
    """Zero-shot TTS: text + prompt waveform (16 kHz mono) -> (waveform, phoneme durations or None).

    Durations are frames (hop 200) per phoneme of the synthesised speech, as the duration predictor
    produced them; they enable phoneme-level prosody metrics.
    """

    def __call__(
        self, text: str, prompt_wav: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]: ...


class CodecResynthesis(Protocol):
    """Waveform -> the same waveform encoded and decoded by the codec (16 kHz mono)."""

    def __call__(self, wav: np.ndarray) -> np.ndarray: ...


class CheckpointLoaderUnavailable(RuntimeError):
    """The project does not provide the loader a ``--checkpoint`` evaluation needs yet."""


# Where checkpoint loaders are expected, tried in order: (module, attribute). An attribute is a
# function ``f(checkpoint_dir)`` or a class with ``from_checkpoint(checkpoint_dir)``.
LOADERS = {
    "synthesizer": (
        ("naturalspeech2_jax.inference", "load_synthesizer"),
        ("naturalspeech2_jax.inference", "Synthesizer"),
    ),
    "codec": (
        ("naturalspeech2_jax.inference.codec", "Codec"),
        ("naturalspeech2_jax.inference", "load_codec"),
    ),
}


def _load_object(kind: str, checkpoint: str, **kwargs: Any) -> Any:
    missing = []
    for module_name, attribute in LOADERS[kind]:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is None or not module_name.startswith(e.name):
                raise  # the module exists but one of ITS imports is missing: a real error
            missing.append(f"{module_name}.{attribute}")
            continue
        loader = getattr(module, attribute, None)
        if loader is None:
            missing.append(f"{module_name}.{attribute}")
            continue
        if isinstance(loader, type):
            return loader.from_checkpoint(checkpoint, **kwargs)
        return loader(checkpoint, **kwargs)
    raise CheckpointLoaderUnavailable(
        f"The {kind} checkpoint loader is not available yet (none of {', '.join(missing)} "
        "exists in this tree)."
    )


def as_codec_resynthesis(codec: Any) -> Callable[..., np.ndarray]:
    """``f(wav, n_quantizers=None) -> wav`` from a codec object or callable.

    Accepts a :mod:`naturalspeech2_jax.inference.codec` ``Codec`` (``encode(wav, n_q)`` +
    ``decode_codes(codes)``), any object with ``resynth(wav)``, or a callable ``f(wav, n_q)``.
    The output is trimmed to the input's length (codecs pad to whole frames).
    """
    if hasattr(codec, "encode") and hasattr(codec, "decode_codes"):

        def resynth(wav: np.ndarray, n_quantizers: int | None = None) -> np.ndarray:
            out = codec.decode_codes(codec.encode(np.asarray(wav, np.float32), n_quantizers))
            return np.asarray(out, np.float32).reshape(-1)[: len(wav)]

        return resynth
    if hasattr(codec, "resynth"):
        return lambda wav, n_quantizers=None: np.asarray(codec.resynth(wav), np.float32)[: len(wav)]
    if callable(codec):
        return codec
    raise TypeError(f"{type(codec).__name__} is neither a codec object nor a callable")


def as_synthesize(synthesizer: Any, **options: Any) -> Synthesize:
    """A :class:`Synthesize` from an object with ``synthesize(text, prompt_wav)`` or a callable.

    ``options`` (e.g. ``sampler``, ``steps``, ``temperature``) are passed to every call. The
    result may be a waveform, ``(waveform, durations)`` or a dict with ``wav``/``audio`` and
    optional ``durations``.
    """
    fn = getattr(synthesizer, "synthesize", synthesizer)
    if not callable(fn):
        raise TypeError(f"{type(synthesizer).__name__} has no synthesize method")

    def synthesize(text: str, prompt_wav: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = fn(text, prompt_wav, **options)
        if isinstance(out, Mapping):
            wav = out["wav"] if "wav" in out else out["audio"]
            durations = out.get("durations")
        elif isinstance(out, tuple):
            wav, durations = out[0], (out[1] if len(out) > 1 else None)
        else:
            wav, durations = out, None
        wav = np.asarray(wav, np.float32).reshape(-1)
        return wav, None if durations is None else np.asarray(durations).reshape(-1)

    return synthesize


def load_from_checkpoint(kind: str, checkpoint: str, **kwargs: Any) -> Callable[..., Any]:
    """A :class:`Synthesize` (``kind="synthesizer"``) or a codec resynthesis callable
    ``f(wav, n_quantizers=None)`` (``kind="codec"``) from a checkpoint directory.

    Raises :class:`CheckpointLoaderUnavailable` (one sentence) when the loader is not in the tree.
    """
    obj = _load_object(kind, checkpoint, **kwargs)
    return as_synthesize(obj) if kind == "synthesizer" else as_codec_resynthesis(obj)


def load_object(kind: str, checkpoint: str, **kwargs: Any) -> Any:
    """The loaded object itself (a ``Codec``, a ``Synthesizer``), for what needs more than the
    evaluation callables (the codec's codes, for its codebook usage)."""
    return _load_object(kind, checkpoint, **kwargs)


def load_synthesizer_and_codec(
    checkpoint: str, **options: Any
) -> tuple[Synthesize, Callable[..., np.ndarray] | None]:
    """The synthesizer of a checkpoint (``options`` go to each synthesize call) and, when it
    carries one (``.codec``), its codec."""
    obj = _load_object("synthesizer", checkpoint)
    if "guidance_scale" in options and hasattr(obj, "check_guidance"):
        obj.check_guidance(options["guidance_scale"])  # before any pair is synthesised
    codec = getattr(obj, "codec", None)
    resynth = as_codec_resynthesis(codec) if codec is not None else None
    return as_synthesize(obj, **options), resynth


@dataclasses.dataclass
class EvaluatorConfig:
    """Which evaluators run. ``asr``: names or ``KIND:PATH`` specs; the first one is primary."""

    asr: Sequence[str] = ("moonshine", "pocketsphinx")
    speaker: bool = True
    speaker_model: str = "resemblyzer"  # or wavlm:PATH / ecapa:PATH (see speaker.py)
    dnsmos: bool = True
    prosody: bool = True


def load_evaluators(config: EvaluatorConfig) -> dict[str, Any]:
    """Build every evaluator ``config`` asks for, before any audio is processed.

    Raises :class:`~naturalspeech2_jax.evaluation.plugins.EvaluatorUnavailable` with one sentence
    when a model path or library is missing, so a run fails at once rather than per utterance.
    """
    loaded: dict[str, Any] = {}
    try:
        for spec in config.asr:
            loaded[f"asr:{spec}"] = get_asr(spec)
        if config.speaker:
            loaded["speaker"] = get_speaker_encoder(config.speaker_model)
        if config.dnsmos:
            loaded["dnsmos"] = get_dnsmos()
    except ImportError as e:  # a bundled evaluator whose package is not installed
        raise EvaluatorUnavailable(
            f"An evaluator's package is missing ({e}); install the extra: pip install -e '.[eval]'."
        ) from None
    return loaded


class _Timer:
    """Accumulated compute seconds and audio seconds per evaluator (for real-time factors)."""

    def __init__(self) -> None:
        self.compute: dict[str, float] = {}
        self.audio: dict[str, float] = {}

    def run(self, name: str, audio_seconds: float, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args)
        self.compute[name] = self.compute.get(name, 0.0) + time.perf_counter() - start
        self.audio[name] = self.audio.get(name, 0.0) + audio_seconds
        return out

    def rtf(self) -> dict[str, dict[str, float]]:
        return {
            name: {
                "compute_s": self.compute[name],
                "audio_s": self.audio[name],
                "rtf": self.compute[name] / max(self.audio[name], 1e-9),
            }
            for name in self.compute
        }


def _prosody_pair(
    wav: np.ndarray,
    durations: np.ndarray | None,
    prompt_wav: np.ndarray,
    prompt_durations: np.ndarray | None,
    timer: _Timer,
) -> tuple[dict[str, float], dict[str, float], np.ndarray | None, str]:
    """Statistics of (speech, prompt), the speech's phoneme pitch (if phoneme-level), and level."""
    seconds = (len(wav) + len(prompt_wav)) / SAMPLE_RATE
    if durations is not None and prompt_durations is not None:

        def phoneme_level():
            stats, pitch = prosody.phoneme_prosody_stats(wav, durations)
            prompt_stats, _ = prosody.phoneme_prosody_stats(prompt_wav, prompt_durations)
            return stats, prompt_stats, pitch

        stats, prompt_stats, pitch = timer.run("prosody", seconds, phoneme_level)
        return stats, prompt_stats, pitch, "phoneme"

    def frame_level():
        return prosody.audio_prosody_stats(wav), prosody.audio_prosody_stats(prompt_wav)

    stats, prompt_stats = timer.run("prosody", seconds, frame_level)
    pitch = None
    if durations is not None:
        pitch = timer.run(
            "prosody",
            len(wav) / SAMPLE_RATE,
            lambda: prosody.phoneme_pitch(prosody.extract_f0(wav), durations),
        )
    return stats, prompt_stats, pitch, "frame"


def _guarded(
    record: dict[str, Any],
    name: str,
    timer: _Timer,
    seconds: float,
    fn: Callable[..., Any],
    *args: Any,
) -> Any:
    """Run one evaluator; on error log it, note it in the record and return None.

    Generated speech can be degenerate (silent, minutes long); one bad utterance must not abort an
    evaluation of hundreds, and the record shows what failed.
    """
    try:
        return timer.run(name, seconds, fn, *args)
    except Exception as e:  # noqa: BLE001 - any evaluator failure is recorded, not fatal
        logging.warning("%s failed on %s/%s: %s", name, record["id"], record["system"], e)
        record.setdefault("errors", []).append(f"{name}: {e}")
        return None


def _score_system(
    system: str,
    pair: TestPair,
    wav: np.ndarray,
    durations: np.ndarray | None,
    prompt_wav: np.ndarray,
    prompt_embedding: np.ndarray | None,
    config: EvaluatorConfig,
    timer: _Timer,
) -> dict[str, Any]:
    seconds = len(wav) / SAMPLE_RATE
    record: dict[str, Any] = {
        "id": pair.pair_id,
        "speaker": pair.speaker,
        "system": system,
        "text": pair.target_text,
        "seconds": seconds,
    }
    for i, asr_name in enumerate(config.asr):
        asr = get_asr(asr_name)
        hypothesis = _guarded(record, f"asr:{asr.name}", timer, seconds, asr.transcribe, wav)
        # A recogniser that fails (e.g. on over-long generated audio) counts as recognising nothing.
        hypothesis = hypothesis if isinstance(hypothesis, str) else ""
        result = word_error_rate(pair.target_text, hypothesis)
        suffix = "" if i == 0 else f"_{asr.name}"
        record[f"hypothesis{suffix}"] = hypothesis
        record[f"wer{suffix}"] = result.wer
        record[f"wer_errors{suffix}"] = result.substitutions + result.deletions + result.insertions
        record[f"wer_words{suffix}"] = result.reference_words
    if config.speaker and prompt_embedding is not None:
        embedding = _guarded(
            record, "speaker", timer, seconds, get_speaker_encoder(config.speaker_model).embed, wav
        )
        if embedding is not None:
            record["speaker_similarity"] = cosine_similarity(embedding, prompt_embedding)
    if config.dnsmos:
        scores = _guarded(record, "dnsmos", timer, seconds, get_dnsmos().score, wav)
        record.update({f"dnsmos_{k}": v for k, v in (scores or {}).items()})
    if config.prosody:
        prompt_durations = (
            None if pair.prompt_durations is None else np.asarray(pair.prompt_durations)
        )
        stats, prompt_stats, pitch, level = _prosody_pair(
            wav, durations, prompt_wav, prompt_durations, timer
        )
        record["prosody_level"] = level
        record.update(prosody.prosody_vs_prompt(stats, prompt_stats))
        record["_phoneme_pitch"] = pitch
        record["_durations"] = durations
    return record


def evaluate_tts(
    pairs: Sequence[TestPair],
    synthesize: Synthesize | None = None,
    codec_resynthesize: CodecResynthesis | None = None,
    config: EvaluatorConfig | None = None,
    log_every: int = 10,
) -> dict[str, Any]:
    """Evaluate every pair; returns ``{"records", "summary", "systems", "timing", "config"}``.

    ``summary`` holds the means of the primary system (``generated`` when a synthesizer is given,
    otherwise ``ground_truth``); ``systems`` holds the same for every system.
    """
    config = config or EvaluatorConfig()
    timer = _Timer()
    records: list[dict[str, Any]] = []
    wall_start = time.perf_counter()
    for n, pair in enumerate(pairs):
        target = load_audio(pair.ground_truth_audio)
        prompt_wav = load_audio(
            pair.prompt_audio, start=pair.prompt_start, seconds=pair.prompt_seconds
        )
        prompt_embedding = None
        if config.speaker:
            prompt_embedding = timer.run(
                "speaker",
                len(prompt_wav) / SAMPLE_RATE,
                get_speaker_encoder(config.speaker_model).embed,
                prompt_wav,
            )
        gt_durations = (
            None if pair.ground_truth_durations is None else np.asarray(pair.ground_truth_durations)
        )
        systems: list[tuple[str, np.ndarray, np.ndarray | None]] = [
            ("ground_truth", target, gt_durations)
        ]
        if codec_resynthesize is not None:
            resynth = timer.run("codec", len(target) / SAMPLE_RATE, codec_resynthesize, target)
            systems.append(("ground_truth_codec", np.asarray(resynth, np.float32), gt_durations))
        if synthesize is not None:
            generated, durations = timer.run(
                "synthesize",
                0.0,
                synthesize,
                pair.target_text,
                prompt_wav,
            )
            generated = np.asarray(generated, np.float32)
            timer.audio["synthesize"] += len(generated) / SAMPLE_RATE
            durations = None if durations is None else np.asarray(durations)
            systems.append(("generated", generated, durations))
        pair_records = [
            _score_system(name, pair, wav, durs, prompt_wav, prompt_embedding, config, timer)
            for name, wav, durs in systems
        ]
        _add_prosody_vs_ground_truth(pair_records)
        for record in pair_records:
            record.pop("_phoneme_pitch", None)
            record.pop("_durations", None)
        records.extend(pair_records)
        if log_every and (n + 1) % log_every == 0:
            logging.info(
                "evaluated %d/%d pairs in %.0f s",
                n + 1,
                len(pairs),
                time.perf_counter() - wall_start,
            )
    systems_summary = summarize_records(records)
    primary = "generated" if synthesize is not None else "ground_truth"
    wall = time.perf_counter() - wall_start
    return {
        "summary": {"system": primary, **systems_summary.get(primary, {})},
        "systems": systems_summary,
        "records": records,
        "timing": {
            "wall_s": wall,
            "pairs": len(pairs),
            "evaluators": timer.rtf(),
            # ru_maxrss is in KiB on Linux.
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        },
        "config": dataclasses.asdict(config),
    }


def rescore_wer(result: dict[str, Any]) -> dict[str, Any]:
    """Recompute every record's WER from its stored hypotheses (after a normalisation change),
    and the summaries; the ASR does not run again. Returns ``result``, updated in place."""
    for record in result["records"]:
        for key in [k for k in record if k.startswith("hypothesis")]:
            suffix = key[len("hypothesis") :]
            scored = word_error_rate(record["text"], record[key] or "")
            record[f"wer{suffix}"] = scored.wer
            errors = scored.substitutions + scored.deletions + scored.insertions
            record[f"wer_errors{suffix}"] = errors
            record[f"wer_words{suffix}"] = scored.reference_words
    systems = summarize_records(result["records"])
    primary = result["summary"].get("system", "ground_truth")
    result["systems"] = systems
    result["summary"] = {"system": primary, **systems.get(primary, {})}
    return result


def _add_prosody_vs_ground_truth(pair_records: list[dict[str, Any]]) -> None:
    """Pearson/RMSE of phoneme pitch and duration against the ground truth, where both are known."""
    gt = pair_records[0]
    gt_pitch, gt_durations = gt.get("_phoneme_pitch"), gt.get("_durations")
    if gt_pitch is None or gt_durations is None:
        return
    for record in pair_records[1:]:
        pitch, durations = record.get("_phoneme_pitch"), record.get("_durations")
        if pitch is None or durations is None or len(durations) != len(gt_durations):
            continue
        scores = prosody.prosody_vs_ground_truth(pitch, durations, gt_pitch, gt_durations)
        record.update({f"{k}_vs_gt": v for k, v in scores.items()})


def is_failure(record: dict[str, Any]) -> bool:
    """An utterance counts as a failure when its primary WER exceeds 50%."""
    wer = record.get("wer")
    return wer is not None and not math.isnan(wer) and wer > FAILURE_WER
