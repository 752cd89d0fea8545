"""Singing from a score (NaturalSpeech 2's singing mode): notes -> phoneme durations + F0 contour.

The score's notes replace both predictors: every note's lyric is phonemized, its consonants get a
few frames at the note's edges and its vowel(s) the rest, and the F0 contour follows the note
pitches (with a short glide between notes and a little vibrato on long notes). Scores:

* JSON (documented format)::

      {"tempo": 100,                      # beats per minute (only needed for "beats")
       "notes": [
         {"lyric": "twin", "pitch": "C4", "beats": 1},      # pitch: MIDI number or name
         {"lyric": "kle",  "pitch": 60,   "seconds": 0.6},  # duration: "beats" or "seconds"
         {"lyric": "-",    "pitch": "D4", "beats": 0.5},    # "-" or "": melisma (hold the vowel)
         {"rest": true, "beats": 1}]}                       # or "pitch": null
* MIDI (``.mid``/``.midi``, read with ``mido``): the first track with notes, monophonic (a new
  note ends the sounding one); lyrics from ``lyrics`` (or ``text``) meta events at a note's start.
* MusicXML (``.musicxml``/``.xml``, stdlib parser): the first part's notes, ``<lyric><text>``,
  ties (merged), rests, ``<sound tempo>`` / metronome marks.

Frames: note boundaries are the score's times rounded to 12.5 ms frames, so the output lasts
exactly the score's total duration (``score_frames``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from naturalspeech2_jax.inference.synthesizer import (
    FRAME_BUCKETS,
    FRAMES_PER_SECOND,
    TOKEN_BUCKETS,
    SynthesisError,
    SynthesisResult,
    Synthesizer,
)
from naturalspeech2_jax.text.g2p import PUNCTUATION_TOKENS, SIL, WB, phonemize
from naturalspeech2_jax.text.vocab import ENGLISH_VOWELS

_NAMES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
MELISMA = ("", "-", "_", "+")
CONSONANT_FRAMES = 3  # 37.5 ms per consonant at most: sung vowels carry the note


@dataclasses.dataclass(frozen=True)
class Note:
    seconds: float
    pitch: float | None  # MIDI note number; None = rest
    lyric: str = ""


def midi_number(pitch: Any, where: str) -> float | None:
    """``60``, ``"C4"``, ``"F#3"``, ``"Bb4"`` -> MIDI number (C4 = 60); None/"rest" -> None."""
    if pitch is None or (isinstance(pitch, str) and pitch.lower() in ("rest", "r", "")):
        return None
    if isinstance(pitch, int | float) and not isinstance(pitch, bool):
        if not (math.isfinite(pitch) and 0 <= pitch <= 127):
            raise SynthesisError(f"{where}: pitch {pitch!r} is not a MIDI note number in 0..127; "
                                 "fix the score.")  # fmt: skip
        return float(pitch)
    m = re.fullmatch(r"([A-Ga-g])([#b]*)(-?\d)", str(pitch).strip())
    if not m:
        raise SynthesisError(f"{where}: pitch {pitch!r} is neither a MIDI number nor a name like "
                             "'C#4'; fix the score.")  # fmt: skip
    step, acc, octave = m.groups()
    return float(12 * (int(octave) + 1) + _NAMES[step.upper()] + acc.count("#") - acc.count("b"))


def _positive(value: Any, what: str, where: str) -> float:
    """``value`` as a finite number > 0 (a note length, a tempo), or SynthesisError."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if isinstance(value, bool) or not (math.isfinite(x) and x > 0):
        raise SynthesisError(f"{where}: {what} {value!r} is not a number > 0; fix the score.")
    return x


