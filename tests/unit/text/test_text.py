"""Tests for the text front end: normalisation, G2P token conventions and the phoneme vocabulary."""

import json

import pytest

from naturalspeech2_jax.text import (
    SIL,
    WB,
    PhonemeVocab,
    UnknownSymbolError,
    default_vocab,
    is_phoneme,
    normalize_text,
    phonemize,
    phonemize_batch,
)
from naturalspeech2_jax.text.normalize import number_to_words, ordinal_to_words

# -- normalisation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("I have 3 cats.", "i have three cats."),
        ("1,234,567", "one million two hundred thirty four thousand five hundred sixty seven"),
        ("He came 21st, she 2nd and I 3rd.", "he came twenty first, she second and i third."),
        ("the 100th day", "the one hundredth day"),
        ("pi is 3.14", "pi is three point one four"),
        (
            "In 1984 and 2005 and 2024.",
            "in nineteen eighty four and two thousand five and twenty twenty four.",
        ),  # fmt: skip
        ("the 1990s", "the nineteen nineties"),
        ("It costs $3.50.", "it costs three dollars and fifty cents."),
        ("$1 and $0.01", "one dollar and one cent"),
        ("£12", "twelve pounds"),
        ("$2.5 million", "two point five million dollars"),
        ("50% off", "fifty percent off"),
        ("Mr. Smith met Dr. Jones.", "mister smith met doctor jones."),
        ("St. Paul lives on Main St.", "saint paul lives on main street."),
        ("Tom & Jerry + friends @ home", "tom and jerry plus friends at home"),
        ("at 3:30 or 10:00", "at three thirty or ten o'clock"),
        ("-7 degrees", "minus seven degrees"),
        ("pages 10-20", "pages ten to twenty"),
        ("  \u201cHello,\u201d   she said \u2014 twice...  ", "hello, she said, twice."),
        ("well-known (really) 'quoted' don't", "well known, really, quoted don't"),
        ("HELLO WORLD, MR. SMITH!", "hello world, mister smith!"),
        ("Café naïve", "cafe naive"),
        ("?!...", ""),
        ("", ""),
    ],
)
def test_normalize_cases(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["Mr. Smith paid $3.50 on the 21st in 1984!", "HELLO, WORLD; 50% OFF: (NOW)", "a -- b ... c"],
)
def test_normalize_is_idempotent(raw: str) -> None:
    once = normalize_text(raw)
    assert normalize_text(once) == once


def test_number_words() -> None:
    assert number_to_words(0) == "zero"
    assert number_to_words(115) == "one hundred fifteen"
    assert number_to_words(2_000_001) == "two million one"
    assert ordinal_to_words(12) == "twelfth"
    assert ordinal_to_words(40) == "fortieth"
    with pytest.raises(TypeError):
        normalize_text(None)  # type: ignore[arg-type]


# -- G2P -----------------------------------------------------------------------------------------


def test_phonemize_token_conventions() -> None:
    tokens = phonemize("Hello, world!")
    assert tokens == ["<sil>", "h", "ə", "l", "ˈoʊ", ",", "w", "ˈɜː", "l", "d", "!", "<sil>"]


def test_phonemize_has_stress_word_boundaries_punctuation_and_silence() -> None:
    tokens = phonemize("The quick brown fox; jumps over the lazy dog? Yes.")
    assert tokens[0] == SIL and tokens[-1] == SIL
    assert tokens.count(SIL) == 2  # silence only at the edges
    assert WB in tokens
    assert {";", "?", "."} <= set(tokens)
    assert any(t.startswith("ˈ") for t in tokens)  # primary stress attached to vowels
    assert any(t.startswith("ˌ") for t in tokens)  # secondary stress
    assert all(t not in ("ˈ", "ˌ") for t in tokens)  # never a bare stress mark
    # No boundary token next to punctuation: the mark is the boundary.
    for a, b in zip(tokens, tokens[1:], strict=False):
        assert not (a == WB and not is_phoneme(b)) and not (b == WB and not is_phoneme(a))


def test_phonemize_normalises_first() -> None:
    assert phonemize("MR. SMITH PAID $3.50.") == phonemize("mister smith paid three dollars and "
                                                          "fifty cents.")  # fmt: skip


