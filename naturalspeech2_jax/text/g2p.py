"""Grapheme-to-phoneme conversion: English text -> IPA phoneme tokens, via phonemizer + espeak-ng.

The espeak-ng library and its data come from the ``espeakng_loader`` wheel (no apt, no downloads);
:func:`configure_espeak` points phonemizer at them.

Token conventions (identical for training data, the synthetic corpus and inference):

* **Phonemes** are espeak-ng's IPA phonemes as phonemizer splits them (multi-character phonemes such
  as ``tʃ``, ``oʊ``, ``ɑːɹ`` are one token; length marks stay attached).
* **Stress** is attached to the vowel it belongs to: ``ˈoʊ`` (primary), ``ˌaʊ`` (secondary),
  ``oʊ`` (unstressed) are three different tokens.
* **Word boundary**: ``<wb>`` between two consecutive words of the same clause. It is not emitted
  next to punctuation (the punctuation token is the boundary there). espeak-ng sometimes merges
  function words ("in the" -> ``ɪ n ð ə``); those get no ``<wb>``, in training and inference alike.
* **Punctuation**: each clause mark of the normalised text (``, . ! ? ; :``) is its own token.
* **Silence**: exactly one ``<sil>`` at the start and one at the end of every utterance, always.
  In a corpus the leading ``<sil>`` covers the audio before the first phoneme and the trailing one
  the audio after the last token; at inference the duration predictor decides how long they are.
  No other silence token is ever produced: pauses inside an utterance belong to the punctuation
  (or ``<wb>``) token where they occur.

So ``phonemize("Hello, world!")`` is
``['<sil>', 'h', 'ə', 'l', 'ˈoʊ', ',', 'w', 'ˈɜː', 'l', 'd', '!', '<sil>']``.

Text is passed through :func:`naturalspeech2_jax.text.normalize.normalize_text` first; text with
nothing pronounceable raises ``ValueError``. Characters the normaliser cannot spell in English
(other scripts, emoji) are dropped there, so they have no phonemes here;
:func:`naturalspeech2_jax.text.normalize.unpronounceable_characters` names them, and data
preparation rejects an utterance that has any.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Sequence
from types import ModuleType
from typing import Literal

from naturalspeech2_jax.text.normalize import CLAUSE_PUNCTUATION, normalize_text

__all__ = [
    "DEFAULT_LANGUAGE",
    "G2P",
    "PUNCTUATION_TOKENS",
    "SIL",
    "WB",
    "configure_espeak",
    "espeak_version",
    "import_optional",
    "is_phoneme",
    "phonemize",
    "phonemize_batch",
    "split_clauses",
]

SIL = "<sil>"
WB = "<wb>"
PUNCTUATION_TOKENS: tuple[str, ...] = tuple(CLAUSE_PUNCTUATION)
DEFAULT_LANGUAGE = "en-us"
#: Identifies the token conventions above; stored in vocabularies so a change is detected.
TOKEN_CONVENTION = "ipa-stress-on-vowel+wb+punct+sil-edges/v1"

_CLAUSE_RE = re.compile(r"[a-z']+(?: [a-z']+)*|[" + re.escape(CLAUSE_PUNCTUATION) + "]")
_configured = False


def import_optional(*modules: str, missing: str) -> list[ModuleType]:
    """The named modules, imported; an ImportError saying ``missing`` (what to install) when one
    is not installed. For the dependencies imported on first use (here phonemizer and espeak-ng;
    pocketsphinx in ``align/sphinx.py``)."""
    try:
        return [importlib.import_module(m) for m in modules]
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError(missing) from err


def configure_espeak() -> None:
    """Point phonemizer at the espeak-ng library and data shipped by ``espeakng_loader``.

    Idempotent. An ``ESPEAK_DATA_PATH`` already set in the environment is respected.
    """
    global _configured
    if _configured:
        return
    espeakng_loader, wrapper = import_optional(
        "espeakng_loader", "phonemizer.backend.espeak.wrapper",
        missing="G2P needs the 'phonemizer' and 'espeakng-loader' packages: "
        "pip install 'phonemizer>=3.3,<4' 'espeakng-loader>=0.2,<0.3'.",
    )  # fmt: skip
    os.environ.setdefault("ESPEAK_DATA_PATH", espeakng_loader.get_data_path())
    wrapper.EspeakWrapper.set_library(espeakng_loader.get_library_path())
    _configured = True


def espeak_version() -> str:
    """Version string of the espeak-ng library in use (e.g. '1.52.0')."""
    configure_espeak()
    from phonemizer.backend import EspeakBackend

    return ".".join(str(v) for v in EspeakBackend.version())


def is_phoneme(token: str) -> bool:
    """True for phoneme tokens, False for ``<sil>``, ``<wb>``, punctuation and other specials."""
    return not (token.startswith("<") and token.endswith(">")) and token not in PUNCTUATION_TOKENS


def split_clauses(normalized: str) -> list[str]:
    """Split normalised text into word runs and punctuation marks: 'a b, c.' -> ['a b', ',', 'c',
    '.']."""
    return _CLAUSE_RE.findall(normalized)


def _attach_stress(phones: list[str]) -> list[str]:
    """Glue a free-standing stress mark to the phoneme after it (espeak-ng normally does so)."""
    out: list[str] = []
    pending = ""
    for phone in phones:
        if phone in ("ˈ", "ˌ"):
            pending = phone
            continue
        out.append(pending + phone)
        pending = ""
    return out


class G2P:
    """Phonemizer front end with a clause-level cache; see the module docstring for conventions.

    Phonemizer is slow per call (it drives espeak-ng line by line through ctypes), so
    :meth:`phonemize_batch` collects the clauses of many sentences, phonemizes only the uncached
    ones in a single call, and reassembles the sentences.
    """

    def __init__(self, language: str = DEFAULT_LANGUAGE, cache_size: int = 200_000) -> None:
        if not isinstance(language, str) or not language:
            raise ValueError(
                f"G2P language must be an espeak-ng voice like 'en-us', got {language!r}."
            )
        configure_espeak()
        from phonemizer.backend import EspeakBackend
        from phonemizer.separator import Separator

        self.language = language
        self._logger = logging.getLogger("naturalspeech2_jax.text.g2p.phonemizer")
        self._logger.setLevel(logging.ERROR)
        try:
            self._backend = EspeakBackend(
                language,
                preserve_punctuation=False,  # clauses are split (and punctuation kept) by us
                with_stress=True,
                language_switch="remove-flags",
                logger=self._logger,
            )
        except RuntimeError as err:
            raise ValueError(
                f"espeak-ng does not know the language {language!r}; use e.g. 'en-us' or 'en-gb'."
            ) from err
        self._separator = Separator(phone=" ", word="|", syllable=None)
        self._cache: dict[str, list[list[str]]] = {}
        self._cache_size = cache_size

    # -- clause level -------------------------------------------------------------------------
    def _phonemize_clauses(self, clauses: Sequence[str]) -> list[list[list[str]]]:
        """Word-run clauses -> per clause a list of words, each a list of phoneme tokens."""
        missing = sorted({c for c in clauses if c not in self._cache})
        if missing:
            raw = self._backend.phonemize(missing, separator=self._separator, strip=True, njobs=1)
            if len(self._cache) + len(missing) > self._cache_size:
                self._cache.clear()  # a simple bound; a corpus rarely repeats clauses anyway
            for clause, phones in zip(missing, raw, strict=True):
                words = [_attach_stress(w.split()) for w in phones.split("|")]
                self._cache[clause] = [w for w in words if w]
        return [self._cache[c] for c in clauses]

    # -- sentence level -----------------------------------------------------------------------
    def phonemize(self, text: str) -> list[str]:
        """Text -> tokens ``[<sil>, phonemes / <wb> / punctuation ..., <sil>]``.

        Raises ValueError when the text has nothing pronounceable (empty, punctuation only).
        """
        return self.phonemize_batch([text])[0]

    def phonemize_batch(
        self, texts: Sequence[str], on_error: Literal["raise", "none"] = "raise"
    ) -> list[list[str] | None]:
        """Phonemize many texts in one phonemizer call.

        ``on_error="raise"`` raises ValueError for the first unpronounceable text (naming its
        index); ``on_error="none"`` puts None in its place so a data pipeline can skip it.
        """
        if isinstance(texts, str):
            raise TypeError("phonemize_batch expects a sequence of strings; use phonemize(text).")
        if on_error not in ("raise", "none"):
            raise ValueError(f"on_error must be 'raise' or 'none', got {on_error!r}.")
        split = []
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"phonemize expects str, got {type(text).__name__}.")
            split.append(split_clauses(normalize_text(text)))
        word_runs = [c for clauses in split for c in clauses if c not in PUNCTUATION_TOKENS]
        phonemized = iter(self._phonemize_clauses(word_runs))

        results: list[list[str] | None] = []
        for index, (text, clauses) in enumerate(zip(texts, split, strict=True)):
            tokens = [SIL]
            for clause in clauses:
                if clause in PUNCTUATION_TOKENS:
                    # A mark right after the opening <sil> or another mark carries no boundary.
                    if is_phoneme(tokens[-1]):
                        tokens.append(clause)
                    continue
                for i, word in enumerate(next(phonemized)):
                    if i:
                        tokens.append(WB)
                    tokens.extend(word)
            tokens.append(SIL)
            if not any(is_phoneme(t) for t in tokens):
                if on_error == "raise":
                    where = "" if len(texts) == 1 else f" (item {index})"
                    raise ValueError(
                        f"Text{where} {text!r} has nothing pronounceable after normalisation; "
                        "give at least one word."
                    )
                results.append(None)
                continue
            results.append(tokens)
        return results


_DEFAULT: dict[str, G2P] = {}


def _default(language: str) -> G2P:
    if language not in _DEFAULT:
        _DEFAULT[language] = G2P(language)
    return _DEFAULT[language]


def phonemize(text: str, language: str = DEFAULT_LANGUAGE) -> list[str]:
    """Text -> token list (see module docstring); raises ValueError if nothing is pronounceable."""
    return _default(language).phonemize(text)


def phonemize_batch(
    texts: Sequence[str],
    language: str = DEFAULT_LANGUAGE,
    on_error: Literal["raise", "none"] = "raise",
) -> list[list[str] | None]:
    """Batch :func:`phonemize` (one phonemizer call for all texts; None for failures if asked)."""
    return _default(language).phonemize_batch(texts, on_error=on_error)
