"""Fault injection for voice prompts (and voice-conversion sources): degenerate audio as a file or
an array (silent, NaN or infinite, clipped, far too loud, too short, a minute long, a text file
named .wav, 0 bytes, a folder) and unusable output paths. Each is refused with one sentence naming
it, or used as documented (cut, normalised, with a warning); the command-line checks come before
any checkpoint loads (here: none exists)."""

from __future__ import annotations

import logging
import types

import numpy as np
import pytest
import soundfile as sf

from naturalspeech2_jax import cli
from naturalspeech2_jax.inference import SynthesisError, Synthesizer
from naturalspeech2_jax.inference.synthesizer import read_prompt
from naturalspeech2_jax.inference.voice_conversion import MAX_SOURCE_SECONDS, read_source
from naturalspeech2_jax.text.g2p import SIL, WB
from tests.helpers import SR, speechlike


def synth() -> Synthesizer:
    """A Synthesizer with no model: everything before the model runs can be checked."""
    vocab = types.SimpleNamespace(tokens=["<pad>", SIL, WB, ".", ","])
    return Synthesizer(None, None, vocab, {"mean": np.zeros(4), "std": np.ones(4)}, {})


def write(path, wav, subtype="PCM_16", sr=SR) -> str:
    sf.write(str(path), wav, sr, subtype=subtype)
    return str(path)


@pytest.fixture
def voice():
    return speechlike(3.0)


