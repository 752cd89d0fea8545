"""Checks of the synthesis options and inputs that need no checkpoint: number flags refused in
one sentence before anything loads, long sentences cut at word boundaries, the manifest reader."""

from __future__ import annotations

import types

import numpy as np
import pytest

from naturalspeech2_jax import cli
from naturalspeech2_jax.inference import SynthesisError, Synthesizer
from naturalspeech2_jax.inference.synthesizer import (
    MAX_SENTENCE_TOKENS,
    TOKEN_BUCKETS,
    bucket,
    check_options,
    split_at_word_boundaries,
)
from naturalspeech2_jax.text.g2p import SIL, WB, phonemize

LONG = " ".join(["the quick brown fox jumps over the lazy dog and runs"] * 7)  # 77 words


@pytest.mark.parametrize(
    "options, match",
    [
        ({"steps": 0}, "steps must be an integer >= 1, got 0"),
        ({"steps": -1}, "steps must be an integer >= 1, got -1"),
        ({"steps": 2.5}, "steps must be an integer"),
        ({"speed": 0.0}, "speed must be > 0"),
        ({"speed": float("nan")}, "speed must be > 0"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"guidance_scale": -1.0}, "guidance_scale must be >= 0"),
        ({"pitch_shift": float("inf")}, "pitch_shift must be a finite"),
        ({"seed": -1}, "seed must be an integer"),
    ],
)
def test_check_options_refuses_unusable_numbers(options, match):
    with pytest.raises(SynthesisError, match=match):
        check_options(**options)


def test_check_options_accepts_the_defaults_and_integral_floats():
    check_options()
    check_options(steps=25.0, seed=np.int64(3), speed=2, temperature=0.5, guidance_scale=0)


def test_synthesize_refuses_bad_steps_before_touching_the_model():
    """The Python API is protected too: SynthesisError, not a JAX traceback (model is None)."""
    synth = Synthesizer(None, None, None, {"mean": np.zeros(4), "std": np.ones(4)}, {})
    prompt = np.zeros(16000, np.float32)
    for steps in (0, -1):
        with pytest.raises(SynthesisError, match="steps must be an integer >= 1"):
            synth.synthesize("hello", prompt, steps=steps)
    with pytest.raises(SynthesisError, match="temperature must be > 0"):
        synth.synthesize("hello", prompt, temperature=0.0)
    with pytest.raises(SynthesisError, match="steps must be an integer >= 1"):
        synth.synthesize_batch(["hello"], prompt, steps=0)
    with pytest.raises(SynthesisError, match="speed must be > 0"):
        synth._generate([["<sil>"]], None, speed=-1.0)


def test_long_unpunctuated_sentence_is_cut_at_word_boundaries():
    tokens = phonemize(LONG)
    assert len(tokens) > TOKEN_BUCKETS[-1]  # one piece would exceed the largest bucket
    chunks = split_at_word_boundaries(tokens, MAX_SENTENCE_TOKENS)
    assert len(chunks) >= 2
    for c in chunks:
        assert len(c) <= MAX_SENTENCE_TOKENS
        assert c[0] == SIL and c[-1] == SIL and SIL not in c[1:-1]
        assert c[1] != WB and c[-2] != WB  # cut at a word boundary, which is dropped
    # Every word kept, in order: the chunks joined with <wb> give back the sentence.
    joined = [SIL] + [t for i, c in enumerate(chunks) for t in ([WB] if i else []) + c[1:-1]]
    assert joined + [SIL] == tokens
    assert split_at_word_boundaries(tokens[:20], MAX_SENTENCE_TOKENS) == [tokens[:20]]


def test_a_word_longer_than_a_chunk_is_cut_where_the_chunk_is_full():
    tokens = [SIL, *"abcdefgh", WB, "x", SIL]
    chunks = split_at_word_boundaries(tokens, 5)
    assert chunks == [[SIL, "a", "b", "c", SIL], [SIL, "d", "e", "f", SIL],
                      [SIL, "g", "h", SIL], [SIL, "x", SIL]]  # fmt: skip
    assert all(len(c) <= 5 for c in chunks)


