"""Text normalisation applied identically to references and ASR hypotheses before WER.

Lower case, numbers spelled out in words (cardinals, ordinals, years, decimals, percentages;
the speller is the text front end's, :mod:`naturalspeech2_jax.text.normalize`),
unambiguous contractions expanded (n't, 're, 've, 'll, I'm), punctuation removed except
word-internal apostrophes, whitespace collapsed. Kept dependency-free so
the same function runs on the transcript side and the hypothesis side without any model.
"""

from __future__ import annotations

import re
import unicodedata

from naturalspeech2_jax.text.normalize import (
    digits_to_words,
    number_to_words,
    ordinal_to_words,
    year_to_words,
)

__all__ = ["normalize_text", "number_to_words", "ordinal_to_words"]


def _spell_number_token(match: re.Match[str]) -> str:
    token = match.group(0)
    ordinal = re.fullmatch(r"(\d+)(st|nd|rd|th)", token)
    if ordinal:
        return " " + ordinal_to_words(int(ordinal.group(1))) + " "
    percent = token.endswith("%")
    token = token.rstrip("%")
    if "." in token:
        whole, frac = token.split(".", 1)
        words = number_to_words(int(whole or "0")) + " point " + digits_to_words(frac)
    else:
        value = int(token)
        if 1100 <= value <= 1999 or 2010 <= value <= 2099:
            words = year_to_words(value)
        else:
            words = number_to_words(value)
    return " " + words + (" percent" if percent else "") + " "


# Unambiguous contractions are expanded on both sides ("I'm" and "I am" are the same words read
# aloud); "'s" and "'d" (is/has/possessive, would/had) are left alone.
_CONTRACTIONS = [
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"\bcan't\b"), "can not"),
    (re.compile(r"\bshan't\b"), "shall not"),
    (re.compile(r"\bcannot\b"), "can not"),
    (re.compile(r"n't\b"), " not"),
    (re.compile(r"'re\b"), " are"),
    (re.compile(r"'ve\b"), " have"),
    (re.compile(r"'ll\b"), " will"),
    (re.compile(r"\bi'm\b"), "i am"),
]


def normalize_text(text: str) -> str:
    """Normalise a transcript for WER: lower case, numbers as words, no punctuation."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    text = text.replace("&", " and ")
    # Thousands separators ("1,000") are joined before the number is spelled out.
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = re.sub(r"\d+(?:st|nd|rd|th)\b|\d*\.\d+%?|\d+%?", _spell_number_token, text)
    # Hyphens and slashes separate words ("twenty-one" -> "twenty one").
    text = re.sub(r"[-/\u2013\u2014]", " ", text)
    # Keep apostrophes only inside words ("don't"), drop every other punctuation mark.
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)
    text = re.sub(r"[^a-z' ]+", " ", text)
    for pattern, expansion in _CONTRACTIONS:
        text = pattern.sub(expansion, text)
    return " ".join(text.split())
