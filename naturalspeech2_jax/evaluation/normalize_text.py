"""Text normalisation applied identically to references and ASR hypotheses before WER.

Lower case, numbers spelled out in words (cardinals, ordinals, years, decimals, percentages),
punctuation removed except word-internal apostrophes, whitespace collapsed. Kept dependency-free so
the same function runs on the transcript side and the hypothesis side without any model.
"""

from __future__ import annotations

import re
import unicodedata

# fmt: off
_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
# fmt: on
_SCALES = [(10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand")]
_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def number_to_words(n: int) -> str:
    """Spell out a non-negative integer in English words ("121" -> "one hundred twenty one")."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    for value, name in _SCALES:
        if n >= value:
            high, rest = divmod(n, value)
            tail = "" if rest == 0 else " " + number_to_words(rest)
            return number_to_words(high) + " " + name + tail
    raise AssertionError("unreachable")


def ordinal_to_words(n: int) -> str:
    """Spell out an ordinal ("21" -> "twenty first")."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _year_to_words(n: int) -> str:
    # "1984" is read "nineteen eighty four" and "1905" "nineteen oh five"; 2000-2009 are read as
    # cardinals ("two thousand five"), which is how both speakers and ASR systems say them.
    high, low = divmod(n, 100)
    if low == 0:
        return number_to_words(high) + " hundred"
    if low < 10:
        return number_to_words(high) + " oh " + number_to_words(low)
    return number_to_words(high) + " " + number_to_words(low)


def _spell_number_token(match: re.Match[str]) -> str:
    token = match.group(0)
    ordinal = re.fullmatch(r"(\d+)(st|nd|rd|th)", token)
    if ordinal:
        return " " + ordinal_to_words(int(ordinal.group(1))) + " "
    percent = token.endswith("%")
    token = token.rstrip("%")
    if "." in token:
        whole, frac = token.split(".", 1)
        digits = " ".join(_ONES[int(d)] for d in frac)
        words = number_to_words(int(whole or "0")) + " point " + digits
    else:
        value = int(token)
        if 1100 <= value <= 1999 or 2010 <= value <= 2099:
            words = _year_to_words(value)
        else:
            words = number_to_words(value)
    return " " + words + (" percent" if percent else "") + " "


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
    return " ".join(text.split())
