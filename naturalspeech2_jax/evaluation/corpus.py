"""Test lists for zero-shot TTS evaluation: a minimal Kaldi-style corpus reader and pair lists.

A test pair is (target text, ground-truth target audio, prompt audio), the prompt being a 3 s crop
of ANOTHER utterance of the same speaker. Pairs come from a list TSV (columns ``prompt_audio``,
``target_text``, ``ground_truth_audio``; optional ``id``, ``speaker``, ``prompt_start``,
``prompt_seconds``, ``ground_truth_durations``, ``prompt_durations``) or are drawn, seeded, from a
Kaldi-style directory (``text``, ``utt2spk``, audio at ``<speaker>/<utt>.flac`` or ``<utt>.flac``),
or from a prepared dataset (:func:`pairs_from_prepared`), whose phoneme durations make prosody
phoneme-level.

Kaldi directories are read with the project's corpus reader (``data.readers.read_kaldi``) and
audio with ``audio.io.load_audio``.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
import random
from collections.abc import Iterable, Sequence

import numpy as np
import soundfile as sf

from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE
from naturalspeech2_jax.audio import io as audio_io
from naturalspeech2_jax.data.pipeline import open_split
from naturalspeech2_jax.data.readers import AUDIO_EXTENSIONS, read_kaldi


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One utterance of a Kaldi-style corpus."""

    utt_id: str
    speaker: str
    text: str
    audio_path: str
    seconds: float


@dataclasses.dataclass(frozen=True)
class TestPair:
    """One zero-shot test case; the prompt is ``prompt_seconds`` of audio from ``prompt_start``.

    ``prompt_seconds`` of None (or 0) means the whole prompt file. Durations (frames per phoneme,
    hop ``HOP_LENGTH``), when known, enable phoneme-level prosody metrics.
    """

    pair_id: str
    speaker: str
    target_text: str
    ground_truth_audio: str
    prompt_audio: str
    prompt_start: float = 0.0
    prompt_seconds: float | None = None
    ground_truth_durations: tuple[int, ...] | None = None
    prompt_durations: tuple[int, ...] | None = None


def read_kaldi_dir(corpus_dir: str | os.PathLike) -> list[Utterance]:
    """Utterances of a Kaldi-style directory, sorted by id (``data.readers.read_kaldi``: ``text``
    plus ``utt2spk`` and/or ``wav.scp``; without ``wav.scp`` the audio is ``<speaker>/<utt>.<ext>``
    or ``<utt>.<ext>``). Utterances without usable audio or transcript are skipped.
    """
    root = pathlib.Path(corpus_dir)
    utterances = []
    for u in sorted(read_kaldi(root), key=lambda u: u.id):
        if u.start is not None or u.end is not None:
            raise ValueError(
                f"{root}: utterance {u.id} is a segment of {u.audio_path} (Kaldi 'segments'); "
                "evaluation needs one audio file per utterance."
            )
        seconds = sf.info(str(u.audio_path)).duration
        utterances.append(Utterance(u.id, u.speaker, u.text, str(u.audio_path), seconds))
    if not utterances:
        raise FileNotFoundError(f"no audio found for the utterances listed in {root / 'text'}")
    return utterances


def make_pairs(
    utterances: Sequence[Utterance],
    *,
    seed: int = 0,
    limit: int | None = None,
    prompt_seconds: float = 3.0,
) -> list[TestPair]:
    """Seeded zero-shot pairs: each target gets a crop of another utterance of its speaker.

    Targets are taken round-robin over speakers (each speaker's utterances shuffled), so a ``limit``
    keeps the speakers balanced. Speakers with a single utterance cannot serve as targets.
    """
    rng = random.Random(seed)
    by_speaker: dict[str, list[Utterance]] = {}
    for u in utterances:
        by_speaker.setdefault(u.speaker, []).append(u)
    queues = {}
    for speaker in sorted(by_speaker):
        utts = list(by_speaker[speaker])
        if len(utts) < 2:
            continue
        rng.shuffle(utts)
        queues[speaker] = utts
    if not queues:
        raise ValueError("no speaker has two utterances: prompts must come from another utterance")
    order: list[Utterance] = []
    depth = max(len(v) for v in queues.values())
    for i in range(depth):
        order.extend(q[i] for q in queues.values() if i < len(q))
    if limit is not None:
        order = order[:limit]
    pairs = []
    for target in order:
        candidates = [u for u in by_speaker[target.speaker] if u.utt_id != target.utt_id]
        prompt = rng.choice(candidates)
        start = rng.uniform(0.0, max(prompt.seconds - prompt_seconds, 0.0))
        pairs.append(
            TestPair(
                pair_id=target.utt_id,
                speaker=target.speaker,
                target_text=target.text,
                ground_truth_audio=target.audio_path,
                prompt_audio=prompt.audio_path,
                prompt_start=round(start, 4),
                prompt_seconds=prompt_seconds,
            )
        )
    return pairs


