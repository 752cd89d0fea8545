"""Held-out-speaker samples of a prepared dataset: prompt, ground truth and synthesis, plus the
evaluation suite's pair list (what ``launch/quickstart.py``'s samples stage writes).

- ``write_heldout_samples``: each target prompted by another utterance of its speaker;
- ``write_pair_samples``: the pairs of ``launch/evaluate.py tts`` (3 s prompts), synthesised;
- ``write_same_utterance_samples``: speakers with one utterance (prompt = its start, target =
  the rest), for speaker similarity on the real-speech recipe's native hold-out;
- ``write_conversion_samples``: voice conversion from one held-out speaker to another.
"""

from __future__ import annotations

import logging

import numpy as np
from etils import epath

from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE
from naturalspeech2_jax.audio.io import save_audio
from naturalspeech2_jax.data import pipeline
from naturalspeech2_jax.data.codes import as_text, eval_pairs
from naturalspeech2_jax.diffusion.defaults import DEFAULT_SAMPLER, DEFAULT_STEPS
from naturalspeech2_jax.evaluation.corpus import (
    TestPair,
    load_audio,
    snap_prompt_to_phonemes,
    write_pair_list,
)
from naturalspeech2_jax.inference.plots import plot_synthesis
from naturalspeech2_jax.inference.synthesizer import Synthesizer
from naturalspeech2_jax.inference.voice_conversion import convert

log = logging.getLogger(__name__)


def _pair_list(pairs: list[TestPair], out_dir: epath.Path) -> epath.Path:
    """``out_dir/pairs.tsv``: the evaluation suite's list of what was written."""
    path = out_dir / "pairs.tsv"
    write_pair_list(pairs, path)
    return path


def write_heldout_samples(
    synth: Synthesizer,
    dataset_dir: str,
    split: str,
    out_dir: epath.Path,
    *,
    count: int = 4,
    sampler: str = DEFAULT_SAMPLER,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
) -> epath.Path:
    """Synthesise ``count`` sentences of ``split``, each prompted by ANOTHER utterance of its
    speaker; writes ``<id>_{prompt,ground_truth,generated}.wav``, ``<id>_generated.png``,
    ``<id>_durations.npy`` and ``pairs.tsv`` under ``out_dir``; returns the pairs.tsv path."""
    source = pipeline.open_split(dataset_dir, split)
    examples = [source[i] for i in range(min(len(source), 64 * count))]
    out_dir = epath.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = []
    for k, (t, p) in enumerate(eval_pairs(examples, count)):
        tgt, pr = examples[t], examples[p]
        pid = f"{k:02d}_{as_text(tgt['speaker'])}"
        prompt = np.asarray(pr["audio"], np.float32)[: synth.prompt_frames * HOP_LENGTH] / 32768
        gt = np.asarray(tgt["audio"], np.float32) / 32768.0
        text = as_text(tgt["text"])
        result = synth.synthesize(text, prompt, sampler=sampler, steps=steps, seed=seed + k)
        save_audio(out_dir / f"{pid}_prompt.wav", prompt)
        save_audio(out_dir / f"{pid}_ground_truth.wav", gt)
        save_audio(out_dir / f"{pid}_generated.wav", result.wav)
        with (out_dir / f"{pid}_durations.npy").open("wb") as f:
            np.save(f, result.durations)
        plot_synthesis(str(out_dir / f"{pid}_generated.png"), result, f"{pid}: {text}")
        pairs.append(TestPair(
            pair_id=pid, speaker=as_text(tgt["speaker"]), target_text=text,
            ground_truth_audio=str(out_dir / f"{pid}_ground_truth.wav"),
            prompt_audio=str(out_dir / f"{pid}_prompt.wav"),
            ground_truth_durations=tuple(int(x) for x in tgt["durations"]),
        ))  # fmt: skip
    return _pair_list(pairs, out_dir)


def write_pair_samples(
    synth: Synthesizer,
    pairs: list[TestPair],
    out_dir: epath.Path,
    *,
    sampler: str = DEFAULT_SAMPLER,
    steps: int = DEFAULT_STEPS,
    guidance_scale: float = 1.0,
    seed: int = 0,
) -> epath.Path:
    """Synthesise evaluation pairs (``evaluation.corpus.pairs_from_prepared``: 3 s prompts cut
    on phoneme boundaries from another utterance, the protocol of ``launch/evaluate.py tts``):
    ``<pair id>_generated.wav`` and ``_durations.npy`` under ``out_dir`` and ``pairs.tsv``."""
    out_dir = epath.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for k, pair in enumerate(pairs):
        prompt = load_audio(pair.prompt_audio, start=pair.prompt_start,
                            seconds=pair.prompt_seconds)  # fmt: skip
        result = synth.synthesize(pair.target_text, prompt, sampler=sampler, steps=steps,
                                  guidance_scale=guidance_scale, seed=seed + k)  # fmt: skip
        save_audio(out_dir / f"{pair.pair_id}_generated.wav", result.wav)
        with (out_dir / f"{pair.pair_id}_durations.npy").open("wb") as f:
            np.save(f, result.durations)
        if k < 4:  # a few mel/pitch/duration pictures, not one per pair
            plot_synthesis(str(out_dir / f"{pair.pair_id}_generated.png"), result,
                           f"{pair.pair_id}: {pair.target_text}")  # fmt: skip
    return _pair_list(pairs, out_dir)


