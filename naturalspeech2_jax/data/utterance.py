"""The per-utterance work of data preparation, shared by both runners.

``data/prepare.py`` (the local runner: worker processes and a feature cache on one machine) and
``data/prepare_beam.py`` (Apache Beam: the same stages as transforms on any Beam runner) call
these functions, so that both write the same examples and the same rejection reasons. Each
function takes one utterance and returns its result or the reason it is rejected (a ``str``);
none of them touches the cache, the pipeline or the filesystem besides reading the audio.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from etils import epath

from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE
from naturalspeech2_jax.align import sphinx
from naturalspeech2_jax.align.textgrid import find_phone_tier, read_textgrid
from naturalspeech2_jax.align.viterbi import AlignmentError, boundary_errors_ms
from naturalspeech2_jax.audio import (
    AudioError,
    extract_pitch,
    load_audio,
    log_mel_spectrogram,
    normalize_loudness,
    pad_or_trim_to_frames,
    to_pcm16,
    trim_silence,
)
from naturalspeech2_jax.data.readers import UNTRANSCRIBED
from naturalspeech2_jax.text.g2p import SIL, is_phoneme
from naturalspeech2_jax.text.normalize import unpronounceable_characters
from naturalspeech2_jax.text.vocab import PhonemeVocab, UnknownSymbolError

log = logging.getLogger(__name__)

FRAME_RATE = SAMPLE_RATE / HOP_LENGTH  # 80 frames per second
#: The arrays of an utterance's audio features and their stored dtypes.
FEATURE_DTYPES = {"audio": np.int16, "log_f0": np.float32, "voiced": np.int8, "mel": np.float16}


# ------------------------------------------------------------------------------------ text
def encode_text(text: str, tokens: list[str] | None, vocab: PhonemeVocab) -> np.ndarray | str:
    """The vocabulary ids of ``text``'s G2P ``tokens`` (None: G2P found nothing to say), or
    the reason the utterance is rejected."""
    if tokens is None:
        return "text has nothing pronounceable"
    # Characters the English front end drops (Chinese, emoji, ...) are in the audio but would be
    # missing from the phonemes: the alignment and the model would learn wrong.
    dropped = unpronounceable_characters(text)
    if dropped:
        codes = " ".join(f"U+{ord(c):04X}" for c in dropped)
        return (f"unpronounceable characters: {dropped!r} ({codes}) would be missing from the "
                "phonemes; transliterate or remove them")  # fmt: skip
    try:
        return vocab.encode(tokens)
    except UnknownSymbolError as e:
        return f"unknown symbols: {e}"


# ------------------------------------------------------------------------------------ audio
def feature_options(
    trim_silence: bool, min_seconds: float, max_seconds: float, pitch_method: str
) -> dict[str, Any]:
    """The options :func:`audio_features` reads (a plain dict: it crosses process boundaries)."""
    return dict(
        trim_silence=trim_silence,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        pitch_method=pitch_method,
    )


def _load(path: str, start, end) -> np.ndarray:
    """``load_audio``, also for a remote path (``gs://...``: copied to a local temporary file
    first, as libsndfile reads local files only)."""
    if "://" not in path:
        return load_audio(path, start=start, end=end)
    remote = epath.Path(path)
    if not remote.exists():
        raise AudioError(f"Audio file {path} does not exist; check the path.")
    with tempfile.NamedTemporaryFile(suffix=remote.suffix) as tmp:
        tmp.write(remote.read_bytes())
        tmp.flush()
        return load_audio(tmp.name, start=start, end=end)


def audio_features(path: str, start, end, opts: dict[str, Any]) -> dict[str, np.ndarray] | str:
    """One utterance's audio features (:data:`FEATURE_DTYPES`: 16 kHz int16 audio of whole
    frames, log-F0, voiced flags and the aligner's log-mel), or the reason it is rejected."""
    try:
        wav = _load(os.fspath(path), start, end)
    except AudioError as e:
        return f"unreadable audio: {e}"
    seconds = len(wav) / SAMPLE_RATE
    if seconds == 0 or not np.any(wav):
        return "empty or silent audio"
    if opts["trim_silence"]:
        wav = trim_silence(wav)
    seconds = len(wav) / SAMPLE_RATE
    if seconds < opts["min_seconds"]:
        return f"too short ({seconds:.2f} s < {opts['min_seconds']} s)"
    if seconds > opts["max_seconds"]:
        return f"too long ({seconds:.2f} s > {opts['max_seconds']} s)"
    wav = pad_or_trim_to_frames(normalize_loudness(wav))
    log_f0, voiced = extract_pitch(wav, method=opts["pitch_method"])
    mel = log_mel_spectrogram(wav)
    n = len(wav) // HOP_LENGTH
    if len(log_f0) != n or len(mel) != n:
        return f"feature frames {len(log_f0)}/{len(mel)} != audio frames {n}"
    return {
        "audio": to_pcm16(wav),
        "log_f0": log_f0.astype(np.float32),
        "voiced": voiced.astype(np.int8),
        "mel": mel.astype(np.float16),
    }


