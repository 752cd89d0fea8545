"""Text normalisation for WER (both sides: reference and transcript)."""

from __future__ import annotations

from naturalspeech2_jax.evaluation.normalize_text import normalize_text, number_to_words


def test_number_to_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(21) == "twenty one"
    assert number_to_words(100) == "one hundred"
    assert (
        number_to_words(1234567)
        == "one million two hundred thirty four thousand five hundred sixty seven"
    )


def test_normalize_text_both_sides_agree():
    assert normalize_text("Author of the danger trail, Philip Steels, etc.") == (
        "author of the danger trail philip steels etc"
    )
    assert normalize_text("In 1984, 3 men paid 50%!") == (
        "in nineteen eighty four three men paid fifty percent"
    )
    assert normalize_text("the 21st time") == "the twenty first time"
    assert normalize_text("Don't 'quote' me") == "do not quote me"
    assert normalize_text("WE'RE SURE I'M RIGHT, WON'T WE") == "we are sure i am right will not we"
    assert normalize_text("It's Ann's") == "it's ann's"  # 's is ambiguous: kept
    assert normalize_text("twenty-one") == normalize_text("21")