def snap_prompt_to_phonemes(
    durations: Sequence[int], start_seconds: float, prompt_seconds: float, hop: int = HOP_LENGTH
) -> tuple[float, float, tuple[int, ...]]:
    """A prompt crop on phoneme boundaries: (start s, length s, the crop's phoneme durations).

    Starts at the first phoneme boundary at or after ``start_seconds`` (moved back while the rest
    is shorter than the prompt) and takes whole phonemes until ``prompt_seconds`` is reached, so
    phoneme-level prosody of the prompt is exact (the durations sum to the crop's frames).
    """
    durations = [int(d) for d in durations]
    bounds = np.concatenate([[0], np.cumsum(durations)]).astype(int)
    frame_rate = SAMPLE_RATE / hop
    want = int(round(prompt_seconds * frame_rate))
    first = int(np.searchsorted(bounds, start_seconds * frame_rate, side="left"))
    first = min(first, len(durations) - 1)
    while first > 0 and bounds[-1] - bounds[first] < want:
        first -= 1
    last = first
    while last < len(durations) and bounds[last] - bounds[first] < want:
        last += 1
    span = tuple(durations[first:last])
    return bounds[first] / frame_rate, sum(span) / frame_rate, span


def pairs_from_prepared(
    dataset_dir: str | os.PathLike,
    split: str,
    audio_dir: str | os.PathLike,
    *,
    seed: int = 0,
    limit: int | None = None,
    prompt_seconds: float = 3.0,
) -> list[TestPair]:
    """Seeded pairs from a prepared dataset (``launch/prepare_data.py``), with phoneme durations.

    The same pairing as :func:`make_pairs`, but prompts are cut on phoneme boundaries and both
    sides carry durations, so prosody is measured at the phoneme level (as in the paper). The
    audio of the chosen utterances is written as 16-bit WAV under ``audio_dir``.
    """
    source = open_split(dataset_dir, split)
    utterances, durations, index = [], {}, {}
    for i in range(len(source)):
        ex = source[i]
        utt_id = _text(ex["id"])
        frames = int(np.sum(ex["durations"]))
        utterances.append(
            Utterance(
                utt_id,
                _text(ex["speaker"]),
                _text(ex["text"]),
                str(pathlib.Path(audio_dir) / f"{utt_id}.wav"),
                frames * HOP_LENGTH / SAMPLE_RATE,
            )
        )
        durations[utt_id] = tuple(int(d) for d in ex["durations"])
        index[utt_id] = i
    pairs = make_pairs(utterances, seed=seed, limit=limit, prompt_seconds=prompt_seconds)
    pathlib.Path(audio_dir).mkdir(parents=True, exist_ok=True)
    by_path = {u.audio_path: u.utt_id for u in utterances}
    out = []
    for pair in pairs:
        prompt_id = by_path[pair.prompt_audio]
        start, seconds, span = snap_prompt_to_phonemes(
            durations[prompt_id], pair.prompt_start, prompt_seconds
        )
        for utt_id in (pair.pair_id, prompt_id):
            path = pathlib.Path(audio_dir) / f"{utt_id}.wav"
            if not path.exists():
                audio = np.asarray(source[index[utt_id]]["audio"], np.int16)
                sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")
        out.append(
            dataclasses.replace(
                pair,
                prompt_start=start,
                prompt_seconds=seconds,
                ground_truth_durations=durations[pair.pair_id],
                prompt_durations=span,
            )
        )
    return out