# ------------------------------------------------------------------------------------ transcripts
TRANSCRIBER = "moonshine base-en (bundled with moonshine-cpp), greedy decoding"
_ASR = None  # one recogniser per process (worker)


def transcriber():
    """The bundled Moonshine recogniser of this process (one onnxruntime thread: the workers
    are the parallelism), loaded on first use; one sentence naming the extra when missing."""
    global _ASR
    if _ASR is None:
        try:
            from naturalspeech2_jax.evaluation.asr import MoonshineASR

            _ASR = MoonshineASR(num_threads=1)
        except ImportError as err:
            raise ImportError(
                "transcribing needs the bundled Moonshine recogniser: pip install -e '.[eval]'."
            ) from err
    return _ASR


def transcribe(asr: Any, path: str, start, end, min_confidence: float) -> tuple[str, float] | str:
    """(transcript, confidence) of an utterance listed without one, or the reason it is
    rejected: unreadable audio, nothing recognised, or a confidence (mean log-probability of
    the recogniser's tokens) below ``min_confidence``."""
    try:
        wav = _load(os.fspath(path), start, end)
    except AudioError as e:
        return f"unreadable audio: {e}"
    if not np.any(wav):
        return "empty or silent audio"
    seconds = len(wav) / SAMPLE_RATE
    if seconds > asr.MAX_SECONDS:
        return f"too long to transcribe ({seconds:.1f} s > {asr.MAX_SECONDS} s)"
    text, confidence = asr.transcribe_scored(wav)
    text = " ".join(text.split())
    if not text:
        return "transcription is empty (no speech recognised)"
    if confidence < min_confidence:
        return (f"transcription confidence below the threshold ({confidence:.3f} < "
                f"{min_confidence}; recognised {text!r})")  # fmt: skip
    return text, round(confidence, 4)


def transcribed(u: Any, text: str, confidence: float) -> Any:
    """``u`` with its recognised transcript (the confidence kept in ``extra``)."""
    extra = {k: v for k, v in u.extra.items() if k != UNTRANSCRIBED}
    return dataclasses.replace(u, text=text, extra={**extra, "transcript_confidence": confidence})


# ------------------------------------------------------------------------------------ durations
def boundaries_to_durations(times_s: Sequence[float], n_frames: int) -> np.ndarray:
    """Token end times (seconds) -> int frame durations summing to ``n_frames``.

    Each boundary is rounded to the nearest frame edge (so the error never accumulates); the last
    boundary is the end of the audio. Durations may be 0 (e.g. a ``<wb>`` without a pause).
    """
    edges = np.floor(np.asarray(times_s, np.float64) * FRAME_RATE + 0.5).astype(np.int64)
    edges = np.clip(np.maximum.accumulate(edges), 0, n_frames)
    edges[-1] = n_frames
    return np.diff(np.concatenate([[0], edges])).astype(np.int32)


def exact_durations(alignment_file: epath.Path, tokens: Sequence[str], n_frames: int):
    """Durations from an embedded-corpus alignment file whose tokens must equal ``tokens``."""
    data = json.loads(alignment_file.read_text())
    got = [t["token"] for t in data["tokens"]]
    if got != list(tokens):
        raise ValueError(f"alignment tokens differ from the G2P tokens in {alignment_file}")
    return boundaries_to_durations([t["end_s"] for t in data["tokens"]], n_frames)


