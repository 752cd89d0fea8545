"""English text normalisation: raw transcript -> lower-case words and clause punctuation.

Everything the G2P (``naturalspeech2_jax.text.g2p``) and the synthetic corpus generator speak goes
through :func:`normalize_text` first, so that training transcripts (often UPPER-CASE, with digits
and abbreviations) and inference text are turned into the same spoken words.

The output alphabet is deliberately tiny so that espeak-ng never has to guess:

* lower-case ASCII letters and word-internal apostrophes (``don't``),
* single spaces between words,
* the clause punctuation ``, . ! ? ; :`` attached to the preceding word.

Numbers (cardinals, ordinals such as ``21st``, decimals, years, currency such as ``$3.50``,
percentages, times such as ``3:30``), common abbreviations (``Mr.``, ``Dr.``, ``St.``, ...),
symbols (``&``, ``%``, ``+``, ``@``, ...), quotes, brackets and dashes are rewritten or removed.
The function is idempotent: ``normalize_text(normalize_text(x)) == normalize_text(x)``.
Pure Python, no downloads.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "CLAUSE_PUNCTUATION",
    "digits_to_words",
    "normalize_text",
    "number_to_words",
    "unpronounceable_characters",
    "ordinal_to_words",
    "year_to_words",
]

#: Punctuation kept by the normaliser (each becomes a token in the G2P output).
CLAUSE_PUNCTUATION = ",.!?;:"

_ONES = tuple(
    (  # noqa: SIM905 - a word list reads better as one string
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen"
    ).split()
)
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = [
    (10**12, "trillion"),
    (10**9, "billion"),
    (10**6, "million"),
    (10**3, "thousand"),
]
_ORDINAL_WORDS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens])
        if ones:
            words.append(_ONES[ones])
    elif rest or not words:
        words.append(_ONES[rest])
    return words


def number_to_words(n: int) -> str:
    """Spell a non-negative or negative integer in words ("one hundred twenty three").

    Words are separated by spaces, never hyphens, because espeak-ng's handling of hyphenated
    compounds differs between its dictionary and rule paths.
    """
    if not isinstance(n, int):
        raise TypeError(f"number_to_words expects an int, got {type(n).__name__}.")
    if n < 0:
        return "minus " + number_to_words(-n)
    if n >= 10**15:
        # Too large to read as a number: read digit by digit, as people do with long IDs.
        return " ".join(_ONES[int(d)] for d in str(n))
    if n == 0:
        return "zero"
    words: list[str] = []
    for scale, name in _SCALES:
        if n >= scale:
            count, n = divmod(n, scale)
            words += _below_thousand(count) + [name]
    if n:
        words += _below_thousand(n)
    return " ".join(words)


def ordinal_to_words(n: int) -> str:
    """Spell an integer as an ordinal ("twenty first")."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year_to_words(n: int) -> str:
    """Read a year the way English speakers do: 1984 -> nineteen eighty four, 1905 -> nineteen oh
    five, 1900 -> nineteen hundred; 2000-2009 and whole thousands as cardinals (two thousand five).
    """
    if 2000 <= n <= 2009 or n % 1000 == 0:
        return number_to_words(n)
    high, low = divmod(n, 100)
    if low == 0:
        return number_to_words(high) + " hundred"
    if low < 10:
        return number_to_words(high) + " oh " + number_to_words(low)
    return number_to_words(high) + " " + number_to_words(low)


def digits_to_words(digits: str) -> str:
    """Read a string of digits one by one: '314' -> 'three one four'."""
    return " ".join(_ONES[int(d)] for d in digits)


def _decimal_to_words(text: str) -> str:
    """'3.14' -> 'three point one four'; '1,234' -> 'one thousand two hundred thirty four'."""
    text = text.replace(",", "")
    if "." in text:
        whole, frac = text.split(".", 1)
        head = number_to_words(int(whole)) if whole else "zero"
        return f"{head} point {digits_to_words(frac)}"
    return number_to_words(int(text))