# ------------------------------------------------------------------------------------ readers
def read_json_score(path: str) -> list[Note]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SynthesisError(f"{path} is not valid JSON ({e}); see the format in "
                             "naturalspeech2_jax/inference/singing.py.") from None  # fmt: skip
    if not isinstance(data, dict) or not isinstance(data.get("notes"), list):
        raise SynthesisError(
            f'{path} is not a score: it needs a JSON object with a "notes" list (format in '
            "naturalspeech2_jax/inference/singing.py)."
        )
    tempo = _positive(data.get("tempo", 120), "tempo", path)
    notes = []
    for i, n in enumerate(data["notes"]):
        where = f"{path} note {i}"
        if not isinstance(n, dict):
            raise SynthesisError(
                f"{where} is {n!r}, not an object like "
                '{"lyric": "la", "pitch": "C4", "beats": 1}; fix the score.'
            )
        if "seconds" in n:
            seconds = _positive(n["seconds"], "seconds", where)
        elif "beats" in n:
            seconds = _positive(n["beats"], "beats", where) * 60.0 / tempo
        else:
            raise SynthesisError(f"{where} has neither 'seconds' nor 'beats'; give its length.")
        pitch = None if n.get("rest") else midi_number(n.get("pitch"), where)
        notes.append(Note(seconds, pitch, str(n.get("lyric", ""))))
    return notes


def read_midi_score(path: str) -> list[Note]:
    import mido

    try:
        mid = mido.MidiFile(path)
    except Exception as e:  # mido raises OSError/EOFError/ValueError on bad files
        raise SynthesisError(f"cannot read {path} as MIDI ({e}); export the score again.") from None
    now, events, lyric = 0.0, [], ""
    for msg in mid:  # merged tracks, msg.time = seconds since the previous message
        now += msg.time
        if msg.type in ("lyrics", "text") and not msg.text.startswith(("@", "%")):
            lyric = msg.text.strip()
        elif msg.type == "note_on" and msg.velocity > 0:
            events.append(("on", now, msg.note, lyric))
            lyric = ""
        elif msg.type in ("note_off", "note_on"):
            events.append(("off", now, msg.note, ""))
    notes, cursor, sounding = [], 0.0, None  # (start, pitch, lyric)
    for kind, t, pitch, text in events:
        if kind == "on":
            if sounding is not None:
                notes.append(Note(t - sounding[0], sounding[1], sounding[2]))
            elif t > cursor + 1e-6:
                notes.append(Note(t - cursor, None))
            sounding = (t, float(pitch), text)
        elif sounding is not None and pitch == sounding[1]:
            notes.append(Note(t - sounding[0], sounding[1], sounding[2]))
            sounding, cursor = None, t
    return [n for n in notes if n.seconds > 0]


def read_musicxml_score(path: str) -> list[Note]:
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise SynthesisError(f"cannot parse {path} as MusicXML ({e}); export it again.") from None
    part = root.find("part")
    if part is None:
        raise SynthesisError(f"{path} has no <part>; export a partwise MusicXML score.")
    try:
        return _musicxml_notes(part)
    except (TypeError, ValueError, KeyError, ZeroDivisionError, AttributeError) as e:
        raise SynthesisError(
            f"{path} holds a note or attribute that does not parse ({type(e).__name__}: {e}); "
            "export the score again."
        ) from None


def _musicxml_notes(part) -> list[Note]:
    divisions, tempo, notes = 1.0, 120.0, []
    for measure in part.findall("measure"):
        for el in measure:
            if el.tag == "attributes" and el.find("divisions") is not None:
                divisions = float(el.find("divisions").text)
            if el.tag in ("sound", "direction"):
                sound = el if el.tag == "sound" else el.find(".//sound")
                if sound is not None and sound.get("tempo"):
                    tempo = float(sound.get("tempo"))
                per_minute = el.find(".//per-minute")
                if per_minute is not None:
                    tempo = float(per_minute.text)
            if el.tag != "note" or el.find("chord") is not None or el.find("grace") is not None:
                continue
            seconds = float(el.findtext("duration", "0")) / divisions * 60.0 / tempo
            if el.find("rest") is not None:
                notes.append(Note(seconds, None))
                continue
            p = el.find("pitch")
            midi = 12 * (int(p.findtext("octave")) + 1) + _NAMES[p.findtext("step")]
            midi += int(float(p.findtext("alter", "0")))
            tie_stop = any(t.get("type") == "stop" for t in el.findall("tie"))
            if tie_stop and notes and notes[-1].pitch == midi:  # a tie lengthens the note
                notes[-1] = dataclasses.replace(notes[-1], seconds=notes[-1].seconds + seconds)
                continue
            notes.append(Note(seconds, float(midi), el.findtext("lyric/text", "") or "-"))
    return notes