def textgrid_durations(path: str, tokens: Sequence[str], n_frames: int) -> np.ndarray | None:
    """Durations from a TextGrid whose phone labels are our tokens (silences aside), else None.

    MFA's phone sets (ARPAbet, MFA IPA) are not espeak-ng's tokens; such files cannot give
    per-token durations for our sequence, and the aligner is used instead.
    """
    tier = find_phone_tier(read_textgrid(path))
    labels = [(iv.text if hasattr(iv, "text") else iv[2]) for iv in tier.intervals]
    ends = [(iv.xmax if hasattr(iv, "xmax") else iv[1]) for iv in tier.intervals]
    silence = {"", "sil", "sp", "spn", "<sil>"}
    ours = [t for t in tokens if t != "<wb>"]
    theirs = ["<sil>" if lab.strip() in silence else lab.strip() for lab in labels]
    if theirs != ours:
        return None
    durs = list(boundaries_to_durations(ends, n_frames))
    out, k = [], 0
    for t in tokens:  # <wb> tokens are zero-width between the TextGrid's phones
        if t == "<wb>":
            out.append(0)
        else:
            out.append(durs[k])
            k += 1
    return np.asarray(out, np.int32)


def exact_timings_file(u: Any) -> epath.Path:
    """Where the embedded corpus keeps an utterance's exact timings (it may not exist)."""
    return epath.Path(u.audio_path).parent.parent / "alignments" / f"{u.id}.json"


def exact_timings(u: Any, tokens: Sequence[str], n_frames: int) -> np.ndarray | None:
    """Durations from the embedded corpus's ``alignments/<id>.json`` beside the speaker folder,
    or None where there is none or its tokens are not ours."""
    align_file = exact_timings_file(u)
    if align_file.exists():
        try:
            return exact_durations(align_file, tokens, n_frames)
        except ValueError as e:
            log.warning("%s", e)
    return None


NEEDS_ALIGNER = "aligner"  # the source of an utterance whose durations an aligner must give


def corpus_durations(
    u: Any, tokens: Sequence[str], n_frames: int, mode: str
) -> tuple[str, np.ndarray | str | None, np.ndarray | None]:
    """Durations the corpus itself gives: ``(source, durations or rejection reason, exact)``.

    ``source`` is ``"exact timings"`` or ``"textgrid"`` (durations given), ``"rejected"``
    (``mode="exact"`` and there are none), or :data:`NEEDS_ALIGNER`. ``exact`` is the exact
    timings whenever the corpus has them, the reference an aligner is scored against.
    """
    exact = exact_timings(u, tokens, n_frames)
    if mode != "aligner" and exact is not None:
        return "exact timings", exact, exact
    if mode == "exact":
        return "rejected", "no exact timings for this utterance", exact
    if mode == "auto" and u.textgrid_path:
        tg = textgrid_durations(os.fspath(u.textgrid_path), tokens, n_frames)
        if tg is not None:
            return "textgrid", tg, exact
    return NEEDS_ALIGNER, None, exact


def aligner_classes(tokens: Sequence[str], ids: Sequence[int], sil: int):
    """The built-in aligner's token classes and per-token minimum frames of one utterance.

    The aligner's token classes: every phoneme its own; <sil>, <wb> and punctuation all the
    silence class, optional (zero frames unless there is a pause). A word boundary or a comma
    is not a sound: as classes of their own they became catch-alls that swallowed the phonemes
    around them for the CTC recogniser (73-83% of phonemes got one frame on real speech). The
    attention model, whose text encoder could use them, did no better with them apart (31.4%
    one-frame phonemes against 31.9%), so both models see the one class.
    """
    spoken = np.asarray([is_phoneme(t) for t in tokens], bool)
    acoustic = np.where(spoken, np.asarray(ids, np.int32), sil).astype(np.int32)
    return acoustic, spoken.astype(np.int64)


def checked_alignment(result: Any, n_frames: int) -> np.ndarray | str:
    """The durations of the built-in aligner's ``result`` for one utterance, or the reason it
    failed (an ``AlignmentError``, or durations that do not sum to the utterance's frames)."""
    if isinstance(result, AlignmentError):
        return f"alignment failure: {result}"
    d = np.asarray(result.durations, np.int32)
    if int(d.sum()) != n_frames:
        return f"alignment failure: durations sum {int(d.sum())} != {n_frames}"
    return d


def sphinx_durations(aligner: Any, audio: np.ndarray, text: str, tokens: list[str], n_frames: int):
    """(durations or rejection reason, stats) of one utterance aligned by pocketsphinx."""
    try:
        return aligner.align(
            audio,
            sphinx.transcript_words(text),
            tokens,
            [is_phoneme(t) for t in tokens],
            n_frames,
            FRAME_RATE,
            pronounce=sphinx.espeak_pronunciation,
        )
    except sphinx.AlignmentError as err:
        return f"alignment failure (pocketsphinx): {err}", None