# Abbreviations that always expand the same way (matched case-insensitively, with the period).
_ABBREVIATIONS = {
    "mr": "mister",
    "mrs": "missus",
    "ms": "miz",
    "dr": "doctor",
    "prof": "professor",
    "jr": "junior",
    "sr": "senior",
    "capt": "captain",
    "col": "colonel",
    "gen": "general",
    "lt": "lieutenant",
    "sgt": "sergeant",
    "gov": "governor",
    "rev": "reverend",
    "hon": "honorable",
    "mt": "mount",
    "ave": "avenue",
    "rd": "road",
    "blvd": "boulevard",
    "co": "company",
    "corp": "corporation",
    "inc": "incorporated",
    "ltd": "limited",
    "dept": "department",
    "approx": "approximately",
    "est": "established",
    "vs": "versus",
    "etc": "et cetera",
    "jan": "january",
    "feb": "february",
    "mar": "march",
    "apr": "april",
    "aug": "august",
    "sep": "september",
    "sept": "september",
    "oct": "october",
    "nov": "november",
    "dec": "december",
}
_LATIN = {"e.g.": "for example", "i.e.": "that is", "a.m.": "a m", "p.m.": "p m"}
_SYMBOLS = {
    "&": " and ",
    "+": " plus ",
    "@": " at ",
    "=": " equals ",
    "#": " number ",
    "/": " slash ",
    "*": " ",
    "_": " ",
    "~": " ",
    "|": " ",
    "<": " less than ",
    ">": " greater than ",
}
_CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
}
_RE_UNSPELLABLE = re.compile(r"[^a-z' ,.!?;:]")
_CHAR_MAP = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201b": "'",
    "`": "'",
    "\u00b4": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u00ab": '"',
    "\u00bb": '"',
    "\u2013": " - ",
    "\u2014": " - ",
    "\u2015": " - ",
    "\u2026": ".",
    "\u00a0": " ",
}

_NUM = r"\d[\d,]*(?:\.\d+)?"
_RE_CURRENCY = re.compile(r"([$£€])\s?(" + _NUM + r")(\s?(?:million|billion|trillion|thousand))?")
_RE_PERCENT = re.compile(r"(" + _NUM + r")\s?%")
_RE_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_RE_TIME = re.compile(r"\b(\d{1,2}):(\d{2})\b")
_RE_YEAR = re.compile(r"(?<![\d.,])(1[1-9]\d\d|20\d\d)(s?)(?!\d|[.,]\d)")
_RE_RANGE = re.compile(r"(?<=\d)\s*-\s*(?=\d)")
_RE_NUMBER = re.compile(r"(?:(?<![\w])(-))?(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)")
_RE_ST = re.compile(r"(\S*)(\s*)\bst\.(\s*)(\S?)", re.IGNORECASE)
_RE_NO = re.compile(r"\bno\.\s*(?=\d)", re.IGNORECASE)
_RE_ABBREV = re.compile(r"\b(" + "|".join(_ABBREVIATIONS) + r")\.", re.IGNORECASE)
_RE_WORD_HYPHEN = re.compile(r"(?<=\w)-(?=\w)")


def _currency(match: re.Match[str]) -> str:
    one, many, sub_one, sub_many = _CURRENCIES[match.group(1)]
    amount = match.group(2).replace(",", "").rstrip(".")
    scale = (match.group(3) or "").strip()
    if scale:  # "$1.5 million" -> "one point five million dollars"
        return f" {_decimal_to_words(amount)} {scale} {many} "
    whole, _, frac = amount.partition(".")
    whole_n = int(whole) if whole else 0
    cents = int((frac + "00")[:2]) if frac else 0
    parts = []
    if whole_n or not cents:
        parts.append(f"{number_to_words(whole_n)} {one if whole_n == 1 else many}")
    if cents:
        parts.append(f"{number_to_words(cents)} {sub_one if cents == 1 else sub_many}")
    return " " + " and ".join(parts) + " "


def _year(match: re.Match[str]) -> str:
    words = year_to_words(int(match.group(1)))
    if match.group(2):  # "1990s" -> "nineteen nineties"
        last = words.split()[-1]
        plural = last[:-1] + "ies" if last.endswith("y") else last + "s"
        words = " ".join(words.split()[:-1] + [plural])
    return " " + words + " "


def _saint_or_street(match: re.Match[str]) -> str:
    """'St.' after a capitalised word is Street ("Main St."), before a name Saint ("St. Paul")."""
    before, space1, space2, nxt = match.groups()
    after_name = before[:1].isupper() and before[-1:].isalpha()
    if not after_name and nxt[:1].isupper():
        return f"{before}{space1}saint{space2}{nxt}"
    # Keep the period: it may also end the sentence ("... on Main St.").
    end = "." if not nxt or nxt[:1].isupper() else ""
    return f"{before}{space1}street{end}{space2}{nxt}"


