"""Embedded multi-speaker English corpus with exact phoneme timings, synthesised by espeak-ng.

Why: the project must train and be tested end to end without downloading a corpus, and an aligner
needs ground truth to be scored against. This module writes a Kaldi-style corpus from text alone:

    <out>/train/text                 "<utt> <transcript>" (raw text: digits, abbreviations, ...)
    <out>/train/utt2spk              "<utt> <speaker>"
    <out>/train/spk2utt              "<speaker> <utt> <utt> ..."
    <out>/train/spk2gender           "<speaker> m|f"
    <out>/train/<speaker>/<utt>.flac 16 kHz mono FLAC (PCM_16)
    <out>/train/alignments/<utt>.json  exact token timings (below)
    <out>/heldout/...                same layout for the held-out (zero-shot) speakers
    <out>/manifest.json              settings, speakers, counts; written last (completeness marker)

Alignment files hold ``{"utt", "speaker", "transcript", "sample_rate", "num_samples", "duration_s",
"vocab_version", "tokens": [{"token", "start_s", "end_s"}, ...]}``. The token sequence is exactly
``naturalspeech2_jax.text.phonemize(transcript)`` (checked for every utterance; a sentence whose
espeak-ng phoneme events differ from the G2P output is replaced by another sentence and counted in
the manifest; this happens when espeak-ng's clause intonation promotes a vowel's stress in speech,
e.g. a one-word clause "or," spoken as ``ˈɔːɹ`` where the G2P gives ``ɔːɹ``; it happened for none
of 600 built-in sentences in two voices). Intervals are contiguous, start at 0 and end at
``duration_s``. Phoneme times come from espeak-ng's phoneme events (exact sample positions). Pauses
between phonemes belong to the punctuation token where one sits between them, else to the ``<wb>``
token, else (pause inside a word) to the preceding phoneme; ``<wb>`` without a pause has zero
length. espeak-ng reports a few phonemes with zero length (post-vocalic "l" is rendered inside the
vowel); such a phoneme gets the last third of the preceding phoneme's interval, so every phoneme
has positive length. The leading ``<sil>`` spans the added lead-in silence plus espeak's onset; the
trailing ``<sil>`` spans the added tail silence (plus espeak's final pause when the sentence has no
final punctuation, which otherwise takes that final pause). A downstream converter to frames must
round boundaries, not durations, so that durations sum exactly to the number of frames.

Speakers are espeak-ng voice variants of ``en-us`` (the G2P language, so phonemes match) with
per-speaker pitch, pitch range and rate offsets and small per-utterance jitter. With the default
24 speakers, spk21..spk24 (always the last ``num_heldout`` speakers; default 4) go to
``heldout/`` for zero-shot checks; their voice variants are never used by a training speaker.

Deterministic given ``seed`` (each utterance is synthesised by a freshly loaded espeak-ng, so the
result does not depend on worker count or scheduling). Idempotent: if ``manifest.json`` exists with
the same settings the call returns at once.

    python -m naturalspeech2_jax.data.synthetic --out /tmp/ns2_synth            # default corpus
    python -m naturalspeech2_jax.data.synthetic --out /tmp/tiny --num-speakers 2 \\
        --utts-per-speaker 2 --num-heldout 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from naturalspeech2_jax import SAMPLE_RATE
from naturalspeech2_jax.data.espeak import synthesize_fresh
from naturalspeech2_jax.text.g2p import (
    G2P,
    PUNCTUATION_TOKENS,
    TOKEN_CONVENTION,
    espeak_version,
    is_phoneme,
)
from naturalspeech2_jax.text.normalize import normalize_text
from naturalspeech2_jax.text.vocab import default_vocab

__all__ = [
    "SAMPLE_RATE",
    "SpeakerSpec",
    "build_sentences",
    "generate_corpus",
    "main",
    "make_speakers",
    "timings_from_events",
]

GENERATOR_VERSION = "ns2-espeak-corpus/1"
MANIFEST = "manifest.json"
_MAX_SENTENCE_TRIES = 25

# (espeak variant, gender). Training voices first; the last four are reserved for held-out
# speakers so that zero-shot checks use timbres never seen in training.
_TRAIN_VARIANTS = [
    ("f1", "f"), ("m1", "m"), ("f2", "f"), ("m2", "m"), ("f3", "f"), ("m3", "m"),
    ("f4", "f"), ("m4", "m"), ("Andrea", "f"), ("m6", "m"), ("anika", "f"), ("m7", "m"),
    ("belinda", "f"), ("m8", "m"), ("Alicia", "f"), ("john", "m"), ("aunty", "f"),
    ("paul", "m"), ("grandma", "f"), ("robert", "m"),
]  # fmt: skip
_HELDOUT_VARIANTS = [("f5", "f"), ("travis", "m"), ("steph", "f"), ("norbert", "m")]


@dataclasses.dataclass(frozen=True)
class SpeakerSpec:
    """A pseudo-speaker: an espeak-ng voice plus prosody offsets."""

    name: str
    voice: str  # e.g. "en-us+f3"
    gender: str  # "m" or "f"
    pitch: int  # espeak pitch 0-100 (50 = the variant's default)
    pitch_range: int  # espeak range 0-100
    rate: int  # words per minute
    split: str  # "train" or "heldout"


def make_speakers(num_speakers: int = 24, num_heldout: int = 4, seed: int = 0) -> list[SpeakerSpec]:
    """Deterministic pseudo-speakers; the last ``num_heldout`` are the held-out split."""
    if not isinstance(num_speakers, int) or not 1 <= num_speakers <= 200:
        raise ValueError(f"num_speakers must be an integer in [1, 200], got {num_speakers!r}.")
    if not isinstance(num_heldout, int) or not 0 <= num_heldout < num_speakers:
        raise ValueError(
            f"num_heldout must be in [0, num_speakers), got {num_heldout} "
            f"for {num_speakers} speakers."
        )
    if num_heldout > len(_HELDOUT_VARIANTS) and num_heldout > num_speakers // 2:
        raise ValueError(f"num_heldout={num_heldout} leaves too few training speakers.")
    rng = np.random.default_rng([seed, 1])
    num_train = num_speakers - num_heldout
    # Cycle through the variants; a second use of a variant gets different prosody offsets.
    train = [_TRAIN_VARIANTS[i % len(_TRAIN_VARIANTS)] for i in range(num_train)]
    held = [_HELDOUT_VARIANTS[i % len(_HELDOUT_VARIANTS)] for i in range(num_heldout)]
    specs = []
    for i, ((variant, gender), split) in enumerate(
        [(v, "train") for v in train] + [(v, "heldout") for v in held]
    ):
        specs.append(
            SpeakerSpec(
                name=f"spk{i + 1:02d}",
                voice=f"en-us+{variant}",
                gender=gender,
                pitch=int(np.clip(50 + rng.integers(-14, 15), 0, 100)),
                pitch_range=int(np.clip(55 + rng.integers(-20, 26), 0, 100)),
                rate=int(165 + rng.integers(-25, 31)),
                split=split,
            )
        )
    return specs


# -- sentences -----------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return text.split()


def _phrases(text: str) -> list[str]:
    return text.split(", ")


_NAMES = _words(
    "Anna Ben Clara David Emma Frank Grace Henry Iris Jack Laura Martin Nora Oliver Paula"
    " Robert Sarah Thomas Victor Wendy"
)
_TITLES = ["Mr.", "Mrs.", "Dr.", "Prof.", "Ms."]
_SURNAMES = _words("Smith Brown Walker Green Turner Hughes Carter Mitchell Parker Bennett")
_ANIMALS = _words("cat dog horse rabbit fox owl sparrow goat turtle squirrel pony duck")
_OBJECTS = _words(
    "book lamp basket letter kettle ladder blanket bicycle window umbrella map guitar "
    "camera bottle ticket mirror candle wallet jacket notebook"
)
_ADJECTIVES = _words(
    "old red quiet bright heavy tiny wooden broken golden dusty warm cold strange lovely "
    "narrow famous"
)
_PLACES = _phrases(
    "the station, the market, the library, the garden, the harbor, the bakery, the "
    "museum, the village square, the old bridge, the school, the river bank, the "
    "hospital, the train platform, the corner shop"
)
_VERBS_PAST = _words(
    "found bought carried painted cleaned repaired borrowed dropped sold hid opened "
    "wrapped lost noticed packed"
)
_TIMES = _phrases(
    "this morning, last night, on Monday, after lunch, before dawn, at noon, yesterday, "
    "in the evening, on Friday afternoon, last winter"
)
_WEATHER = _phrases(
    "it was raining, the wind was cold, the sun was shining, the fog was thick, snow "
    "covered the roofs, the air smelled of bread"
)
_FEELINGS = _words("happy tired surprised nervous curious proud calm worried")
_STREETS = ["Main St.", "Oak Street", "Elm Avenue", "Hill Road", "Park Lane"]
_PUBLIC_DOMAIN = [
    # Short passages from public-domain works (Aesop, Grimm, Carroll, Austen, Dickens).
    "A crow, having a piece of cheese in her beak, sat upon the branch of a tree.",
    "Slow and steady wins the race, said the tortoise to the hare.",
    "Alice was beginning to get very tired of sitting by her sister on the bank.",
    "It was the best of times, it was the worst of times.",
    "It is a truth universally acknowledged that a single man must be in want of a wife.",
    "Once upon a time there lived a poor miller who had a beautiful daughter.",
    "The little tailor was sitting on his table by the window, sewing with all his might.",
    "Curiouser and curiouser, cried Alice; now I am opening out like the largest telescope.",
    "The wind and the sun were disputing which was the stronger.",
    "A hungry fox saw some fine bunches of grapes hanging from a vine.",
    "Who in the world am I? Ah, that is the great puzzle!",
    "The king's son rode through the forest, and came at last to an old tower.",
]
_TEMPLATES = [
    "{name} {verb} the {adj} {obj} at {place} {time}.",
    "{time}, {name} walked to {place} with a {adj} {obj}.",
    "Did {name} really leave the {obj} near {place}?",
    "The {adj} {animal} sat beside the {obj}, and {weather}.",
    "{title} {surname} paid ${dollars}.{cents} for a {adj} {obj} {time}.",
    "{title} {surname} lives at {house} {street}, next to {place}.",
    "We counted {count} {animals} near {place}; {name} counted {count2}.",
    "On the {day} of {month}, {name} felt {feeling} and a little {feeling2}.",
    "{name} said the {obj} was {percent}% cheaper than last year.",
    "In {year}, {name} opened a small shop near {place}.",
    "Why was the {adj} {obj} left outside when {weather}?",
    "What a {adj} {animal}! {name} shouted, pointing at {place}.",
    "Please bring the {obj} & the {obj2} to {place} before {hour}:{minute}.",
    "{name} and {name2} {verb} {count} {obj}s {time}, then went home.",
    "The train to {place_bare} leaves at {hour}:{minute}, so {name} must hurry.",
    "Nobody knew why the {animal} {verb} the {obj}, but {name} was {feeling}.",
    "{name} read {count} pages of an {adj2} book about the {animal}.",
    "If {weather}, we will meet at {place} instead.",
    "Our team finished {ordinal} out of {count} teams in the {year} race.",
    "{name}'s {animal} doesn't like the {adj} {obj} at all.",
    "The temperature dropped to {small} degrees, and {weather}.",
    "{title} {surname} asked: is the {obj} {adj} or {adj2}?",
]
_MONTHS = _words(
    "January February March April May June July August September October November December"
)
_ADJ_VOWEL = ["old", "ancient", "enormous", "elegant", "odd", "unusual"]


def _plural(noun: str) -> str:
    if noun.endswith(("s", "x", "sh", "ch")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _fill(template: str, rng: np.random.Generator) -> str:
    pick = lambda seq: seq[int(rng.integers(len(seq)))]
    names = rng.choice(len(_NAMES), size=2, replace=False)
    adjs = rng.choice(len(_ADJECTIVES), size=2, replace=False)
    objs = rng.choice(len(_OBJECTS), size=2, replace=False)
    feelings = rng.choice(len(_FEELINGS), size=2, replace=False)
    day = int(rng.integers(1, 29))
    place = pick(_PLACES)
    fields = dict(
        name=_NAMES[names[0]], name2=_NAMES[names[1]], title=pick(_TITLES),
        surname=pick(_SURNAMES), verb=pick(_VERBS_PAST), adj=_ADJECTIVES[adjs[0]],
        adj2=pick(_ADJ_VOWEL), obj=_OBJECTS[objs[0]], obj2=_OBJECTS[objs[1]], place=place,
        place_bare=place.removeprefix("the "), time=pick(_TIMES), weather=pick(_WEATHER),
        animal=(animal := pick(_ANIMALS)), animals=_plural(animal),
        dollars=int(rng.integers(1, 200)),
        cents=f"{int(rng.integers(1, 100)):02d}", house=int(rng.integers(2, 400)),
        street=pick(_STREETS), count=int(rng.integers(2, 40)), count2=int(rng.integers(2, 40)),
        day=f"{day}{'st' if day in (1, 21) else 'nd' if day in (2, 22) else 'rd' if day in (3, 23) else 'th'}",  # noqa: E501
        month=pick(_MONTHS), feeling=_FEELINGS[feelings[0]], feeling2=_FEELINGS[feelings[1]],
        percent=int(rng.integers(5, 60)), year=int(rng.integers(1890, 2025)),
        hour=int(rng.integers(1, 13)), minute=f"{int(rng.choice([0, 5, 15, 20, 30, 45])):02d}",
        ordinal=["1st", "2nd", "3rd", "4th", "5th", "11th", "12th"][int(rng.integers(7))],
        small=int(rng.integers(-10, 12)),
    )  # fmt: skip
    text = template.format(**fields)
    return text[0].upper() + text[1:]


def build_sentences(num: int = 400, seed: int = 0) -> list[str]:
    """``num`` distinct English sentences from templates, word lists and public-domain lines."""
    if not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be a positive integer, got {num!r}.")
    rng = np.random.default_rng([seed, 2])
    sentences = list(_PUBLIC_DOMAIN[: max(0, min(len(_PUBLIC_DOMAIN), num // 10))])
    seen = set(sentences)
    while len(sentences) < num:
        text = _fill(_TEMPLATES[int(rng.integers(len(_TEMPLATES)))], rng)
        if text not in seen:
            seen.add(text)
            sentences.append(text)
    order = rng.permutation(len(sentences))
    return [sentences[i] for i in order]


# -- timings -------------------------------------------------------------------------------------
def timings_from_events(
    tokens: Sequence[str],
    events: Sequence[Any],
    num_samples: int,
) -> list[tuple[str, int, int]]:
    """Token intervals ``(token, start, end)`` in espeak samples from its phoneme events.

    ``tokens`` is the G2P output for the spoken text, ``events`` the espeak-ng phoneme events
    (objects with ``name`` and ``sample``; '' names are pauses), ``num_samples`` the length of the
    espeak audio. Raises ValueError when the phonemes of the events differ from those of the
    tokens. Pause attribution follows the module docstring; the intervals are contiguous and cover
    ``[0, num_samples]``.
    """
    phone_positions = [i for i, t in enumerate(tokens) if is_phoneme(t)]
    phone_events = [(j, e) for j, e in enumerate(events) if e.name]
    expected = [tokens[i] for i in phone_positions]
    spoken = [e.name for _, e in phone_events]
    if expected != spoken:
        raise ValueError(f"espeak-ng phonemes {spoken} differ from the G2P phonemes {expected}.")
    if not phone_positions:
        raise ValueError("no phonemes to align.")

    def event_start(j: int) -> int:
        return int(events[j].sample) if j < len(events) else num_samples

    starts = [event_start(j) for j, _ in phone_events]
    # A phoneme ends where the next event (phoneme or pause) starts.
    ends = [event_start(j + 1) for j, _ in phone_events]
    bounds: list[tuple[int, int]] = [(0, 0)] * len(tokens)
    for k, i in enumerate(phone_positions):
        bounds[i] = (starts[k], ends[k])
    # Gaps: before the first phoneme, between phonemes, after the last one.
    gap_edges = [(-1, phone_positions[0], 0, starts[0])]
    for k in range(len(phone_positions) - 1):
        gap_edges.append((phone_positions[k], phone_positions[k + 1], ends[k], starts[k + 1]))
    gap_edges.append((phone_positions[-1], len(tokens), ends[-1], num_samples))
    for left, right, gap_start, gap_end in gap_edges:
        between = list(range(left + 1, right))
        gap_end = max(gap_start, gap_end)
        for i in between:
            bounds[i] = (gap_start, gap_start)
        if not between:
            # A pause inside a word stays with the preceding phoneme.
            bounds[left] = (bounds[left][0], gap_end)
            continue
        punct = [i for i in between if tokens[i] in PUNCTUATION_TOKENS]
        owner = punct[0] if punct else between[0]
        if left >= 0 and right < len(tokens) or punct:
            bounds[owner] = (gap_start, gap_end)
        else:
            # Edge gap without punctuation: the <sil> at the edge takes it.
            bounds[between[0] if left < 0 else between[-1]] = (gap_start, gap_end)
        # Zero-length tokens after the owner start where it ends, keeping the order monotonic.
        for i in between:
            if i > owner:
                bounds[i] = (gap_end, gap_end)
    # espeak-ng renders some phonemes inside their neighbour (post-vocalic "l" in "wall" is the
    # vowel's offglide) and reports them with zero length. A zero-length phoneme would be
    # unlearnable for a duration model and unscorable for an aligner, so it takes the last third
    # of the preceding phoneme (or the first third of the following one at the very start).
    for k, i in enumerate(phone_positions):
        start, end = bounds[i]
        if end > start or len(phone_positions) < 2:
            continue
        if k > 0:
            prev = phone_positions[k - 1]
            p_start, p_end = bounds[prev]
            cut = p_end - (p_end - p_start) // 3
            if cut >= p_end or p_end != start:
                continue
            bounds[prev] = (p_start, cut)
            for j in range(prev + 1, i):  # zero-length <wb> between them moves to the cut
                bounds[j] = (cut, cut)
            bounds[i] = (cut, p_end)
        else:
            nxt = phone_positions[1]
            n_start, n_end = bounds[nxt]
            cut = n_start + (n_end - n_start) // 3
            if cut <= n_start or n_start != end:
                continue
            bounds[nxt] = (cut, n_end)
            for j in range(i + 1, nxt):
                bounds[j] = (cut, cut)
            bounds[i] = (n_start, cut)
    return [(t, s, e) for t, (s, e) in zip(tokens, bounds, strict=True)]


# -- synthesis of one speaker (runs in a worker process) ------------------------------------------
_G2P_CACHE: dict[str, Any] = {}


def _g2p():
    if "g2p" not in _G2P_CACHE:
        _G2P_CACHE["g2p"] = G2P("en-us")
    return _G2P_CACHE["g2p"]


def _speaker_job(job: dict[str, Any]) -> dict[str, Any]:
    """Synthesise ``job['count']`` utterances of one speaker; returns their records."""
    spk = SpeakerSpec(**job["speaker"])
    split_dir = os.path.join(job["out_dir"], spk.split)
    os.makedirs(os.path.join(split_dir, spk.name), exist_ok=True)
    os.makedirs(os.path.join(split_dir, "alignments"), exist_ok=True)
    records, skipped = [], []
    candidates = iter(job["order"])
    for utt_index in range(job["count"]):
        utt = f"{spk.name}-{utt_index + 1:04d}"
        text, result, timings, rng = _synthesise_agreeing_sentence(
            job, spk, utt, utt_index, candidates, skipped
        )
        audio, lead = _as_recording(result.audio, result.sample_rate, rng)
        duration = len(audio) / SAMPLE_RATE
        entries = _token_entries(timings, lead, result.sample_rate, duration)
        _save_utterance(split_dir, spk.name, utt, text, audio, entries, job["vocab_version"])
        records.append({"utt": utt, "speaker": spk.name, "text": text, "duration_s": duration})
    return {"speaker": spk.name, "records": records, "skipped": skipped}


def _synthesise_agreeing_sentence(
    job: dict[str, Any],
    spk: SpeakerSpec,
    utt: str,
    utt_index: int,
    candidates: Iterator[int],
    skipped: list[dict[str, str]],
) -> tuple[str, Any, list[tuple[str, int, int]], np.random.Generator]:
    """The next candidate sentence whose espeak-ng phonemes equal the G2P's (see the module
    docstring): (text, synthesis, token timings, the attempt's generator, which goes on to draw
    the recording's randomness). Each sentence that disagrees is added to ``skipped``."""
    for attempt in range(_MAX_SENTENCE_TRIES):
        text = job["sentences"][next(candidates)]
        rng = np.random.default_rng([job["seed"], job["speaker_index"], utt_index, attempt])
        tokens = _g2p().phonemize(text)
        result = synthesize_fresh(
            normalize_text(text),
            voice=spk.voice,
            rate=int(np.clip(spk.rate + rng.integers(-8, 9), 80, 450)),
            pitch=int(np.clip(spk.pitch + rng.integers(-4, 5), 0, 100)),
            pitch_range=int(np.clip(spk.pitch_range + rng.integers(-5, 6), 0, 100)),
            seed=int(rng.integers(2**31 - 1)),
        )
        try:
            return text, result, timings_from_events(tokens, result.events, len(result.audio)), rng
        except ValueError as err:
            skipped.append({"utt": utt, "text": text, "reason": str(err)[:300]})
    raise RuntimeError(
        f"{spk.name}: {_MAX_SENTENCE_TRIES} sentences in a row disagreed with the G2P; "
        "the espeak-ng data and phonemizer are out of step (reinstall espeakng-loader)."
    )


def _as_recording(
    espeak_audio: np.ndarray, sr: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """espeak-ng's audio made to look recorded: lead-in and tail silence, 16 kHz, a random peak
    level and a faint noise floor. Returns the audio and the lead-in in espeak samples."""
    from scipy.signal import resample_poly

    lead = int(round(rng.uniform(0.15, 0.35) * sr))
    tail = int(round(rng.uniform(0.15, 0.35) * sr))
    audio = np.concatenate([np.zeros(lead, np.float32), espeak_audio, np.zeros(tail, np.float32)])
    # 22050 -> 16000 Hz is the rational factor 320/441.
    audio = resample_poly(audio, 320, 441).astype(np.float32)
    peak = float(np.max(np.abs(audio))) or 1.0
    audio *= rng.uniform(0.55, 0.9) / peak
    # A faint noise floor: real recordings never have digital silence, and log-mel / pitch
    # extraction downstream should not see exact zeros.
    audio += rng.normal(0.0, 3e-5, audio.shape).astype(np.float32)
    return np.clip(audio, -1.0, 1.0), lead


def _token_entries(
    timings: Sequence[tuple[str, int, int]], lead: int, sr: int, duration: float
) -> list[dict[str, Any]]:
    """Token intervals in espeak samples -> contiguous ``{"token", "start_s", "end_s"}`` in
    seconds of the recording (shifted by the lead-in); the last one ends at ``duration``."""
    entries: list[dict[str, Any]] = []
    for token, _start, end in timings:
        start_s = 0.0 if not entries else entries[-1]["end_s"]
        end_s = min(round((end + lead) / sr, 6), duration)
        entries.append({"token": token, "start_s": start_s, "end_s": max(end_s, start_s)})
    entries[-1]["end_s"] = round(duration, 6)
    return entries


def _save_utterance(
    split_dir: str,
    speaker: str,
    utt: str,
    text: str,
    audio: np.ndarray,
    entries: list[dict[str, Any]],
    vocab_version: str,
) -> None:
    """``<speaker>/<utt>.flac`` and ``alignments/<utt>.json`` under ``split_dir``."""
    import soundfile as sf

    duration = len(audio) / SAMPLE_RATE
    sf.write(os.path.join(split_dir, speaker, f"{utt}.flac"), audio, SAMPLE_RATE,
             format="FLAC", subtype="PCM_16")  # fmt: skip
    alignment = {
        "utt": utt,
        "speaker": speaker,
        "transcript": text,
        "sample_rate": SAMPLE_RATE,
        "num_samples": len(audio),
        "duration_s": round(duration, 6),
        "vocab_version": vocab_version,
        "tokens": entries,
    }
    with open(os.path.join(split_dir, "alignments", f"{utt}.json"), "w", encoding="utf-8") as f:
        f.write(_alignment_json(alignment))


def _alignment_json(alignment: dict[str, Any]) -> str:
    """JSON with one token per line: valid for any parser, and readable in a diff or editor."""
    head = json.dumps({k: v for k, v in alignment.items() if k != "tokens"}, ensure_ascii=False)
    rows = ",\n  ".join(json.dumps(t, ensure_ascii=False) for t in alignment["tokens"])
    return head[:-1] + ',\n "tokens": [\n  ' + rows + "\n ]\n}\n"


# -- corpus --------------------------------------------------------------------------------------
def generate_corpus(
    out_dir: str | os.PathLike[str],
    num_speakers: int = 24,
    utts_per_speaker: int = 20,
    seed: int = 0,
    num_workers: int | None = None,
    num_heldout: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the synthetic corpus to ``out_dir`` (layout in the module docstring).

    Returns the manifest (also saved as ``<out_dir>/manifest.json``). If a complete corpus with
    the same settings is already there, returns its manifest without regenerating; a complete
    corpus with different settings raises ValueError; a partial one is regenerated.
    ``num_workers`` defaults to the CPU count; 1 runs in this process.
    """
    num_workers = _checked_arguments(utts_per_speaker, seed, num_workers)
    speakers = make_speakers(num_speakers, num_heldout, seed)
    out_dir = os.fspath(out_dir)
    vocab = default_vocab()
    config = {
        "generator": GENERATOR_VERSION,
        "num_speakers": num_speakers,
        "utts_per_speaker": utts_per_speaker,
        "num_heldout": num_heldout,
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "espeak_version": espeak_version(),
        "token_convention": TOKEN_CONVENTION,
        "vocab_version": vocab.version,
    }
    manifest_path = os.path.join(out_dir, MANIFEST)
    existing = _manifest_of_same_corpus(manifest_path, config, out_dir)
    if existing is not None:
        return existing
    _clear_partial_corpus(out_dir)

    start = time.time()
    sentences = build_sentences(max(400, 2 * utts_per_speaker), seed)
    jobs = _speaker_jobs(speakers, sentences, utts_per_speaker, seed, out_dir, vocab.version)
    results = _run_speaker_jobs(jobs, num_workers, progress)
    summary = _write_speaker_lists(out_dir, speakers, results)
    vocab.save(os.path.join(out_dir, "vocab.json"))
    manifest = {
        "config": config,
        "speakers": [dataclasses.asdict(s) for s in speakers],
        "splits": summary,
        "skipped_sentences": [s for r in results for s in r["skipped"]],
        "generation_seconds": round(time.time() - start, 2),
        "num_workers": num_workers,
    }
    tmp = manifest_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, ensure_ascii=False, indent=1)
    os.replace(tmp, manifest_path)  # written last: its presence marks a complete corpus
    return manifest


def _checked_arguments(utts_per_speaker: int, seed: int, num_workers: int | None) -> int:
    """Fails on a bad argument (``make_speakers`` checks the speaker counts); returns the worker
    count, the CPU count where ``num_workers`` is None."""
    if not isinstance(utts_per_speaker, int) or not 1 <= utts_per_speaker <= 10_000:
        raise ValueError(
            f"utts_per_speaker must be an integer in [1, 10000], got {utts_per_speaker!r}."
        )
    if not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}.")
    if num_workers is None:
        num_workers = os.cpu_count() or 1
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive integer, got {num_workers!r}.")
    return num_workers


def _manifest_of_same_corpus(
    manifest_path: str, config: dict[str, Any], out_dir: str
) -> dict[str, Any] | None:
    """The manifest of a complete corpus made with ``config`` already at ``out_dir``; None where
    there is no complete corpus; ValueError where there is one made with other settings."""
    if not os.path.isfile(manifest_path):
        return None
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("config") == config:
        return manifest
    old = manifest.get("config") or {}
    diff = {k: f"{old.get(k)!r} there, {v!r} asked" for k, v in config.items() if old.get(k) != v}
    raise ValueError(
        f"{out_dir} already holds a synthetic corpus made with other settings ({diff}); "
        "delete it or choose another --out directory."
    )


def _clear_partial_corpus(out_dir: str) -> None:
    """An empty ``out_dir`` to write into. With no manifest, any train/heldout folders are
    leftovers of an interrupted run."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"{out_dir} exists and is not a directory; choose another --out path.")
    for split in ("train", "heldout"):
        shutil.rmtree(os.path.join(out_dir, split), ignore_errors=True)
    os.makedirs(out_dir, exist_ok=True)


def _speaker_jobs(
    speakers: list[SpeakerSpec],
    sentences: list[str],
    utts_per_speaker: int,
    seed: int,
    out_dir: str,
    vocab_version: str,
) -> list[dict[str, Any]]:
    """One ``_speaker_job`` per speaker, each with its own seeded order of candidate sentences:
    enough for every utterance plus retries, cycling through the pool."""
    jobs = []
    for index, spk in enumerate(speakers):
        order = np.random.default_rng([seed, 3, index]).permutation(len(sentences))
        order = np.resize(order, utts_per_speaker + _MAX_SENTENCE_TRIES).tolist()
        jobs.append({
            "speaker": dataclasses.asdict(spk), "speaker_index": index, "sentences": sentences,
            "order": order, "count": utts_per_speaker, "seed": seed, "out_dir": out_dir,
            "vocab_version": vocab_version,
        })  # fmt: skip
    return jobs


def _run_speaker_jobs(
    jobs: list[dict[str, Any]], num_workers: int, progress: bool
) -> list[dict[str, Any]]:
    """The jobs' results in job order, from ``num_workers`` processes (or this one for 1)."""
    results = []
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc="synthetic corpus (speakers)", file=sys.stderr)
        except ImportError:  # pragma: no cover - tqdm is a core dependency
            bar = None
    if num_workers == 1:
        for job in jobs:
            results.append(_speaker_job(job))
            if bar:
                bar.update()
    else:
        # spawn: a forked child would inherit this process's espeak-ng and JAX threads.
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(num_workers, len(jobs))) as pool:
            for result in pool.imap(_speaker_job, jobs):
                results.append(result)
                if bar:
                    bar.update()
    if bar:
        bar.close()
    return results


def _write_speaker_lists(
    out_dir: str, speakers: list[SpeakerSpec], results: list[dict[str, Any]]
) -> dict[str, Any]:
    """The Kaldi lists (text, utt2spk, spk2utt, spk2gender) of each split; returns the manifest's
    per-split summary."""
    by_speaker = {r["speaker"]: r for r in results}
    summary = {}
    for split in ("train", "heldout"):
        split_speakers = [s for s in speakers if s.split == split]
        split_dir = os.path.join(out_dir, split)
        if not split_speakers:
            continue
        records = sorted(
            (rec for s in split_speakers for rec in by_speaker[s.name]["records"]),
            key=lambda r: r["utt"],
        )
        _write_lines(os.path.join(split_dir, "text"), [f"{r['utt']} {r['text']}" for r in records])
        _write_lines(
            os.path.join(split_dir, "utt2spk"), [f"{r['utt']} {r['speaker']}" for r in records]
        )
        _write_lines(
            os.path.join(split_dir, "spk2utt"),
            [
                f"{s.name} " + " ".join(r["utt"] for r in records if r["speaker"] == s.name)
                for s in split_speakers
            ],
        )
        _write_lines(
            os.path.join(split_dir, "spk2gender"), [f"{s.name} {s.gender}" for s in split_speakers]
        )
        summary[split] = {
            "speakers": [s.name for s in split_speakers],
            "utterances": len(records),
            "hours": round(sum(r["duration_s"] for r in records) / 3600, 4),
        }
    return summary


def _write_lines(path: str, lines: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m naturalspeech2_jax.data.synthetic --out DIR [options]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--num-speakers", type=int, default=24)
    parser.add_argument("--utts-per-speaker", type=int, default=20)
    parser.add_argument("--num-heldout", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        manifest = generate_corpus(
            args.out,
            num_speakers=args.num_speakers,
            utts_per_speaker=args.utts_per_speaker,
            seed=args.seed,
            num_workers=args.num_workers,
            num_heldout=args.num_heldout,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"out": args.out, "splits": manifest["splits"],
                      "generation_seconds": manifest["generation_seconds"]}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
