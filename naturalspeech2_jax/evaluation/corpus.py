"""Test lists for zero-shot TTS evaluation: a minimal Kaldi-style corpus reader and pair lists.

A test pair is (target text, ground-truth target audio, prompt audio), the prompt being a 3 s crop
of ANOTHER utterance of the same speaker. Pairs come from a list TSV (columns ``prompt_audio``,
``target_text``, ``ground_truth_audio``; optional ``id``, ``speaker``, ``prompt_start``,
``prompt_seconds``, ``ground_truth_durations``, ``prompt_durations``) or are drawn, seeded, from a
Kaldi-style directory (``text``, ``utt2spk``, audio at ``<speaker>/<utt>.flac`` or ``<utt>.flac``).

The reader here is deliberately small (evaluation only needs text, speaker and audio path); the
project's general corpus readers live in ``naturalspeech2_jax.data``.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
import random
from collections.abc import Iterable, Sequence

import numpy as np

SAMPLE_RATE = 16_000
AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".mp3")


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
    hop 200), when known, enable phoneme-level prosody metrics.
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


def _read_kaldi_map(path: pathlib.Path) -> dict[str, str]:
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            key, _, value = line.partition(" ")
            out[key] = value.strip()
    return out


def _find_audio(root: pathlib.Path, speaker: str, utt_id: str) -> pathlib.Path | None:
    for folder in (root / speaker, root):
        for ext in AUDIO_EXTENSIONS:
            candidate = folder / (utt_id + ext)
            if candidate.exists():
                return candidate
    return None


def read_kaldi_dir(corpus_dir: str | os.PathLike) -> list[Utterance]:
    """Utterances of a Kaldi-style directory with ``text`` and ``utt2spk`` (audio must exist)."""
    import soundfile as sf

    root = pathlib.Path(corpus_dir)
    texts = _read_kaldi_map(root / "text")
    utt2spk = _read_kaldi_map(root / "utt2spk")
    utterances = []
    missing = []
    for utt_id in sorted(texts):
        speaker = utt2spk.get(utt_id, utt_id)
        audio = _find_audio(root, speaker, utt_id)
        if audio is None:
            missing.append(utt_id)
            continue
        seconds = sf.info(str(audio)).duration
        utterances.append(Utterance(utt_id, speaker, texts[utt_id], str(audio), seconds))
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
                ]
            )


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    start: float = 0.0,
    seconds: float | None = None,
) -> np.ndarray:
    """Mono float32 audio at ``sample_rate``, optionally a crop [start, start + seconds)."""
    import soundfile as sf

    wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    wav = wav.mean(axis=1)
    if sr != sample_rate:
        import librosa

        wav = librosa.resample(wav, orig_sr=sr, target_sr=sample_rate)
    begin = int(round(start * sample_rate))
    end = None if not seconds else begin + int(round(seconds * sample_rate))
    return np.ascontiguousarray(wav[begin:end], dtype=np.float32)


def list_audio_files(directory: str | os.PathLike) -> list[str]:
    """All audio files under a directory, sorted (for codec evaluation)."""
    root = pathlib.Path(directory)
    return sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