def _number(match: re.Match[str]) -> str:
    sign = "minus " if match.group(1) else ""
    return " " + sign + _decimal_to_words(match.group(2)) + " "


def _time(match: re.Match[str]) -> str:
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes == 0:
        return f" {number_to_words(hours)} o'clock "
    if minutes < 10:
        return f" {number_to_words(hours)} oh {number_to_words(minutes)} "
    return f" {number_to_words(hours)} {number_to_words(minutes)} "


def normalize_text(text: str) -> str:
    """Normalise English text for G2P: spell numbers/abbreviations/symbols, lower-case, clean up.

    Returns words in lower case separated by single spaces, with clause punctuation
    (``, . ! ? ; :``) attached to the preceding word; may return "" when nothing is left.
    Characters that cannot be spelled in English are dropped; :func:`unpronounceable_characters`
    says which.
    """
    return _normalize(text)[0]


def unpronounceable_characters(text: str) -> str:
    """The distinct characters of ``text`` that :func:`normalize_text` drops although they are
    likely spoken: letters of other scripts (Chinese, Cyrillic, ``ß``, ``ø``), digits of other
    scripts and symbols such as emoji, in order of appearance ("" when there are none).

    Punctuation, quotes and spacing are not counted: they carry no sound of their own.
    """
    return "".join(dict.fromkeys(_normalize(text)[1]))


def _is_spoken(ch: str) -> bool:
    """True for a character that stands for sound: a letter, a digit or a pictograph (emoji)."""
    cat = unicodedata.category(ch)
    return cat[0] in "LN" or cat == "So"


def _normalize(text: str) -> tuple[str, list[str]]:
    """:func:`normalize_text` and the spoken characters it had to drop."""
    if not isinstance(text, str):
        raise TypeError(f"normalize_text expects a str, got {type(text).__name__}.")
    text = "".join(_CHAR_MAP.get(ch, ch) for ch in text)
    # Strip accents (café -> cafe) and fold compatibility forms (ﬁ -> fi, ² -> 2).
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))

    for abbrev, spoken in _LATIN.items():
        text = re.sub(re.escape(abbrev), f" {spoken} ", text, flags=re.IGNORECASE)
    text = _RE_ST.sub(_saint_or_street, text)
    text = _RE_NO.sub("number ", text)
    text = _RE_ABBREV.sub(lambda m: _ABBREVIATIONS[m.group(1).lower()], text)

    text = _RE_RANGE.sub(" to ", text)  # "pages 10-20" -> "pages 10 to 20"
    text = _RE_CURRENCY.sub(_currency, text)
    text = _RE_PERCENT.sub(lambda m: f" {_decimal_to_words(m.group(1))} percent ", text)
    text = _RE_ORDINAL.sub(lambda m: f" {ordinal_to_words(int(m.group(1)))} ", text)
    text = _RE_TIME.sub(_time, text)
    text = _RE_YEAR.sub(_year, text)
    text = _RE_NUMBER.sub(_number, text)
    for symbol, spoken in _SYMBOLS.items():
        text = text.replace(symbol, spoken)
    text = text.replace("%", " percent ")

    text = text.lower()
    # Hyphenated words are read as separate words; free-standing dashes are pauses (commas).
    text = _RE_WORD_HYPHEN.sub(" ", text)
    text = re.sub(r"\s-+\s|--+|-+", " , ", text)
    # Brackets become pauses; quotes carry no sound and are dropped.
    text = re.sub(r"[()\[\]{}]", " , ", text)
    text = text.replace('"', " ")
    text = text.replace("...", ".")
    # Anything that is not a letter, apostrophe, clause punctuation or space is removed; the
    # removed characters that stand for sound are reported (the audio has them, the phonemes
    # would not).
    dropped = [ch for ch in _RE_UNSPELLABLE.findall(text) if _is_spoken(ch)]
    text = _RE_UNSPELLABLE.sub(" ", text)
    # Apostrophes only survive inside words (don't, o'clock); quote marks around words go.
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)

    # Rebuild as "word word, word." with runs of punctuation collapsed to the first mark.
    tokens = re.findall(r"[a-z']+|[,.!?;:]+", text)
    out: list[str] = []
    for tok in tokens:
        if tok[0] in CLAUSE_PUNCTUATION:
            if out and out[-1][-1] not in CLAUSE_PUNCTUATION:
                out[-1] += tok[0]
            # Punctuation at the start or right after other punctuation is dropped.
        else:
            out.append(tok)
    return " ".join(out), dropped