def read_score(path: str) -> list[Note]:
    """Notes of a JSON, MIDI or MusicXML score (by extension), validated."""
    if not os.path.isfile(path):
        raise SynthesisError(f"score {path} does not exist; check the path.")
    ext = os.path.splitext(path)[1].lower()
    readers = {".json": read_json_score, ".mid": read_midi_score, ".midi": read_midi_score,
               ".musicxml": read_musicxml_score, ".xml": read_musicxml_score}  # fmt: skip
    if ext not in readers:
        raise SynthesisError(f"score {path} is not .json, .mid or .musicxml; convert it.")
    notes = readers[ext](path)
    if not any(n.pitch is not None for n in notes):
        raise SynthesisError(f"score {path} has no pitched note; give notes with lyrics.")
    return notes


def check_score(score: str | Sequence[Note], where: str = "the score") -> list[Note]:
    """The notes of a score (a path, read with :func:`read_score`, or notes), checked to fit one
    synthesis: SynthesisError naming the score when it lasts longer than the largest frame
    bucket or has more phonemes than the largest token bucket (split the song then)."""
    if isinstance(score, str | os.PathLike):
        where, notes = str(score), read_score(os.fspath(score))
    else:
        notes = list(score)
    if not any(n.pitch is not None for n in notes):
        raise SynthesisError(f"{where} has no pitched note; give notes with lyrics.")
    for i, n in enumerate(notes):
        if not (math.isfinite(n.seconds) and n.seconds >= 0):
            raise SynthesisError(f"{where}: note {i} lasts {n.seconds} s; fix the score.")
        if n.pitch is not None and not (math.isfinite(n.pitch) and 0 <= n.pitch <= 127):
            raise SynthesisError(f"{where}: note {i} has pitch {n.pitch}, not a MIDI note number "
                                 "in 0..127; fix the score.")  # fmt: skip
    tokens, durations, _ = score_to_inputs(notes)
    frames = int(durations.sum())
    if frames > FRAME_BUCKETS[-1]:
        seconds, limit = frames / FRAMES_PER_SECOND, FRAME_BUCKETS[-1] / FRAMES_PER_SECOND
        raise SynthesisError(
            f"{where} lasts {seconds:.1f} s; one call sings at most {limit:.1f} s, so split the "
            "song into shorter parts."
        )
    if len(tokens) > TOKEN_BUCKETS[-1]:
        raise SynthesisError(
            f"{where} has {len(tokens)} phonemes; one call sings at most {TOKEN_BUCKETS[-1]}, so "
            "split the song into shorter parts."
        )
    return notes


# --------------------------------------------------------------------- notes -> model inputs
def score_frames(notes: Sequence[Note]) -> np.ndarray:
    """Frames per note: cumulative times rounded to frames (their sum is the rounded total)."""
    ends = np.round(np.cumsum([n.seconds for n in notes]) * FRAMES_PER_SECOND).astype(np.int64)
    return np.diff(np.concatenate([[0], ends]))


def _is_vowel(token: str) -> bool:
    return token.lstrip("ˈˌ") in ENGLISH_VOWELS


