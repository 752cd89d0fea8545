"""Versioned phoneme vocabulary: token <-> id mapping saved beside datasets and checkpoints.

A vocabulary is an ordered token list; its ``version`` is a hash of that list plus the G2P token
convention, so two different vocabularies never share a version and a model trained with one
cannot silently be fed ids from another (:meth:`PhonemeVocab.check_compatible`).

Ids: ``<pad>`` = 0, ``<unk>`` = 1, ``<sil>`` = 2, ``<wb>`` = 3, then the punctuation tokens
``, . ! ? ; :`` (4-9), then the phonemes in sorted order.

:func:`default_vocab` covers espeak-ng's English phoneme inventory (all English voices: en-us,
en-gb, en-gb-x-rp, en-029, en-gb-scotland, en-us-nyc, en-gb-x-gbclan, en-gb-x-gbcwmd), each vowel
with its unstressed, primary- and secondary-stressed forms, so that any English text phonemized by
:mod:`naturalspeech2_jax.text.g2p` encodes without unknown symbols (words espeak-ng reads with a
foreign voice may still produce foreign phonemes; those raise :class:`UnknownSymbolError`).
The inventory was collected by phonemizing ~57k distinct English words with every English voice
and completing the stress variants; it is embedded below so that no corpus is needed to build it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from naturalspeech2_jax.text.g2p import PUNCTUATION_TOKENS, SIL, TOKEN_CONVENTION, WB

__all__ = [
    "ENGLISH_VOWELS",
    "PAD",
    "SPECIAL_TOKENS",
    "UNK",
    "PhonemeVocab",
    "UnknownSymbolError",
    "default_vocab",
    "english_phonemes",
]

PAD = "<pad>"
UNK = "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, SIL, WB, *PUNCTUATION_TOKENS)
_FORMAT = "naturalspeech2_jax.phoneme_vocab/1"

# espeak-ng English vowels (every one gets the three stress forms) and non-vowel phonemes. The
# vowels are public: singing gives them a note's length (``inference.singing``).
ENGLISH_VOWELS = tuple(
    (  # noqa: SIM905 - a symbol list reads better as one string
        "a a: aa aɪ aɪə aɪɚ aʊ aː e ei eə eɪ eʲ eː i iə iː n̩ o oə oɪ oʊ oː u "
        "uː æ ææ æʊ ɐ ɐɐ ɑə ɑː ɑːɹ ɑ̃ ɒ ɔ ɔə ɔɪ ɔː ɔːɹ ə əl əu əɪ əɹ əʊ ɚ ɛ "
        "ɛə ɛəɛə ɛɹ ɜ ɜː ɪ ɪɹ ɪʲ ʉ ʉɹ ʉː ʊ ʊə ʊɹ ʌ ʌɹ ʌʉ ʌʊ ᵻ"
    ).split()
)
_ENGLISH_CONSONANTS = tuple(
    (  # noqa: SIM905
        "b d dʒ f h j k l m n p r s t tʃ t̪ v w x z ç ð ŋ ɡ ɬ ɹ ɾ ʃ ʍ ʒ ʔ θ"
    ).split()
)


def english_phonemes() -> list[str]:
    """espeak-ng's English IPA phoneme tokens, with stress variants of every vowel, sorted."""
    tokens = set(_ENGLISH_CONSONANTS)
    for vowel in ENGLISH_VOWELS:
        tokens.update((vowel, "ˈ" + vowel, "ˌ" + vowel))
    return sorted(tokens)


class UnknownSymbolError(ValueError):
    """Raised by :meth:`PhonemeVocab.encode` for tokens not in the vocabulary.

    ``symbols`` lists them; a data pipeline catches this and skips the utterance with the reason
    "unknown symbols".
    """

    def __init__(self, symbols: Sequence[str], version: str) -> None:
        self.symbols = list(symbols)
        self.version = version
        super().__init__(
            f"unknown symbols {self.symbols} are not in phoneme vocabulary {version}; "
            "skip this utterance or encode with on_unknown='unk'."
        )