def edge_crop(
    tokens: Sequence[str], durations: np.ndarray, keep: int | None
) -> tuple[np.ndarray, tuple[int, int]]:
    """(durations, (head, tail)): the frames to cut from the start and end of an utterance so
    that its edge ``<sil>`` tokens last at most ``keep`` frames (None: no cut). Frames are whole
    codec hops, so the audio, pitch and durations stay on one grid."""
    if keep is None:
        return durations, (0, 0)
    d = np.asarray(durations, np.int32).copy()
    head = max(int(d[0]) - keep, 0) if tokens[0] == SIL else 0
    tail = max(int(d[-1]) - keep, 0) if tokens[-1] == SIL and len(d) > 1 else 0
    if not (head or tail):
        return durations, (0, 0)
    d[0] -= head
    d[-1] -= tail
    return d, (head, tail)


def keep_frames(max_edge_silence: float | None) -> int | None:
    """``max_edge_silence`` seconds as codec frames (None: no cut)."""
    return None if max_edge_silence is None else int(round(max_edge_silence * FRAME_RATE))


def example(
    u: Any,
    ids: np.ndarray,
    features: Any,
    durations: np.ndarray,
    crop: tuple[int, int],
    speaker_id: int,
) -> dict[str, Any]:
    """The dataset example of one utterance (``data/tfds_builder.features``), the edge crop
    applied to audio and pitch (the durations already have it)."""
    head, tail = crop
    end = len(features["log_f0"]) - tail
    return {
        "id": u.id,
        "text": u.text,
        "speaker": u.speaker,
        "speaker_id": speaker_id,
        "audio": features["audio"][head * HOP_LENGTH : end * HOP_LENGTH],
        "phonemes": np.asarray(ids, np.int32),
        "durations": durations,
        "log_f0": features["log_f0"][head:end],
        "voiced": features["voiced"][head:end],
    }


# ------------------------------------------------------------------------------------ card
@dataclasses.dataclass
class SplitTally:
    """What a dataset card says about one split, added up one example at a time and mergeable
    (a Beam combiner's accumulator; the local runner adds up the same way)."""

    utterances: int = 0
    frames: int = 0
    speakers: set[str] = dataclasses.field(default_factory=set)
    # phoneme durations in frames -> count: the exact median without holding every value
    phoneme_frames: Counter = dataclasses.field(default_factory=Counter)
    pause_frames: int = 0
    token_frames: int = 0

    def add(self, speaker: str, tokens: Sequence[str], durations: np.ndarray) -> None:
        d = np.asarray(durations, np.int64)
        mask = np.asarray([is_phoneme(t) for t in tokens], bool)
        self.utterances += 1
        self.frames += int(d.sum())
        self.speakers.add(speaker)
        self.phoneme_frames.update(d[mask].tolist())
        self.pause_frames += int(d[~mask].sum())
        self.token_frames += int(d.sum())

    def merge(self, other: SplitTally) -> SplitTally:
        self.utterances += other.utterances
        self.frames += other.frames
        self.speakers |= other.speakers
        self.phoneme_frames.update(other.phoneme_frames)
        self.pause_frames += other.pause_frames
        self.token_frames += other.token_frames
        return self

    def duration_stats(self) -> dict[str, float]:
        """Sanity figures of the durations: a degenerate alignment shows up as many one-frame
        phonemes or a large pause share (exact espeak timings: median 6 frames, 1.6% one-frame,
        17% of frames in pauses and word boundaries)."""
        n = sum(self.phoneme_frames.values())
        if not n:
            return {}
        values = sorted(self.phoneme_frames)
        return {
            "phoneme_median_frames": _histogram_median(values, self.phoneme_frames, n),
            "phoneme_one_frame_share": round(
                sum(c for v, c in self.phoneme_frames.items() if v <= 1) / n, 4
            ),
            "pause_frame_share": round(self.pause_frames / max(self.token_frames, 1), 4),
        }


