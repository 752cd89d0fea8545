"""Praat TextGrid import (e.g. Montreal Forced Aligner output) and conversion of phone intervals
into integer durations in codec frames.

Parsing needs no extra dependency and reads both of Praat's text formats: the long ("ooTextFile"
with ``xmin = ...`` labels) and the short one (bare values), in UTF-8 or UTF-16 (Praat writes
UTF-16 when labels are not ASCII). Both formats are the same value sequence; the long one adds
labels, ``[n]`` indices and ``!`` comments, which the tokenizer drops. Binary TextGrids are
rejected with a clear message.

Duration convention (:func:`intervals_to_durations`)
----------------------------------------------------
Frame ``i`` spans samples ``[i * hop, (i + 1) * hop)`` and is centred at ``(i + 0.5) * hop``.
Each interval *boundary* time ``t`` is mapped to a frame boundary
``b = floor(t * sr / hop + 0.5)`` (round half up), clipped to ``[0, n_frames]``; the first boundary
is forced to 0 and the last to ``n_frames``; durations are the differences of consecutive
boundaries. So a frame belongs to the interval that contains its centre, the durations sum to
``n_frames`` exactly, and rounding errors never accumulate (each boundary is off by at most half a
frame, whatever the number of phones). Forcing the ends absorbs a TextGrid whose ``xmax`` differs
slightly from the audio length (MFA rounds to 10 ms). A phone shorter than about half a frame may
get 0 frames; ``min_frames=1`` instead moves boundaries (forward, then backward) so every phone
gets at least one frame when ``n_frames`` allows.

Empty labels ("" or whitespace: Praat's pauses) and gaps between intervals become
``silence_token`` (default ``"sil"``); other labels (MFA's ``sil``, ``sp``, ``spn``) are kept
verbatim, so mapping them onto the phoneme vocabulary stays the text module's decision.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE

__all__ = [
    "TextGridError",
    "Interval",
    "Tier",
    "TextGrid",
    "parse_textgrid",
    "read_textgrid",
    "find_phone_tier",
    "intervals_to_durations",
    "textgrid_to_durations",
]

PHONE_TIER_NAMES = ("phones", "phone", "phonemes", "phoneme")


class TextGridError(ValueError):
    """A TextGrid file cannot be parsed or does not hold what was asked for."""


@dataclasses.dataclass(frozen=True)
class Interval:
    """One labelled time span in seconds (a point of a TextTier has ``start == end``)."""

    start: float
    end: float
    label: str


@dataclasses.dataclass(frozen=True)
class Tier:
    """An IntervalTier (``kind="IntervalTier"``) or a TextTier of points (``kind="TextTier"``)."""

    name: str
    kind: str
    xmin: float
    xmax: float
    intervals: tuple[Interval, ...]


@dataclasses.dataclass(frozen=True)
class TextGrid:
    """A parsed TextGrid: overall time range and its tiers in file order."""

    xmin: float
    xmax: float
    tiers: tuple[Tier, ...]

    def tier(self, name: str) -> Tier:
        """The first tier called ``name`` (exact match); TextGridError listing names otherwise."""
        for t in self.tiers:
            if t.name == name:
                return t
        raise TextGridError(f"no tier {name!r}; tiers are {[t.name for t in self.tiers]}")

    @property
    def tier_names(self) -> list[str]:
        return [t.name for t in self.tiers]


# Tokens, in priority order: quoted string ("" escapes a quote), <flag>, [index], number,
# identifier, comment, anything else. Only strings, flags and numbers carry values.
_TOKEN = re.compile(
    r"""
    (?P<str>"(?:[^"]|"")*")
  | (?P<flag><[A-Za-z]+>)
  | (?P<index>\[\s*\d*\s*\])
  | (?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<comment>![^\n]*)
  | (?P<other>\S)
    """,
    re.VERBOSE,
)


def _tokens(text: str) -> list[str | float]:
    out: list[str | float] = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "str":
            out.append(m.group()[1:-1].replace('""', '"'))
        elif kind == "num":
            out.append(float(m.group()))
        elif kind == "flag":
            out.append(m.group())
        # Labels, indices, comments and punctuation ("=", ":", "?") carry no value; structure
        # errors are caught by the typed reads in _Reader instead.
    return out


class _Reader:
    """Sequential access to the token list with type checks and helpful errors."""

    def __init__(self, tokens: list[str | float], source: str) -> None:
        self.tokens, self.pos, self.source = tokens, 0, source

    def _next(self) -> str | float:
        if self.pos >= len(self.tokens):
            raise TextGridError(f"{self.source}: file ends too early (truncated TextGrid?)")
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def num(self) -> float:
        tok = self._next()
        if not isinstance(tok, float):
            raise TextGridError(f"{self.source}: expected a number, found {tok!r}")
        return tok

    def int(self) -> int:
        v = self.num()
        if v != int(v) or v < 0:
            raise TextGridError(f"{self.source}: expected a count, found {v}")
        return int(v)

    def str(self) -> str:
        tok = self._next()
        if not isinstance(tok, str) or tok.startswith("<"):
            raise TextGridError(f"{self.source}: expected a quoted string, found {tok!r}")
        return tok

    def flag(self) -> str:
        tok = self._next()
        if not (isinstance(tok, str) and tok.startswith("<")):
            raise TextGridError(f"{self.source}: expected <exists>/<absent>, found {tok!r}")
        return tok


def parse_textgrid(text: str, source: str = "<string>") -> TextGrid:
    """Parse the text of a TextGrid in long or short format."""
    if text.startswith("ooBinaryFile"):
        raise TextGridError(f"{source} is a binary TextGrid; save it as text from Praat.")
    r = _Reader(_tokens(text), source)
    if not r.str().startswith("ooTextFile"):
        raise TextGridError(f"{source} is not a Praat text file (no 'ooTextFile' header).")
    cls = r.str()
    if cls != "TextGrid":
        raise TextGridError(f"{source} holds a Praat {cls!r} object, not a TextGrid.")
    xmin, xmax = r.num(), r.num()
    if r.flag() != "<exists>":
        return TextGrid(xmin, xmax, ())
    tiers = []
    for _ in range(r.int()):
        kind, name = r.str(), r.str()
        txmin, txmax = r.num(), r.num()
        n = r.int()
        items = []
        if kind == "IntervalTier":
            for _ in range(n):
                a, b = r.num(), r.num()
                items.append(Interval(a, b, r.str()))
        elif kind == "TextTier":
            for _ in range(n):
                t = r.num()
                items.append(Interval(t, t, r.str()))
        else:
            raise TextGridError(f"{source}: unknown tier class {kind!r}")
        tiers.append(Tier(name, kind, txmin, txmax, tuple(items)))
    return TextGrid(xmin, xmax, tuple(tiers))


def _decode(raw: bytes) -> str:
    if raw.startswith((b"\xfe\xff", b"\xff\xfe")):
        return raw.decode("utf-16")
    # UTF-16 without BOM shows up as every other byte being NUL.
    if len(raw) > 1 and raw[0] == 0 and raw[1] != 0:
        return raw.decode("utf-16-be")
    if len(raw) > 1 and raw[1] == 0 and raw[0] != 0:
        return raw.decode("utf-16-le")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # Praat's old default on some systems


def read_textgrid(path: str | os.PathLike) -> TextGrid:
    """Read and parse a TextGrid file (long/short text format, UTF-8/UTF-16/Latin-1)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TextGridError(f"TextGrid {path} cannot be read ({e}).") from e
    return parse_textgrid(_decode(raw), source=str(path))