# ------------------------------------------------------------------------------ refused
def _bad_prompts(tmp_path, voice) -> dict[str, tuple[object, str]]:
    """name -> (prompt, what the one sentence says)."""
    text = tmp_path / "notes.wav"
    text.write_text("this is a text file, not a recording\n" * 10)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    late = np.concatenate([np.zeros(4 * SR, np.float32), voice])  # speech after 4 s
    return {
        "silent file": (write(tmp_path / "silent.wav", np.zeros(3 * SR)), "is silent; pass a"),
        "silent array": (np.zeros(3 * SR, np.float32), "the prompt is silent"),
        "silent start": (write(tmp_path / "late.wav", late), "is silent in its first 3.0 s"),
        "nan file": (write(tmp_path / "nan.wav", np.where(np.arange(3 * SR) == 9, np.nan, voice),
                           subtype="FLOAT"), "contains NaN or infinite samples; re-export"),
        "inf file": (write(tmp_path / "inf.wav", np.where(np.arange(3 * SR) == 9, np.inf, voice),
                           subtype="FLOAT"), "contains NaN or infinite samples"),
        "nan array": (np.where(np.arange(3 * SR) == 9, np.nan, voice), "NaN or infinite samples"),
        "inf array": (np.full(3 * SR, -np.inf), "NaN or infinite samples"),
        "short file": (write(tmp_path / "short.wav", voice[: SR // 2]), "lasts 0.50 s; pass at "
                                                                        "least 1 s"),
        "short array": (voice[:100], "lasts 0.01 s"),
        "empty array": (np.zeros(0, np.float32), "is not a waveform"),
        "text array": (np.array(["a", "b"]), "is not a waveform"),
        "text named .wav": (str(text), "cannot be decoded"),
        "0 bytes": (str(empty), "is empty (0 bytes)"),
        "missing": (str(tmp_path / "nowhere.wav"), "does not exist; check the path"),
        "folder": (str(tmp_path), "is a folder; pass a recording"),
    }  # fmt: skip


def test_bad_prompts_are_one_sentence_naming_them(tmp_path, voice):
    s = synth()
    for name, (prompt, says) in _bad_prompts(tmp_path, voice).items():
        with pytest.raises(SynthesisError) as err:
            s.load_prompt(prompt)
        message = str(err.value)
        assert says in message, (name, message)
        assert "\n" not in message and message.endswith("."), (name, message)
        if isinstance(prompt, str):
            assert prompt in message, (name, message)


def test_bad_prompts_fail_synthesis_before_the_model_runs(tmp_path, voice):
    """The API refuses them with SynthesisError (the model is None: it is never reached)."""
    s = synth()
    for name, (prompt, says) in _bad_prompts(tmp_path, voice).items():
        with pytest.raises(SynthesisError, match=None) as err:
            s.synthesize("Hello there.", prompt)
        assert says in str(err.value), name
    with pytest.raises(SynthesisError, match="sample rate must be a positive integer"):
        s.load_prompt(voice, sample_rate=0)


def test_bad_prompts_fail_the_cli_in_one_line_before_the_checkpoint(tmp_path, voice, capsys):
    from launch import synthesize

    for name, (prompt, says) in _bad_prompts(tmp_path, voice).items():
        # (speech after 4 s is found by the check, which reads 30 s: only the model's 3 s window
        # is silent, which the API refuses above)
        if not isinstance(prompt, str) or name == "silent start":
            continue
        out = tmp_path / "out.wav"
        argv = ["--checkpoint", str(tmp_path / "no_run"), "--text", "Hello.", "--prompt", prompt,
                "--out", str(out)]  # fmt: skip
        assert synthesize.main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, (name, err)
        assert says in err and "no_run" not in err, (name, err)  # before the checkpoint
        assert not out.exists()


# ------------------------------------------------------------------------------ used
def test_a_minute_long_prompt_is_cut_to_the_window_and_read_no_further(tmp_path, voice, caplog,
                                                                       monkeypatch):  # fmt: skip
    """60 s of prompt: a warning, its first max_prompt_seconds used; the file is read only that
    far (a long recording never fills memory)."""
    from naturalspeech2_jax.inference import synthesizer

    path = write(tmp_path / "long.wav", np.tile(voice, 20))  # 60 s
    reads = []
    real = synthesizer.load_audio

    def spy(p, *args, **kwargs):
        reads.append(kwargs.get("end"))
        return real(p, *args, **kwargs)

    monkeypatch.setattr(synthesizer, "load_audio", spy)
    s = synth()
    with caplog.at_level(logging.WARNING, logger="naturalspeech2_jax.inference.synthesizer"):
        wav = s.load_prompt(path)
    assert len(wav) == int(s.max_prompt_seconds * SR) == 3 * SR
    assert reads == [s.max_prompt_seconds]
    assert any("lasts 60.0 s; using its first 3.0 s" in r.getMessage() for r in caplog.records)


def test_clipped_and_far_too_loud_prompts_are_normalised(tmp_path, voice, caplog):
    s = synth()
    reference = s.load_prompt(voice)
    clipped = write(tmp_path / "clipped.wav", np.clip(voice * 40, -1, 1))
    with caplog.at_level(logging.WARNING, logger="naturalspeech2_jax.inference.synthesizer"):
        wav = s.load_prompt(clipped)
    assert any("is clipped" in r.getMessage() for r in caplog.records)
    assert np.all(np.isfinite(wav)) and np.abs(wav).max() <= 10 ** (-1 / 20) + 1e-6
    for loud in (write(tmp_path / "loud.wav", voice * 1e6, subtype="FLOAT"), voice * 1e30,
                 (voice * 32767).astype(np.int16)):  # fmt: skip
        wav = s.load_prompt(loud)
        assert np.all(np.isfinite(wav))
        np.testing.assert_allclose(wav, reference, atol=2e-4)  # the level is normalised away


def test_stereo_and_other_rate_arrays_are_mixed_and_resampled(voice):
    s = synth()
    stereo = np.stack([voice, voice], axis=1)  # [samples, channels]
    np.testing.assert_allclose(s.load_prompt(stereo), s.load_prompt(voice), atol=1e-6)
    at_8k = voice[::2]
    assert len(s.load_prompt(at_8k, sample_rate=8000)) == len(voice)


def test_read_prompt_reports_the_whole_length(tmp_path, voice):
    wav, seconds, name = read_prompt(write(tmp_path / "p.wav", voice), 2.0)
    assert len(wav) == 2 * SR and seconds == pytest.approx(3.0) and name.endswith("p.wav")


# ------------------------------------------------------------------------------ sources
def test_voice_conversion_sources_are_checked(tmp_path, voice):
    assert len(read_source(write(tmp_path / "ok.wav", voice))) == len(voice)
    cases = {
        write(tmp_path / "silent.wav", np.zeros(2 * SR)): "is silent; pass the speech",
        write(tmp_path / "short.wav", voice[: SR // 5]): "lasts 0.20 s; pass at least 0.5 s",
        write(tmp_path / "long.wav", np.tile(voice, 20)): f"lasts 60.0 s; voice conversion takes "
                                                          f"at most {MAX_SOURCE_SECONDS:.1f} s",
        write(tmp_path / "nan.wav", np.full(SR, np.nan), subtype="FLOAT"): "NaN or infinite",
        str(tmp_path / "missing.wav"): "does not exist",
    }  # fmt: skip
    for source, says in cases.items():
        with pytest.raises(SynthesisError, match=None) as err:
            read_source(source)
        assert says in str(err.value) and source in str(err.value), str(err.value)
    with pytest.raises(SynthesisError, match="the source audio holds NaN"):
        read_source(np.full(SR, np.nan, np.float32))
    assert np.all(np.isfinite(read_source(voice * 1e30)))


# ------------------------------------------------------------------------------ outputs
def test_unusable_out_paths_are_refused_before_anything_loads(tmp_path):
    cli.check_output(str(tmp_path / "new" / "o.wav"))  # a new folder is fine
    cases = {
        str(tmp_path): "is a folder; pass a file path",
        str(tmp_path / "o.txt"): "does not end in an audio format",
        None: "--out is required",
    }
    for path, says in cases.items():
        with pytest.raises(ValueError, match=None) as err:
            cli.check_output(path)
        assert says in str(err.value)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="its folder cannot be created"):
        cli.check_output(str(blocker / "o.wav"))