def prepared_audio(
    dataset_dir: str | os.PathLike, split: str, limit: int | None = None
) -> tuple[list[str], list[np.ndarray]]:
    """(names ``DIR[split]/id``, 16 kHz float waveforms) of up to ``limit`` utterances spread
    evenly over a prepared split (every utterance when ``limit`` is falsy)."""
    source = open_split(dataset_dir, split)
    n = len(source)
    idx = range(n) if not limit or n <= limit else [int(i * n / limit) for i in range(limit)]
    names, wavs = [], []
    for i in idx:
        ex = source[i]
        names.append(f"{dataset_dir}[{split}]/{_text(ex['id'])}")
        wavs.append(np.asarray(ex["audio"], np.float32) / 32768.0)
    return names, wavs


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse_durations(value: str | None) -> tuple[int, ...] | None:
    if value is None or not value.strip():
        return None
    return tuple(int(v) for v in value.replace(",", " ").split())


def read_pair_list(path: str | os.PathLike) -> list[TestPair]:
    """Read a TSV list (with a header row naming the columns; relative paths are list-relative)."""
    path = pathlib.Path(path)
    base = path.parent
    pairs = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        required = {"prompt_audio", "target_text", "ground_truth_audio"}
        if reader.fieldnames is None or not required <= set(reader.fieldnames):
            raise ValueError(f"{path} needs a header with columns {sorted(required)}")
        for i, row in enumerate(reader):

            def resolve(p: str) -> str:
                return str(p if os.path.isabs(p) else base / p)

            seconds = row.get("prompt_seconds")
            pairs.append(
                TestPair(
                    pair_id=row.get("id") or f"{i:05d}",
                    speaker=row.get("speaker") or "",
                    target_text=row["target_text"],
                    ground_truth_audio=resolve(row["ground_truth_audio"]),
                    prompt_audio=resolve(row["prompt_audio"]),
                    prompt_start=float(row.get("prompt_start") or 0.0),
                    prompt_seconds=float(seconds) if seconds else None,
                    ground_truth_durations=_parse_durations(row.get("ground_truth_durations")),
                    prompt_durations=_parse_durations(row.get("prompt_durations")),
                )
            )
    return pairs


def write_pair_list(pairs: Iterable[TestPair], path: str | os.PathLike) -> None:
    """Write pairs as a TSV that :func:`read_pair_list` reads back (absolute paths)."""
    fields = [
        "id",
        "speaker",
        "prompt_audio",
        "prompt_start",
        "prompt_seconds",
        "target_text",
        "ground_truth_audio",
        "ground_truth_durations",
        "prompt_durations",
    ]
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        writer.writerow(fields)
        for p in pairs:
            writer.writerow(
                [
                    p.pair_id,
                    p.speaker,
                    os.path.abspath(p.prompt_audio),
                    p.prompt_start,
                    "" if p.prompt_seconds is None else p.prompt_seconds,
                    p.target_text,
                    os.path.abspath(p.ground_truth_audio),
                    " ".join(map(str, p.ground_truth_durations or ())),
                    " ".join(map(str, p.prompt_durations or ())),
                ]
            )


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    start: float = 0.0,
    seconds: float | None = None,
) -> np.ndarray:
    """Mono float32 audio at ``sample_rate`` (``audio.io.load_audio``), optionally a crop
    [start, start + seconds) (cut after resampling, in samples at ``sample_rate``)."""
    wav = audio_io.load_audio(path, target_sr=sample_rate)
    begin = int(round(start * sample_rate))
    end = None if not seconds else begin + int(round(seconds * sample_rate))
    return np.ascontiguousarray(wav[begin:end], dtype=np.float32)


def list_audio_files(directory: str | os.PathLike) -> list[str]:
    """All audio files under a directory, sorted (for codec evaluation)."""
    root = pathlib.Path(directory)
    return sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
