"""Forced alignment with pocketsphinx's pretrained US-English acoustic model, on our tokens.

Why. The built-in aligner learns its acoustic model from the corpus it aligns. On the 2.7 h of
../shared/data that is too little for accented speech: on speechocean762 (Mandarin-L1 adults) its
Viterbi path was no better than uniform (confidence -3.44 = log 1/35) and 74-77% of consonants got
one frame. pocketsphinx ships a continuous-density HMM acoustic model trained on many hours of
many speakers (``pocketsphinx.get_model_path()``, BSD licence, inside the wheel: nothing is
downloaded), so it aligns speakers it never saw, which is what a small corpus needs.

How (``SphinxAligner.align``):

1. pocketsphinx aligns the transcript's words (CMUdict pronunciations; a word missing from the
   dictionary gets one from our own espeak-ng phonemes, ``ARPABET_PIECES``) and returns ARPAbet
   phones and silences with 10 ms boundaries.
2. Our tokens are espeak-ng IPA, not ARPAbet, and not one-to-one with them (``ɑːɹ`` is AA R,
   espeak reduces vowels CMUdict keeps full, merges "in the" into one word...). Each phoneme
   token becomes its ARPAbet units and the two phone strings are aligned by edit distance whose
   substitution cost is small within a class (vowel for vowel, T for the flap ``ɾ``) and large
   across classes; every pocketsphinx phone then belongs to one token (an unmatched phone to the
   token before it), and a token spans the phones it owns.
3. Silence between two phonemes goes to the ``<wb>``/punctuation token between them when there is
   one (pauses belong to those, see ``text/g2p.py``), else to the phoneme before it; the leading
   and trailing silence go to the edge ``<sil>`` tokens.
4. Boundaries (not durations) are rounded to codec frames, then moved the least needed for every
   phoneme to take at least one frame, so ``sum(durations) == n_frames`` exactly.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from naturalspeech2_jax.align.viterbi import AlignmentError
from naturalspeech2_jax.text import g2p
from naturalspeech2_jax.text.normalize import normalize_text

SPHINX_FRAME_RATE = 100.0  # pocketsphinx's default: 10 ms frames
SPHINX_SAMPLE_RATE = 16_000

# espeak-ng IPA pieces -> ARPAbet (longest piece first when parsing a token)
ARPABET_PIECES: dict[str, tuple[str, ...]] = {
    # diphthongs and r-coloured vowels
    "aɪɚ": ("AY", "ER"), "aɪə": ("AY", "AH"), "ɑːɹ": ("AA", "R"), "ɔːɹ": ("AO", "R"),
    "oːɹ": ("AO", "R"), "ʊɹ": ("UH", "R"), "ɪɹ": ("IH", "R"), "ɛɹ": ("EH", "R"),
    "əɹ": ("ER",), "ʌɹ": ("ER",), "ʉɹ": ("UW", "R"), "aɪ": ("AY",), "aʊ": ("AW",),
    "eɪ": ("EY",), "oʊ": ("OW",), "əʊ": ("OW",), "ɔɪ": ("OY",), "oɪ": ("OY",), "iə": ("IY", "AH"),
    "eə": ("EH", "AH"), "ɛə": ("EH", "AH"), "ʊə": ("UH", "AH"), "əl": ("AH", "L"),
    "ɑː": ("AA",), "ɔː": ("AO",), "ɜː": ("ER",), "iː": ("IY",), "uː": ("UW",), "oː": ("AO",),
    "ʉː": ("UW",), "aː": ("AA",), "eː": ("EY",), "tʃ": ("CH",), "dʒ": ("JH",), "n̩": ("N",),
    # single vowels
    "ɑ": ("AA",), "ɒ": ("AA",), "æ": ("AE",), "ʌ": ("AH",), "ə": ("AH",), "ɐ": ("AH",),
    "ɔ": ("AO",), "ɛ": ("EH",), "e": ("EH",), "ɚ": ("ER",), "ɝ": ("ER",), "ɜ": ("ER",),
    "ɪ": ("IH",), "ᵻ": ("IH",), "i": ("IY",), "u": ("UW",), "ʉ": ("UW",), "ʊ": ("UH",),
    "o": ("OW",), "a": ("AA",),
    # consonants
    "b": ("B",), "d": ("D",), "ð": ("DH",), "f": ("F",), "ɡ": ("G",), "g": ("G",), "h": ("HH",),
    "k": ("K",), "l": ("L",), "ɬ": ("L",), "m": ("M",), "n": ("N",), "ŋ": ("NG",), "p": ("P",),
    "ɹ": ("R",), "r": ("R",), "s": ("S",), "ʃ": ("SH",), "t": ("T",), "ɾ": ("T",), "ʔ": ("T",),
    "θ": ("TH",), "v": ("V",), "w": ("W",), "ʍ": ("W",), "j": ("Y",), "z": ("Z",), "ʒ": ("ZH",),
    "x": ("K",), "ç": ("HH",),
}  # fmt: skip
_PIECES = sorted(ARPABET_PIECES, key=len, reverse=True)
_IGNORED = re.compile("[ˈˌːʲ̪̃:]")  # stress, length and diacritics carry no ARPAbet unit

# ARPAbet vowels; all else is a consonant
VOWELS = frozenset(
    ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")
)
# near-identical pairs: espeak and CMUdict often disagree between these
_CLOSE = {
    frozenset(p)
    for p in [("T", "D"), ("AH", "IH"), ("AH", "ER"), ("AH", "AA"), ("AH", "EH"), ("IH", "IY"),
              ("IH", "EH"), ("AA", "AO"), ("UH", "UW"), ("AH", "UH"), ("Z", "S"), ("DH", "TH"),
              ("N", "NG"), ("ER", "R")]
}  # fmt: skip


def token_units(token: str) -> tuple[str, ...]:
    """The ARPAbet units of one espeak-ng phoneme token ('ˈɑːɹ' -> ('AA', 'R')); an unknown
    symbol becomes '?', which costs the same against everything."""
    out: list[str] = []
    s = token
    while s:
        for piece in _PIECES:
            if s.startswith(piece):
                out.extend(ARPABET_PIECES[piece])
                s = s[len(piece) :]
                break
        else:
            if not _IGNORED.match(s[0]):
                out.append("?")
            s = s[1:]
    return tuple(out) or ("?",)


def _substitution_cost(a: str, b: str) -> float:
    if a == b:
        return 0.0
    if frozenset((a, b)) in _CLOSE:
        return 0.4
    if "?" in (a, b):
        return 1.0
    return 1.0 if (a in VOWELS) == (b in VOWELS) else 2.2


GAP_COST = 1.0


def align_phone_strings(units: Sequence[str], phones: Sequence[str]) -> list[int]:
    """Edit-distance alignment; returns for each phone the index of the unit it is matched (or
    substituted) to, or -1 for a phone inserted between units."""
    n, m = len(units), len(phones)
    cost = np.zeros((n + 1, m + 1))
    cost[:, 0] = np.arange(n + 1) * GAP_COST
    cost[0, :] = np.arange(m + 1) * GAP_COST
    sub = np.array([[_substitution_cost(u, p) for p in phones] for u in units]).reshape(n, m)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(
                cost[i - 1, j - 1] + sub[i - 1, j - 1],
                cost[i - 1, j] + GAP_COST,  # unit with no phone
                cost[i, j - 1] + GAP_COST,  # phone with no unit
            )
    owner = [-1] * m
    i, j = n, m
    while i > 0 and j > 0:
        if np.isclose(cost[i, j], cost[i - 1, j - 1] + sub[i - 1, j - 1]):
            owner[j - 1] = i - 1
            i, j = i - 1, j - 1
        elif np.isclose(cost[i, j], cost[i - 1, j] + GAP_COST):
            i -= 1
        else:
            j -= 1
    return owner


@dataclasses.dataclass(frozen=True)
class Segment:
    """One pocketsphinx phone (ARPAbet, or 'SIL') with its span in seconds."""

    phone: str
    start: float
    end: float


def durations_from_segments(
    tokens: Sequence[str],
    spoken: Sequence[bool],
    segments: Sequence[Segment],
    n_frames: int,
    frame_rate: float,
) -> tuple[np.ndarray, dict[str, float]]:
    """Map pocketsphinx phones onto our tokens (module docstring, steps 2-4).

    Returns int32 durations [N] (sum == n_frames; >= 1 for every spoken token) and match
    statistics: the share of pocketsphinx phones matched exactly and the edit cost per unit.
    """
    spoken = np.asarray(spoken, bool)
    if len(tokens) != len(spoken):
        raise ValueError(f"{len(tokens)} tokens but {len(spoken)} spoken flags.")
    if int(spoken.sum()) > n_frames:
        raise AlignmentError(f"{int(spoken.sum())} phonemes cannot fit in {n_frames} frames")
    phones = [s for s in segments if s.phone != "SIL"]
    if not phones or not spoken.any():
        raise AlignmentError("no phones to align (empty transcript or alignment)")
    units, unit_token = [], []
    for k, tok in enumerate(tokens):
        if spoken[k]:
            for u in token_units(tok):
                units.append(u)
                unit_token.append(k)
    owner_unit = align_phone_strings(units, [p.phone for p in phones])
    # every phone -> one token: matched phones to their unit's token, the rest to the previous
    # owned token (the first owned one for phones before any match)
    owner = [unit_token[u] if u >= 0 else -1 for u in owner_unit]
    first = next((o for o in owner if o >= 0), int(np.flatnonzero(spoken)[0]))
    last = first
    for j, o in enumerate(owner):
        owner[j] = o if o >= 0 else last
        last = owner[j]
    total = n_frames / frame_rate
    start: dict[int, float] = {}
    end: dict[int, float] = {}
    for p, o in zip(phones, owner, strict=True):
        start[o] = min(start.get(o, p.start), p.start)
        end[o] = max(end.get(o, p.end), p.end)
    later_starts = np.full(len(tokens) + 1, total)  # later_starts[k]: first phone at/after k
    for k in range(len(tokens) - 1, -1, -1):
        later_starts[k] = start.get(k, later_starts[k + 1])
    # token end times (seconds), left to right
    ends = np.zeros(len(tokens))
    t = 0.0
    for k in range(len(tokens)):
        if spoken[k]:
            t = max(t, end.get(k, t))
            if k + 1 < len(tokens) and spoken[k + 1]:
                # a silence with no optional token to hold it lengthens the phoneme before it
                t = max(t, later_starts[k + 1])
        elif k == len(tokens) - 1:
            t = total  # the trailing <sil>: everything after the last phoneme
        elif (k == 0 or spoken[k - 1]) and spoken[k + 1 :].any():
            # the first optional token of a run between phonemes (or the leading <sil>) holds the
            # pause there; the others of the run take no frames
            t = max(t, later_starts[k + 1])
        ends[k] = t
    ends[-1] = total
    bounds = np.rint(ends * frame_rate).astype(np.int64)
    bounds[-1] = n_frames
    durations = _enforce_minimum(bounds, spoken.astype(np.int64), n_frames)
    matched = sum(1 for j, u in enumerate(owner_unit) if u >= 0 and units[u] == phones[j].phone)
    stats = {"phones": len(phones), "exact_match_share": matched / len(phones)}
    return durations, stats


def _enforce_minimum(bounds: np.ndarray, minimum: np.ndarray, n_frames: int) -> np.ndarray:
    """Token end boundaries -> durations with ``durations[k] >= minimum[k]``, moving each
    boundary as little as needed (forward pass pushes right, backward pass pulls left)."""
    b = np.clip(bounds.copy(), 0, n_frames)
    prev = 0
    for k in range(len(b)):
        b[k] = max(b[k], prev + minimum[k])
        prev = b[k]
    b[-1] = n_frames
    for k in range(len(b) - 2, -1, -1):
        b[k] = min(b[k], b[k + 1] - minimum[k + 1])
    d = np.diff(np.concatenate([[0], b])).astype(np.int32)
    if (d < minimum).any() or int(d.sum()) != n_frames:
        raise AlignmentError(f"cannot give every phoneme a frame in {n_frames} frames")
    return d


class SphinxAligner:
    """pocketsphinx forced alignment -> our token durations. One decoder per process."""

    def __init__(self, sample_rate: int = SPHINX_SAMPLE_RATE):
        (pocketsphinx,) = g2p.import_optional(
            "pocketsphinx",
            missing="the pocketsphinx aligner needs pocketsphinx: pip install -e '.[eval]' "
            "(or 'pocketsphinx>=5.0').",
        )
        if sample_rate != SPHINX_SAMPLE_RATE:
            raise ValueError(f"pocketsphinx's en-us model is {SPHINX_SAMPLE_RATE} Hz; resample.")
        # cmn=batch: each utterance's own cepstral mean (the live default starts from a fixed
        # guess and adapts across utterances, so results would depend on the order)
        common = dict(samprate=sample_rate, bestpath=False, lm=None, loglevel="FATAL", cmn="batch")
        self._decoder = pocketsphinx.Decoder(**common)
        # Retries with ever wider pruning beams, for speech the model fits badly (espeak-ng's
        # synthetic voices: 21% of the embedded corpus found no path with the default beams, 8%
        # with 1e-100, none with 1e-250); slower, so only retries.
        self._retries = [
            pocketsphinx.Decoder(**common, beam=b, pbeam=b, wbeam=b) for b in (1e-100, 1e-250)
        ]

    def _ensure_words(self, words: Sequence[str], pronounce) -> None:
        for w in words:
            if self._decoder.lookup_word(w) is None:
                units = [u for u in pronounce(w) if u != "?"]
                if not units:
                    raise AlignmentError(f"no pronunciation for the word {w!r}")
                for d in (self._decoder, *self._retries):
                    d.add_word(w, " ".join(units), True)

    def segments(self, audio: np.ndarray, words: Sequence[str], pronounce=None) -> list[Segment]:
        """Phone segments (seconds) of int16 ``audio`` forced to ``words``."""
        if audio.dtype != np.int16:
            raise ValueError(f"audio must be int16 PCM, got {audio.dtype}.")
        if pronounce is not None:
            self._ensure_words(words, pronounce)
        for d in (self._decoder, *self._retries):
            # The feature front end keeps state from the utterances before (cmn=batch alone
            # does not reset it): 6 of the embedded test corpus's 9 utterances aligned
            # differently after the others than alone, so results depended on which worker
            # aligned what. Reset per utterance, every alignment is the one it gets alone.
            d.reinit_feat()
            try:
                return self._segments(d, audio, words)
            except AlignmentError as err:
                error = err
        raise error

    @staticmethod
    def _segments(d, audio: np.ndarray, words: Sequence[str]) -> list[Segment]:
        try:
            d.set_align_text(" ".join(words))
        except RuntimeError as err:
            raise AlignmentError(f"pocketsphinx cannot set up the alignment ({err})") from err
        raw = audio.tobytes()
        _decode(d, raw)
        if d.hyp() is None:
            raise AlignmentError("pocketsphinx found no path through the transcript")
        d.set_alignment()
        _decode(d, raw)
        out = []
        for word in d.get_alignment():
            for phone in word:
                s = phone.start / SPHINX_FRAME_RATE
                out.append(Segment(phone.name, s, s + phone.duration / SPHINX_FRAME_RATE))
        if not out:
            raise AlignmentError("pocketsphinx returned an empty alignment")
        return out

    def align(
        self,
        audio: np.ndarray,
        words: Sequence[str],
        tokens: Sequence[str],
        spoken: Sequence[bool],
        n_frames: int,
        frame_rate: float,
        pronounce=None,
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Durations [N] in frames of ``frame_rate`` for ``tokens`` (see module docstring)."""
        segs = self.segments(audio, words, pronounce)
        return durations_from_segments(tokens, spoken, segs, n_frames, frame_rate)


def espeak_pronunciation(word: str, language: str = "en-us") -> tuple[str, ...]:
    """ARPAbet units of a word from our espeak-ng phonemes (for words CMUdict lacks)."""
    return tuple(
        u for tok in g2p.phonemize(word, language) if g2p.is_phoneme(tok) for u in token_units(tok)
    )


def transcript_words(text: str) -> list[str]:
    """The words pocketsphinx is forced through: the normalised text without punctuation."""
    return re.findall(r"[a-z']+", normalize_text(text))


def _decode(d, raw: bytes) -> None:
    """One pass of the decoder over an utterance. pocketsphinx raises a bare RuntimeError when
    it cannot finish one (seen on a 17 s librispeech_tc100 reading: "Failed to stop utterance
    processing"); that is this utterance's failure, reported and skipped, not the corpus's."""
    try:
        d.start_utt()
        d.process_raw(raw, full_utt=True)
        d.end_utt()
    except RuntimeError as err:
        raise AlignmentError(f"pocketsphinx could not decode the utterance ({err})") from err