@pytest.mark.parametrize("text", ["", "   ", "?!...", "-- ; :", "\u201c\u201d"])
def test_phonemize_rejects_unpronounceable_text(text: str) -> None:
    with pytest.raises(ValueError, match="nothing pronounceable"):
        phonemize(text)


def test_phonemize_batch_matches_single_and_reports_failures() -> None:
    texts = ["One small step.", "...", "Two big steps!"]
    out = phonemize_batch(texts, on_error="none")
    assert out[1] is None
    assert out[0] == phonemize(texts[0]) and out[2] == phonemize(texts[2])
    with pytest.raises(ValueError, match="item 1"):
        phonemize_batch(texts)
    with pytest.raises(TypeError):
        phonemize_batch("not a list")  # type: ignore[arg-type]


# -- vocabulary ----------------------------------------------------------------------------------


def test_vocab_special_ids_and_round_trip(tmp_path) -> None:
    vocab = default_vocab()
    assert (vocab.pad_id, vocab.unk_id, vocab.sil_id, vocab.wb_id) == (0, 1, 2, 3)
    assert [vocab.token_to_id(p) for p in ",.!?;:"] == [4, 5, 6, 7, 8, 9]
    tokens = phonemize("Dr. Smith paid $3.50, didn't he?")
    ids = vocab.encode(tokens)
    assert ids[0] == vocab.sil_id and vocab.decode(ids) == tokens
    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = PhonemeVocab.load(path)
    assert loaded == vocab and loaded.version == vocab.version and loaded.tokens == vocab.tokens
    assert loaded.encode(tokens) == ids


def test_vocab_version_is_a_content_hash() -> None:
    a = PhonemeVocab(["a", "b"])
    assert PhonemeVocab(["b", "a", "a"]).version == a.version  # same content, same version
    assert PhonemeVocab(["a", "b", "c"]).version != a.version
    assert PhonemeVocab(["a", "b"], metadata={"language": "en-gb"}).version != a.version
    assert a.extended(["c"]).version == PhonemeVocab(["a", "b", "c"]).version


def test_vocab_mismatch_message_names_both_versions() -> None:
    a, b = PhonemeVocab(["a", "b"]), PhonemeVocab(["a", "c"])
    a.check_compatible(a.version, where="checkpoint")
    with pytest.raises(ValueError) as err:
        a.check_compatible(b, where="checkpoint /tmp/ckpt")
    message = str(err.value)
    assert a.version in message and b.version in message and "/tmp/ckpt" in message
    assert "re-run data preparation" in message


def test_vocab_unknown_symbols() -> None:
    vocab = PhonemeVocab(["a", "b"])
    with pytest.raises(UnknownSymbolError) as err:
        vocab.encode(["<sil>", "a", "x", "y", "x", "<sil>"])
    assert err.value.symbols == ["x", "y"] and "unknown symbols" in str(err.value)
    assert isinstance(err.value, ValueError)  # pipelines catching ValueError still skip it
    assert vocab.encode(["a", "x"], on_unknown="unk") == [vocab.token_to_id("a"), vocab.unk_id]
    with pytest.raises(ValueError, match="outside"):
        vocab.id_to_token(99)


def test_vocab_file_errors(tmp_path) -> None:
    path = tmp_path / "vocab.json"
    default_vocab().save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["tokens"].append("zz")
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="edited by hand"):
        PhonemeVocab.load(path)
    with pytest.raises(FileNotFoundError):
        PhonemeVocab.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="not a phoneme vocabulary"):
        PhonemeVocab.load(tmp_path / "bad.json")


def test_default_vocab_covers_varied_english() -> None:
    text = [
        "The jaguar's rhythm was awkward; my thousand-year-old judge sings beautifully!",
        "Would you measure the fuel, Zoe? Whoever buys the yacht owes her a pleasure.",
        "Button, bottle, water, car, nurse, fire, hour, choir, tour, poor, pure, sure.",
        "Quixotic sphinxes of black quartz judge my vow; the 1st of June, 2024.",
    ]
    vocab = default_vocab()
    for tokens in phonemize_batch(text):
        assert vocab.unknown(tokens) == []