def find_phone_tier(tg: TextGrid, name: str | None = None) -> Tier:
    """The phone tier: ``name`` if given, else the first IntervalTier named ``phones``/``phone``/
    ``phonemes`` (any case), or ending in ``" - phones"`` (MFA's multi-speaker naming)."""
    if name is not None:
        return tg.tier(name)
    for t in tg.tiers:
        low = t.name.strip().lower()
        if t.kind == "IntervalTier" and (
            low in PHONE_TIER_NAMES or any(low.endswith(" - " + p) for p in PHONE_TIER_NAMES)
        ):
            return t
    raise TextGridError(
        f"no phone tier (looked for {PHONE_TIER_NAMES}); tiers are {tg.tier_names}; pass tier=..."
    )


def _contiguous(
    intervals: Sequence[Interval], silence_token: str, start: float | None, end: float | None
) -> list[Interval]:
    """Sorted, non-overlapping intervals covering ``[start, end]``: empty labels, gaps and the
    uncovered head/tail become ``silence_token``; an overlapping interval is clipped to begin
    where the previous one ended."""
    items = sorted(intervals, key=lambda iv: (iv.start, iv.end))
    for iv in items:
        if iv.end < iv.start:
            raise TextGridError(f"interval {iv} ends before it starts")
    if not items:
        if start is not None and end is not None and end > start:
            return [Interval(start, end, silence_token)]
        return []
    cursor = items[0].start if start is None else min(start, items[0].start)
    out: list[Interval] = []
    for iv in items:
        if iv.start > cursor + 1e-9:
            out.append(Interval(cursor, iv.start, silence_token))
        elif iv.end <= cursor:
            continue  # fully inside the previous interval
        out.append(Interval(max(iv.start, cursor), iv.end, iv.label.strip() or silence_token))
        cursor = iv.end
    if end is not None and end > cursor + 1e-9:
        out.append(Interval(cursor, end, silence_token))
    return out