def write_same_utterance_samples(
    synth: Synthesizer,
    dataset_dir: str,
    split: str,
    out_dir: epath.Path,
    *,
    prompt_seconds: float = 3.0,
    min_target_seconds: float = 1.0,
    sampler: str = DEFAULT_SAMPLER,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
) -> epath.Path:
    """Samples for speakers with ONE utterance each (the native hold-out of the real-speech
    recipe): the prompt is the utterance's first ``prompt_seconds`` (whole phonemes) and the
    target is the rest of it, synthesised from the phonemes that follow the prompt.

    The ground truth is then the same recording's continuation: a similarity reference in the
    same voice and channel. A pair's target text is its phonemes, space-separated (the
    transcript is not split into words), so these samples are for speaker similarity and
    DNSMOS, not WER. An utterance whose
    continuation is shorter than ``min_target_seconds`` is skipped with a warning.
    """
    source = pipeline.open_split(dataset_dir, split)
    out_dir = epath.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(len(source)):
        ex = source[i]
        uid, speaker = as_text(ex["id"]), as_text(ex["speaker"])
        durations = [int(d) for d in ex["durations"]]
        _, seconds, span = snap_prompt_to_phonemes(durations, 0.0, prompt_seconds)
        cut = sum(span) * HOP_LENGTH
        audio = np.asarray(ex["audio"], np.float32) / 32768.0
        rest = audio[cut : sum(durations) * HOP_LENGTH]
        if len(rest) < min_target_seconds * SAMPLE_RATE or len(span) == len(durations):
            left = len(rest) / SAMPLE_RATE
            log.warning("%s of %s: %.1f s after the %.1f s prompt, under %.1f s; skipped",
                        uid, split, left, seconds, min_target_seconds)  # fmt: skip
            continue
        tokens = [synth.vocab.tokens[int(t)] for t in ex["phonemes"][len(span) :]]
        result = synth.synthesize(
            phonemes=tokens, prompt_audio=audio[:cut], sampler=sampler, steps=steps, seed=seed + i
        )
        pid = f"{speaker}_{uid}"
        save_audio(out_dir / f"{pid}_prompt.wav", audio[:cut])
        save_audio(out_dir / f"{pid}_ground_truth.wav", rest)
        save_audio(out_dir / f"{pid}_generated.wav", result.wav)
        pairs.append(TestPair(
            pair_id=pid, speaker=speaker, target_text=" ".join(tokens),
            ground_truth_audio=str(out_dir / f"{pid}_ground_truth.wav"),
            prompt_audio=str(out_dir / f"{pid}_prompt.wav"),
            ground_truth_durations=tuple(durations[len(span) :]),
        ))  # fmt: skip
    if not pairs:
        raise ValueError(f"no utterance of split {split!r} is long enough for a same-utterance "
                         f"pair ({prompt_seconds} s prompt + {min_target_seconds} s); check "
                         "the split.")  # fmt: skip
    return _pair_list(pairs, out_dir)


def write_conversion_samples(
    synth: Synthesizer,
    dataset_dir: str,
    split: str,
    out_dir: epath.Path,
    *,
    count: int = 20,
    sampler: str = DEFAULT_SAMPLER,
    steps: int = 25,  # voice conversion's own default (inference.voice_conversion)
) -> epath.Path:
    """Voice conversion between held-out speakers: ``count`` utterances (one per speaker, round
    robin), each re-spoken in the voice of a prompt from the NEXT speaker (sorted by name), with
    the utterance's own phonemes and durations (``inference.voice_conversion.convert``).

    Writes ``<id>_{source,target_prompt,converted}.wav`` and ``conversions.tsv`` (id, source
    speaker, target speaker, the three paths); returns the TSV's path. Scored by
    ``evaluation.conversion.conversion_similarity``.
    """
    source = pipeline.open_split(dataset_dir, split)
    examples = [source[i] for i in range(len(source))]
    by_speaker: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_speaker.setdefault(as_text(ex["speaker"]), []).append(i)
    speakers = sorted(by_speaker)
    if len(speakers) < 2:
        raise ValueError(f"split {split!r} has {len(speakers)} speaker(s); voice conversion "
                         "needs two or more.")  # fmt: skip
    out_dir = epath.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = ["id\tsource_speaker\ttarget_speaker\tsource\ttarget_prompt\tconverted"]
    for k in range(count):
        src_spk = speakers[k % len(speakers)]
        tgt_spk = speakers[(k + 1) % len(speakers)]
        src_utts, tgt_utts = by_speaker[src_spk], by_speaker[tgt_spk]
        src = examples[src_utts[(k // len(speakers)) % len(src_utts)]]
        tgt = examples[tgt_utts[-1 - (k // len(speakers)) % len(tgt_utts)]]
        src_wav = np.asarray(src["audio"], np.float32) / 32768.0
        frames = int(np.sum(src["durations"]))
        src_wav = src_wav[: frames * HOP_LENGTH]
        prompt = np.asarray(tgt["audio"], np.float32)[: synth.prompt_frames * HOP_LENGTH] / 32768
        tokens = [synth.vocab.tokens[int(t)] for t in src["phonemes"]]
        out = convert(synth, src_wav, prompt, phonemes=tokens, durations=src["durations"],
                      sampler=sampler, steps=steps)  # fmt: skip
        cid = f"{k:02d}_{src_spk}_to_{tgt_spk}"
        paths = [out_dir / f"{cid}_{n}.wav" for n in ("source", "target_prompt", "converted")]
        for path, wav in zip(paths, (src_wav, prompt, out.wav), strict=True):
            save_audio(path, wav)
        rows.append("\t".join([cid, src_spk, tgt_spk, *map(str, paths)]))
    path = out_dir / "conversions.tsv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path