class PhonemeVocab:
    """Token <-> id mapping with special tokens first and a content-hash ``version``."""

    def __init__(self, phonemes: Iterable[str], metadata: dict[str, Any] | None = None) -> None:
        phonemes = list(phonemes)
        for token in phonemes:
            if not isinstance(token, str) or not token or any(c.isspace() for c in token):
                raise ValueError(
                    f"Phoneme tokens must be non-empty strings without spaces: {token!r}."
                )
        extra = sorted(set(phonemes) - set(SPECIAL_TOKENS))
        self.tokens: tuple[str, ...] = (*SPECIAL_TOKENS, *extra)
        self.metadata: dict[str, Any] = {"token_convention": TOKEN_CONVENTION, **(metadata or {})}
        self._ids = {t: i for i, t in enumerate(self.tokens)}
        payload = json.dumps(
            {"tokens": self.tokens, "metadata": self.metadata}, ensure_ascii=False, sort_keys=True
        )
        self.version = "pv1-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    # -- mapping ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PhonemeVocab) and other.version == self.version

    def __hash__(self) -> int:
        return hash(self.version)

    def __repr__(self) -> str:
        return f"PhonemeVocab(version={self.version!r}, size={len(self)})"

    pad_id = property(lambda self: self._ids[PAD])
    unk_id = property(lambda self: self._ids[UNK])
    sil_id = property(lambda self: self._ids[SIL])
    wb_id = property(lambda self: self._ids[WB])

    def token_to_id(self, token: str) -> int:
        """Id of one token; raises UnknownSymbolError if absent."""
        if token not in self._ids:
            raise UnknownSymbolError([token], self.version)
        return self._ids[token]

    def id_to_token(self, index: int) -> str:
        """Token of one id; raises ValueError if out of range."""
        if not 0 <= int(index) < len(self.tokens):
            raise ValueError(
                f"Id {index} is outside phoneme vocabulary {self.version} (size {len(self)})."
            )
        return self.tokens[int(index)]

    def unknown(self, tokens: Iterable[str]) -> list[str]:
        """Distinct tokens of ``tokens`` missing from this vocabulary, in order of appearance."""
        return list(dict.fromkeys(t for t in tokens if t not in self._ids))

    def encode(
        self, tokens: Sequence[str], on_unknown: Literal["raise", "unk"] = "raise"
    ) -> list[int]:
        """Tokens -> ids. Unknown tokens raise UnknownSymbolError unless ``on_unknown='unk'``."""
        if isinstance(tokens, str):
            raise TypeError("encode expects a token list (from phonemize), not a string.")
        if on_unknown not in ("raise", "unk"):
            raise ValueError(f"on_unknown must be 'raise' or 'unk', got {on_unknown!r}.")
        missing = self.unknown(tokens)
        if missing and on_unknown == "raise":
            raise UnknownSymbolError(missing, self.version)
        unk = self._ids[UNK]
        return [self._ids.get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int], strip_pad: bool = True) -> list[str]:
        """Ids -> tokens (padding dropped unless ``strip_pad=False``)."""
        out = [self.id_to_token(i) for i in ids]
        return [t for t in out if t != PAD] if strip_pad else out

    # -- persistence --------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable form (what :meth:`save` writes)."""
        return {
            "format": _FORMAT,
            "version": self.version,
            "metadata": self.metadata,
            "tokens": list(self.tokens),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "<dict>") -> PhonemeVocab:
        """Rebuild from :meth:`to_json` output, checking the stored version against the content."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"{source} is not a phoneme vocabulary file (format {_FORMAT}).")
        tokens = data["tokens"]
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"{source} has unexpected special tokens; rebuild the vocabulary.")
        vocab = cls(tokens[len(SPECIAL_TOKENS) :], metadata=data.get("metadata"))
        if list(vocab.tokens) != list(tokens) or vocab.version != data.get("version"):
            raise ValueError(
                f"{source} was edited by hand (stored version {data.get('version')} does not match "
                f"its content {vocab.version}); regenerate it instead of editing it."
            )
        return vocab

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the vocabulary as JSON (atomically, so a crash never leaves half a file)."""
        path = os.fspath(path)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, ensure_ascii=False, indent=1)
            f.write("\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PhonemeVocab:
        """Read a vocabulary written by :meth:`save`."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Phoneme vocabulary {path} does not exist; pass the vocab.json "
                "saved with the dataset or checkpoint."
            )
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON ({err}); regenerate it.") from err
        return cls.from_json(data, source=path)

    def check_compatible(self, other: PhonemeVocab | str, where: str = "") -> None:
        """Raise ValueError unless ``other`` (a vocabulary or a version string) is this one."""
        other_version = other.version if isinstance(other, PhonemeVocab) else other
        if not isinstance(other_version, str):
            raise TypeError("check_compatible expects a PhonemeVocab or a version string.")
        if other_version != self.version:
            place = f" in {where}" if where else ""
            raise ValueError(
                f"Phoneme vocabulary mismatch{place}: expected version {self.version} but found "
                f"{other_version}; use the vocabulary saved with that data or checkpoint, or "
                "re-run data preparation with this vocabulary."
            )

    def extended(self, phonemes: Iterable[str]) -> PhonemeVocab:
        """A new vocabulary with extra phonemes added (it gets a new version)."""
        return PhonemeVocab([*self.tokens[len(SPECIAL_TOKENS) :], *phonemes], self.metadata)


def default_vocab() -> PhonemeVocab:
    """The shipped English vocabulary (espeak-ng English inventory, stress variants included)."""
    return PhonemeVocab(english_phonemes(), metadata={"inventory": "espeak-ng-english/v1"})