def test_sentence_tokens_of_a_77_word_sentence_fit_the_buckets():
    vocab = types.SimpleNamespace(tokens=["<pad>", SIL, WB, ".", ","])
    synth = Synthesizer(None, None, vocab, {"mean": np.zeros(4), "std": np.ones(4)}, {})
    chunks = synth.sentence_tokens(LONG + ". Short one.")
    assert len(chunks) >= 3 and chunks[-1] == phonemize("Short one.")
    for c in chunks:
        assert len(c) <= MAX_SENTENCE_TOKENS
        bucket(len(c), TOKEN_BUCKETS, "phonemes")  # no "split the input" error


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--steps", "0"], "error: --steps must be an integer >= 1, got 0; try --steps 12.\n"),
        (["--steps", "-1"], "error: --steps must be an integer >= 1, got -1; try --steps 12.\n"),
        (["--speed", "0"], "error: --speed must be > 0, got 0.0; try --speed 1 (normal) or 1.5 "
                           "(faster).\n"),
        (["--temperature", "-0.5"], "error: --temperature must be > 0, got -0.5"),
        (["--guidance_scale", "-1"], "error: --guidance_scale must be >= 0, got -1.0"),
        (["--seed", "-3"], "error: --seed must be an integer in [0, 2**32), got -3"),
        (["--speed", "nan"], "error: --speed must be > 0, got nan"),
    ],
)  # fmt: skip
def test_synthesize_cli_refuses_numbers_in_one_sentence(flags, message, tmp_path, capsys):
    """Exit 2 and one line, before the (here missing) checkpoint is even looked at."""
    from launch import synthesize

    argv = ["--checkpoint", str(tmp_path / "no_run"), "--text", "Hello.", "--prompt", "p.wav",
            "--out", str(tmp_path / "o.wav"), *flags]  # fmt: skip
    assert synthesize.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "o.wav").exists()


def test_sing_and_convert_refuse_steps_zero(tmp_path, capsys):
    from launch import convert, sing

    common = ["--checkpoint", str(tmp_path / "no_run"), "--prompt", "p.wav", "--out", "o.wav"]
    assert sing.main([*common, "--score", "s.json", "--steps", "0"]) == 2
    assert capsys.readouterr().err == (
        "error: --steps must be an integer >= 1, got 0; try --steps 12.\n"
    )
    assert sing.main([*common, "--score", "s.json", "--vibrato_cents", "-5"]) == 2
    assert "--vibrato_cents must be >= 0 cents" in capsys.readouterr().err
    assert convert.main([*common, "--source", "s.wav", "--text", "hi", "--steps", "-1"]) == 2
    assert "--steps must be an integer >= 1, got -1" in capsys.readouterr().err


def test_seed_must_be_an_integer(capsys):
    from launch import synthesize

    with pytest.raises(SystemExit) as e:
        synthesize.main(["--checkpoint", "x", "--text", "hi", "--prompt", "p", "--seed", "1.5"])
    assert e.value.code == 2 and "--seed: invalid int value: '1.5'" in capsys.readouterr().err


def test_read_manifest_checks_columns_and_skips_the_header(tmp_path):
    from launch import synthesize

    path = tmp_path / "rows.tsv"
    path.write_text(
        "text\tprompt\toutput\n"
        "Hello there.\tp.wav\ta.wav\n"
        "\n"
        "only two\tcolumns\n"
        "Again.\t\tb.wav\n"
        "Twice.\tp.wav\ta.wav\n"
        "\tp.wav\tc.wav\n",
        encoding="utf-8",
    )
    rows, errors = synthesize.read_manifest(str(path))
    assert rows == [(2, ("Hello there.", "p.wav", "a.wav")), (5, ("Again.", "", "b.wav"))]
    assert sorted(errors) == [4, 6, 7]
    assert "2 tab-separated columns" in errors[4]
    assert "also line 2's" in errors[6] and "text column is empty" in errors[7]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        synthesize.read_manifest(str(tmp_path / "none.tsv"))
    (tmp_path / "empty.tsv").write_text("text\tprompt\toutput\n\n")
    with pytest.raises(ValueError, match="holds no rows"):
        synthesize.read_manifest(str(tmp_path / "empty.tsv"))


def test_rtf_line():
    assert cli.rtf_line(3.0, 6.0) == "RTF 0.500 (3.00 s of compute for 6.00 s of audio)"