def _histogram_median(values: list[int], counts: Counter, n: int) -> float:
    """``np.median`` of the multiset {value: count} (the mean of the two middle values when
    ``n`` is even)."""
    middle = [(n - 1) // 2, n // 2]
    out, seen = [], 0
    for v in values:
        seen += counts[v]
        while middle and middle[0] < seen:
            out.append(v)
            middle.pop(0)
    return float(np.mean(out))


@dataclasses.dataclass
class AlignmentTally:
    """The aligner's figures for the card (per split means, boundary errors against exact
    timings in frames, the utterance shown in ``alignment.png``), mergeable."""

    utterances: int = 0
    score_sum: dict[str, float] = dataclasses.field(default_factory=dict)
    score_count: dict[str, int] = dataclasses.field(default_factory=dict)
    error_frames: Counter = dataclasses.field(default_factory=Counter)
    # (has exact timings, id) decides which utterance is shown: one with exact timings (both
    # sets of boundaries show) and, among those, the smallest id, whatever the order of work.
    shown: tuple | None = None  # (utt_id, split, tokens, durations, exact or None, mel)

    def add(self, utt_id, split, tokens, durations, exact, score, mel) -> None:
        self.utterances += 1
        if score is not None:
            self.score_sum[split] = self.score_sum.get(split, 0.0) + float(score)
            self.score_count[split] = self.score_count.get(split, 0) + 1
        if exact is not None:
            err = np.rint(boundary_errors_ms(durations, exact) / (1000 / FRAME_RATE))
            self.error_frames.update(err.astype(np.int64).tolist())
        self._show((utt_id, split, list(tokens), np.asarray(durations), exact, mel))

    def _show(self, cand: tuple | None) -> None:
        def rank(c):
            return (c[4] is None, c[0])

        if cand is not None and (self.shown is None or rank(cand) < rank(self.shown)):
            self.shown = cand

    def merge(self, other: AlignmentTally) -> AlignmentTally:
        self.utterances += other.utterances
        for s, v in other.score_sum.items():
            self.score_sum[s] = self.score_sum.get(s, 0.0) + v
            self.score_count[s] = self.score_count.get(s, 0) + other.score_count[s]
        self.error_frames.update(other.error_frames)
        self._show(other.shown)
        return self

    def means(self) -> dict[str, float]:
        """The per-split mean of the aligner's score (confidence, or pocketsphinx's phone match)."""
        sums, counts = self.score_sum, self.score_count
        return {s: round(sums[s] / counts[s], 3) for s in sorted(sums)}

    def boundary_error_ms(self) -> dict[str, float] | None:
        """Median, mean, p90 and share within 25 ms of the boundary errors (None: no exact
        timings to score against)."""
        if not self.error_frames:
            return None
        frames = np.repeat(
            np.fromiter(self.error_frames.keys(), np.int64),
            np.fromiter(self.error_frames.values(), np.int64),
        )
        ms = np.sort(frames).astype(np.float64) * (1000 / FRAME_RATE)
        return {
            "median": float(np.median(ms)),
            "mean": float(np.mean(ms)),
            "p90": float(np.percentile(ms, 90)),
            "within_25ms": float(np.mean(ms <= 25)),
            "boundaries": int(ms.size),
        }


# ------------------------------------------------------------------------------------ aligners
def resolve_aligner(name: str) -> str:
    """``auto`` -> ``pocketsphinx`` when it is installed, else ``builtin``."""
    if name == "builtin":
        return name
    try:
        import pocketsphinx  # noqa: F401
    except ImportError as err:
        if name == "auto":
            return "builtin"
        raise ImportError(
            "aligner='pocketsphinx' needs pocketsphinx: pip install -e '.[eval]', or "
            "use aligner='builtin'."
        ) from err
    return "pocketsphinx"


def check_aligner_checkpoint(aligner_dir: str | os.PathLike) -> None:
    """One sentence (FileNotFoundError) when ``aligner_dir`` is not a trained aligner's run."""
    if not os.path.isfile(os.path.join(os.fspath(aligner_dir), "config.json")):
        raise FileNotFoundError(
            f"aligner checkpoint {aligner_dir} holds no trained aligner (no config.json); "
            "train one with python launch/prepare_data.py --corpus=... --train_aligner=DIR."
        )


def load_aligner(aligner_dir: str | os.PathLike):
    """A trained built-in aligner (``align.api.Aligner``); one sentence when it is not one."""
    from naturalspeech2_jax.align import api as align_api  # JAX: only for the built-in aligner

    check_aligner_checkpoint(aligner_dir)
    return align_api.Aligner.from_checkpoint(os.fspath(aligner_dir))