def intervals_to_durations(
    intervals: Sequence[Interval],
    n_frames: int,
    sr: int = SAMPLE_RATE,
    hop: int = HOP_LENGTH,
    silence_token: str = "sil",
    offset: float = 0.0,
    min_frames: int = 0,
    merge_silence: bool = False,
    tier_range: tuple[float, float] | None = None,
) -> tuple[list[str], np.ndarray]:
    """Labels and integer frame durations (int32) that sum exactly to ``n_frames``.

    Args:
      intervals: phone intervals in seconds (gaps and empty labels become ``silence_token``).
      n_frames: frame count of the audio (``ceil(n_samples / hop)``).
      offset: seconds subtracted from every time (audio trimmed or cut as a segment after
        alignment).
      min_frames: minimum frames per label (0 allows zero-length phones); needs
        ``n_frames >= min_frames * len(labels)``.
      merge_silence: merge consecutive silence tokens into one.
      tier_range: the tier's (xmin, xmax), so leading/trailing gaps become silence too.

    See the module docstring for the rounding rule.
    """
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    lo, hi = tier_range if tier_range is not None else (None, None)
    items = _contiguous(intervals, silence_token, lo, hi)
    if merge_silence:
        merged: list[Interval] = []
        for iv in items:
            if merged and iv.label == silence_token and merged[-1].label == silence_token:
                merged[-1] = Interval(merged[-1].start, iv.end, silence_token)
            else:
                merged.append(iv)
        items = merged
    if not items:
        if n_frames:
            raise TextGridError(f"no intervals to cover {n_frames} frames")
        return [], np.zeros(0, dtype=np.int32)
    labels = [iv.label for iv in items]
    times = np.array([items[0].start] + [iv.end for iv in items], dtype=np.float64) - offset
    bounds = np.floor(times * sr / hop + 0.5).astype(np.int64)
    bounds = np.clip(bounds, 0, n_frames)
    bounds[0], bounds[-1] = 0, n_frames
    bounds = np.maximum.accumulate(bounds)  # already sorted; guards against float noise
    if min_frames > 0:
        k = len(labels)
        if n_frames < min_frames * k:
            raise TextGridError(
                f"{k} phones cannot each get {min_frames} frame(s) in {n_frames} frames"
            )
        # Forward pass pushes boundaries right, backward pass pulls them left of the fixed end;
        # the result is the nearest valid boundary set (boundaries stay monotone).
        for i in range(1, k + 1):
            bounds[i] = max(bounds[i], bounds[i - 1] + min_frames)
        bounds[k] = n_frames
        for i in range(k - 1, 0, -1):
            bounds[i] = min(bounds[i], bounds[i + 1] - min_frames)
    durations = np.diff(bounds).astype(np.int32)
    assert int(durations.sum()) == n_frames and np.all(durations >= 0)
    return labels, durations


def textgrid_to_durations(
    textgrid: str | os.PathLike | TextGrid,
    n_frames: int,
    tier: str | None = None,
    *,
    sr: int = SAMPLE_RATE,
    hop: int = HOP_LENGTH,
    offset: float = 0.0,
    **options: Any,
) -> tuple[list[str], np.ndarray]:
    """Phone labels and frame durations from a TextGrid (path or parsed), summing to ``n_frames``.

    Uses the phone tier (:func:`find_phone_tier`), covers the tier's whole time range (leading or
    trailing gaps become silence) and applies :func:`intervals_to_durations`, which also takes
    ``options`` (``silence_token``, ``min_frames``, ``merge_silence``). A TextGrid that is
    more than one frame longer or shorter than ``n_frames`` is still converted (its ends are
    forced onto the audio's), but more than 0.5 s of mismatch raises, since that means the wrong
    file or sample rate.
    """
    tg = textgrid if isinstance(textgrid, TextGrid) else read_textgrid(textgrid)
    t = find_phone_tier(tg, tier)
    audio_s = n_frames * hop / sr
    tg_s = t.xmax - offset
    if math.isfinite(tg_s) and abs(tg_s - audio_s) > 0.5:
        raise TextGridError(
            f"TextGrid lasts {tg_s:.3f} s but the audio {audio_s:.3f} s ({n_frames} frames): "
            "wrong file, sample rate or offset?"
        )
    return intervals_to_durations(
        t.intervals, n_frames, sr=sr, hop=hop, offset=offset, tier_range=(t.xmin, t.xmax),
        **options,
    )  # fmt: skip
