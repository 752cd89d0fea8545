"""Tests for the embedded espeak-ng corpus generator and its ground-truth phoneme timings."""

import filecmp
import json
import os
import pathlib
import types

import numpy as np
import pytest
import soundfile as sf

from naturalspeech2_jax.data.espeak import EspeakSynthesizer, get_synthesizer, synthesize_fresh
from naturalspeech2_jax.data.synthetic import (
    SAMPLE_RATE,
    build_sentences,
    generate_corpus,
    main,
    make_speakers,
    timings_from_events,
)
from naturalspeech2_jax.text import PUNCTUATION_TOKENS, default_vocab, is_phoneme, phonemize

TINY = dict(num_speakers=2, utts_per_speaker=2, num_heldout=1, seed=0, progress=False)


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("synth") / "corpus"
    generate_corpus(out, num_workers=1, **TINY)
    return out


def _utterances(root: pathlib.Path):
    for split in ("train", "heldout"):
        for line in (root / split / "text").read_text(encoding="utf-8").splitlines():
            utt, transcript = line.split(" ", 1)
            yield split, utt, transcript


def test_layout_and_kaldi_files(tiny_corpus: pathlib.Path) -> None:
    manifest = json.loads((tiny_corpus / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["splits"]["train"]["speakers"] == ["spk01"]
    assert manifest["splits"]["heldout"]["speakers"] == ["spk02"]
    for split, speaker in (("train", "spk01"), ("heldout", "spk02")):
        d = tiny_corpus / split
        utt2spk = dict(line.split() for line in (d / "utt2spk").read_text().splitlines())
        assert set(utt2spk.values()) == {speaker} and len(utt2spk) == 2
        assert (d / "spk2gender").read_text().split()[0] == speaker
        assert (d / "spk2utt").read_text().split() == [speaker, *sorted(utt2spk)]
        for utt in utt2spk:
            assert (d / speaker / f"{utt}.flac").is_file()
            assert (d / "alignments" / f"{utt}.json").is_file()
    assert default_vocab().version == manifest["config"]["vocab_version"]


def test_audio_is_16k_mono_and_timings_cover_it(tiny_corpus: pathlib.Path) -> None:
    for split, utt, transcript in _utterances(tiny_corpus):
        speaker = utt.split("-")[0]
        audio, sr = sf.read(tiny_corpus / split / speaker / f"{utt}.flac", dtype="float32")
        info = sf.info(tiny_corpus / split / speaker / f"{utt}.flac")
        assert sr == SAMPLE_RATE == 16_000 and info.channels == 1 and audio.ndim == 1
        assert 0.1 < np.abs(audio).max() <= 1.0 and len(audio) > sr  # real speech, > 1 s
        align = json.loads((tiny_corpus / split / "alignments" / f"{utt}.json").read_text("utf-8"))
        assert align["transcript"] == transcript and align["num_samples"] == len(audio)
        tokens = align["tokens"]
        assert tokens[0]["start_s"] == 0.0
        assert tokens[-1]["end_s"] == pytest.approx(len(audio) / sr, abs=1e-6)
        for a, b in zip(tokens, tokens[1:], strict=False):
            assert a["end_s"] == b["start_s"]  # contiguous
        for t in tokens:
            assert t["end_s"] >= t["start_s"]
            if is_phoneme(t["token"]) or t["token"] == "<sil>":
                assert t["end_s"] > t["start_s"], t  # every phoneme and both silences have length
        # The ground truth is in the G2P's token set: exactly what phonemize(transcript) returns.
        assert [t["token"] for t in tokens] == phonemize(transcript)


def test_silence_edges_are_quiet(tiny_corpus: pathlib.Path) -> None:
    split, utt, _ = next(_utterances(tiny_corpus))
    audio, sr = sf.read(tiny_corpus / split / utt.split("-")[0] / f"{utt}.flac", dtype="float32")
    tokens = json.loads((tiny_corpus / split / "alignments" / f"{utt}.json").read_text("utf-8"))[
        "tokens"
    ]
    lead = audio[: int(tokens[0]["end_s"] * sr)]
    speech = audio[int(tokens[1]["start_s"] * sr) : int(tokens[-2]["end_s"] * sr)]
    assert np.sqrt(np.mean(lead**2)) < 0.01 * np.sqrt(np.mean(speech**2))


def test_deterministic_parallel_and_idempotent(tiny_corpus: pathlib.Path, tmp_path) -> None:
    other = tmp_path / "again"
    generate_corpus(other, num_workers=2, **TINY)  # the process-pool path, same seed
    for split, utt, _ in _utterances(tiny_corpus):
        rel = pathlib.Path(split) / utt.split("-")[0] / f"{utt}.flac"
        assert filecmp.cmp(tiny_corpus / rel, other / rel, shallow=False)
        rel = pathlib.Path(split) / "alignments" / f"{utt}.json"
        assert filecmp.cmp(tiny_corpus / rel, other / rel, shallow=False)
    # Complete corpus: a second call returns the manifest without touching the files.
    flac = next((other / "train" / "spk01").glob("*.flac"))
    before = os.stat(flac).st_mtime_ns
    manifest = generate_corpus(other, num_workers=1, **TINY)
    assert manifest["splits"]["train"]["utterances"] == 2
    assert os.stat(flac).st_mtime_ns == before
    with pytest.raises(ValueError, match="other settings"):
        generate_corpus(other, num_workers=1, **{**TINY, "seed": 1})


def test_different_seed_differs_and_partial_output_is_regenerated(tmp_path) -> None:
    out = tmp_path / "c"
    (out / "train" / "spk01").mkdir(parents=True)
    (out / "train" / "spk01" / "stale.flac").write_bytes(b"partial")  # an interrupted run
    generate_corpus(out, num_workers=1, **{**TINY, "seed": 5, "num_heldout": 0,
                                           "num_speakers": 1})  # fmt: skip
    assert not (out / "train" / "spk01" / "stale.flac").exists()
    assert (out / "manifest.json").is_file() and not (out / "heldout").exists()
    assert make_speakers(4, 1, seed=5) != make_speakers(4, 1, seed=6)


def test_speakers_and_sentences() -> None:
    speakers = make_speakers()
    assert len(speakers) == 24 and len({s.name for s in speakers}) == 24
    held = [s for s in speakers if s.split == "heldout"]
    assert [s.name for s in held] == ["spk21", "spk22", "spk23", "spk24"]
    assert not {s.voice for s in held} & {s.voice for s in speakers if s.split == "train"}
    assert {s.gender for s in held} == {"m", "f"}
    assert len({(s.voice, s.pitch, s.pitch_range, s.rate) for s in speakers}) == 24
    with pytest.raises(ValueError, match="num_heldout"):
        make_speakers(2, 2)
    sentences = build_sentences(300, seed=0)
    assert len(set(sentences)) == 300 and sentences == build_sentences(300, seed=0)
    assert any(any(c.isdigit() for c in s) for s in sentences)  # exercises normalisation
    with pytest.raises(ValueError, match="utts_per_speaker"):
        generate_corpus("/tmp/unused", utts_per_speaker=0)


def _events(*pairs):
    return [types.SimpleNamespace(name=n, sample=s) for n, s in pairs]


def test_timings_attribute_pauses_to_punctuation_and_word_boundaries() -> None:
    tokens = ["<sil>", "a", "<wb>", "b", ",", "c", "d", ".", "<sil>"]
    events = _events(("a", 10), ("", 20), ("b", 30), ("", 40), ("c", 60), ("d", 70), ("", 80))
    out = timings_from_events(tokens, events, num_samples=100)
    assert out == [
        ("<sil>", 0, 10),
        ("a", 10, 20),
        ("<wb>", 20, 30),  # pause between words
        ("b", 30, 40),
        (",", 40, 60),  # clause pause
        ("c", 60, 70),
        ("d", 70, 80),
        (".", 80, 100),  # final pause
        ("<sil>", 100, 100),  # lead-out silence is added by the corpus writer
    ]
    # A zero-length phoneme (espeak's post-vocalic l) takes the end of its predecessor.
    out = timings_from_events(["<sil>", "a", "l", "<sil>"], _events(("a", 0), ("l", 90)), 90)
    assert out == [("<sil>", 0, 0), ("a", 0, 60), ("l", 60, 90), ("<sil>", 90, 90)]
    with pytest.raises(ValueError, match="differ"):
        timings_from_events(["<sil>", "a", "<sil>"], _events(("b", 0)), 10)


def test_espeak_binding_events_match_g2p() -> None:
    synth = get_synthesizer()
    result = synth.synthesize("hello, world!", voice="en-us+f2")
    assert result.sample_rate == 22050 and result.audio.dtype == np.float32
    expected = [t for t in phonemize("hello, world!") if t not in PUNCTUATION_TOKENS]
    assert result.phonemes == [t for t in expected if is_phoneme(t)]
    with pytest.raises(ValueError, match="no voice"):
        synth.synthesize("hello", voice="xx-nonexistent")
    with pytest.raises(ValueError, match="rate"):
        synth.synthesize("hello", rate=10)
    # A fresh library per call makes synthesis reproducible regardless of earlier calls.
    first = synthesize_fresh("a short test.", voice="en-us+m3", seed=7)
    synth.synthesize("something else entirely", voice="en-us+f5")
    again = synthesize_fresh("a short test.", voice="en-us+m3", seed=7)
    assert np.array_equal(first.audio, again.audio) and first.events == again.events
    closed = EspeakSynthesizer()
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        closed.synthesize("hello")


def test_command_line(tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--num-speakers", "1", "--utts-per-speaker", "1",
                 "--num-heldout", "0", "--num-workers", "1"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["splits"]["train"]["utterances"] == 1
    assert main(["--out", str(out), "--num-speakers", "1", "--num-heldout", "3"]) == 2
    assert "num_heldout" in capsys.readouterr().err