def _split_note(tokens: list[str], frames: int) -> list[int]:
    """Frames of a syllable's phonemes: consonants short at the edges, vowels share the rest."""
    vowels = [i for i, t in enumerate(tokens) if _is_vowel(t)]
    if not vowels:
        base, extra = divmod(frames, len(tokens))
        return [base + (i < extra) for i in range(len(tokens))]
    n_cons = len(tokens) - len(vowels)
    c = min(CONSONANT_FRAMES, frames // (2 * n_cons)) if n_cons else 0
    left = frames - c * n_cons
    base, extra = divmod(left, len(vowels))
    out = [c] * len(tokens)
    for k, i in enumerate(vowels):
        out[i] = base + (k < extra)
    return out


def _lyric_tokens(lyric: str) -> list[str]:
    try:
        tokens = phonemize(lyric)
    except ValueError:
        return []
    return [t for t in tokens if t not in (SIL, WB, *PUNCTUATION_TOKENS)]


def score_to_inputs(notes: Sequence[Note]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(phoneme tokens, frames per token, F0 Hz per frame with 0 in rests) of a score."""
    frames = score_frames(notes)
    tokens: list[str] = [SIL]
    durs: list[int] = [0]
    f0 = np.zeros(int(frames.sum()), np.float64)
    pos, last_vowel, last_was_rest = 0, None, True
    for note, nf in zip(notes, frames, strict=True):
        nf = int(nf)
        if note.pitch is not None:
            f0[pos : pos + nf] = 440.0 * 2.0 ** ((note.pitch - 69.0) / 12.0)
        if nf == 0:
            continue
        if note.pitch is None:  # a rest: the leading <sil>, else a pause (a comma token)
            if len(tokens) == 1:
                durs[0] += nf
            elif tokens[-1] == ",":
                durs[-1] += nf
            else:
                tokens.append(","), durs.append(nf)
            last_was_rest = True
        else:
            syllable = [] if note.lyric.strip() in MELISMA else _lyric_tokens(note.lyric)
            if not syllable and last_vowel is not None and not last_was_rest:
                # A melisma: the previous vowel holds on through this note (its coda moves later).
                durs[last_vowel] += nf
            else:
                syllable = syllable or ["ˈɑː"]  # a pitched note without lyric: sing "ah"
                if not last_was_rest and len(tokens) > 1:
                    tokens.append(WB), durs.append(0)
                split = _split_note(syllable, nf)
                vowels = [i for i, t in enumerate(syllable) if _is_vowel(t)]
                last_vowel = len(tokens) + (vowels[-1] if vowels else len(syllable) - 1)
                tokens += syllable
                durs += split
            last_was_rest = False
        pos += nf
    if tokens[-1] == ",":
        tokens[-1] = SIL
    else:
        tokens.append(SIL), durs.append(0)
    d = np.asarray(durs, np.int32)
    if int(d.sum()) != len(f0):  # a bug guard: the model asserts the same
        raise AssertionError(f"durations {int(d.sum())} != {len(f0)} frames")
    return tokens, d, f0


def shape_contour(f0_hz: np.ndarray, vibrato_cents: float = 30.0, glide_frames: int = 5):
    """Glides between notes (moving average of log-F0) and vibrato (5.5 Hz) on held frames."""
    log_f0 = np.log(np.where(f0_hz > 0, f0_hz, np.nan))
    voiced = np.isfinite(log_f0)
    idx = np.arange(len(log_f0))
    filled = np.interp(idx, idx[voiced], log_f0[voiced])
    if glide_frames > 1:
        kernel = np.hanning(glide_frames + 2)[1:-1]
        kernel /= kernel.sum()
        padded = np.pad(filled, glide_frames // 2, mode="edge")
        filled = np.convolve(padded, kernel, mode="valid")[: len(filled)]
    t = idx / FRAMES_PER_SECOND
    filled = filled + (vibrato_cents / 1200.0) * np.log(2.0) * np.sin(2 * np.pi * 5.5 * t)
    return np.where(voiced, np.exp(filled), 0.0)


def sing(
    synth: Synthesizer,
    score: str | Sequence[Note],
    prompt_audio: Any,
    *,
    steps: int = 50,
    vibrato_cents: float = 30.0,
    **options: Any,
) -> SynthesisResult:
    """Sing a score (path or notes) in the prompt's voice; more steps than speech by default.

    ``options`` go to :meth:`Synthesizer.synthesize` (``sampler``, ``seed``, ``pitch_shift``...);
    the score sets the phonemes, their durations and the F0 contour.
    """
    notes = check_score(score)
    tokens, durations, f0 = score_to_inputs(notes)
    return synth.synthesize(
        phonemes=tokens, prompt_audio=prompt_audio, durations=durations,
        f0=shape_contour(f0, vibrato_cents), steps=steps, **options,
    )  # fmt: skip
