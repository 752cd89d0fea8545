"""Tests for naturalspeech2_jax.data.readers: every layout on a tiny fixture written here, layout
detection, problem reporting, TextGrid attachment, and the real ../shared/data corpora."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from naturalspeech2_jax.audio import load_audio
from naturalspeech2_jax.data.readers import (
    LAYOUTS,
    CorpusError,
    detect_layout,
    read_corpus,
)


def audio(path: Path, seconds: float = 0.05, sr: int = 16000) -> Path:
    """Write a tiny tone (wav/flac by extension) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, 0.1 * np.sin(2 * np.pi * 300 * t), sr)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def reasons(listing) -> dict[str, str]:
    return {Path(item).name if "/" in item else item: why for item, why in listing.problems}


# ------------------------------------------------------------------------------------------
# Fixtures, one per layout
# ------------------------------------------------------------------------------------------


def make_kaldi_speaker_dirs(root: Path) -> Path:
    write(root / "text", "u1 HELLO   WORLD\nu2 SECOND ONE\nu3\nu4 NO AUDIO HERE\nu5 NOBODY\n")
    write(root / "utt2spk", "u1 s1\nu2 s2\nu3 s1\nu4 s2\n")
    write(root / "spk2gender", "s1 f\ns2 m\n")
    audio(root / "s1" / "u1.flac")
    audio(root / "s2" / "u2.flac")
    audio(root / "s1" / "u3.flac")
    audio(root / "s2" / "u5.flac")
    audio(root / "s2" / "orphan.flac")
    write(root / "s1" / "u1.TextGrid", "placeholder")
    return root


def make_kaldi_scp(root: Path) -> Path:
    rec = audio(root / "audio" / "rec1.wav", seconds=1.0)
    audio(root / "audio" / "rec2.wav")
    write(root / "wav.scp", "rec1 audio/rec1.wav\nrec2 audio/rec2.wav\nrec3 sox x.wav -t wav - |\n")
    write(root / "segments", "a rec1 0.0 0.4\nb rec1 0.4 -1\nc rec3 0 1\nd rec9 0 1\ne rec2 x y\n")
    write(root / "text", "a FIRST\nb SECOND\nc PIPED\nd NOREC\ne BADSEG\n")
    write(root / "utt2spk", "a spk\nb spk\nc spk\nd spk\ne spk\n")
    assert rec.exists()
    return root


def make_libritts(root: Path) -> Path:
    ch = root / "train-clean-100" / "84" / "121123"
    audio(ch / "84_121123_000007_000001.wav")
    write(ch / "84_121123_000007_000001.normalized.txt", "Hello there.")
    write(ch / "84_121123_000007_000001.original.txt", "Hello there!")
    audio(ch / "84_121123_000008_000000.wav")  # transcript missing
    write(ch / "84_121123_000009_000000.normalized.txt", "No audio.")
    return root


def make_librispeech(root: Path) -> Path:
    ch = root / "dev-clean" / "1272" / "128104"
    write(ch / "1272-128104.trans.txt", "1272-128104-0000 MISTER QUILTER\n1272-128104-0001 GONE\n")
    audio(ch / "1272-128104-0000.flac")
    return root


def make_vctk(root: Path) -> Path:
    wd = root / "wav48_silence_trimmed"
    for mic in ("mic1", "mic2"):
        audio(wd / "p225" / f"p225_001_{mic}.flac")
        audio(wd / "p225" / f"p225_002_{mic}.flac")
        audio(wd / "p315" / f"p315_001_{mic}.flac")  # p315 has no transcripts in VCTK
    write(root / "txt" / "p225" / "p225_001.txt", "Please call Stella.\n")
    write(root / "txt" / "p225" / "p225_002.txt", "Ask her to bring these things.\n")
    return root


def make_mls(root: Path) -> Path:
    write(root / "transcripts.txt", "10214_10108_000000\tla voz\n10214_10108_000001\tsin audio\n")
    audio(root / "audio" / "10214" / "10108" / "10214_10108_000000.flac")
    return root


def make_ljspeech(root: Path) -> Path:
    write(
        root / "metadata.csv",
        'LJ001-0001|Printing, in 1912 "only"|Printing, in nineteen twelve "only"\n'
        "LJ001-0002|Second one|\n"
        "LJ001-0003|Missing audio|Missing audio\n"
        "broken line without separator\n",
    )
    audio(root / "wavs" / "LJ001-0001.wav")
    audio(root / "wavs" / "LJ001-0002.wav")
    return root


def make_folder(root: Path) -> Path:
    audio(root / "alice" / "a1.wav")
    write(root / "alice" / "a1.txt", "Alice one.")
    audio(root / "bob" / "b1.flac")
    write(root / "bob" / "b1.lab", "bob one")  # MFA-style .lab
    audio(root / "bob" / "b2.flac")  # no transcript
    write(root / "bob" / "stray.txt", "no audio")
    write(root / "bob" / "b3.txt", "   ")
    audio(root / "bob" / "b3.wav")
    return root


def make_manifest(root: Path) -> Path:
    """manifest.tsv: relative and absolute audio, a segment, and lines that are not utterances."""
    a1 = audio(root / "wav" / "a1.wav")
    audio(root / "wav" / "a2.flac", seconds=1.0)
    rows = [
        "id\tspeaker\taudio\ttext\tstart\tend",
        "a1\talice\twav/a1.wav\t  Hello   there. \t\t",
        "a2\talice\t" + str((root / "wav" / "a2.flac").resolve()) + "\tA segment.\t0.2\t0.7",
        "dup\tbob\twav/a1.wav\tOne.",
        "dup\tbob\twav/a1.wav\tTwo.",
        "short\tbob\twav/a1.wav",
        "gone\tbob\twav/missing.wav\tNo file.",
        "empty\tbob\t" + str(a1) + "\t   ",
        "",
    ]
    write(root / "manifest.tsv", "\n".join(rows))
    return root


MAKERS = {
    "manifest": make_manifest,
    "kaldi": make_kaldi_speaker_dirs,
    "libritts": make_libritts,
    "librispeech": make_librispeech,
    "vctk": make_vctk,
    "mls": make_mls,
    "ljspeech": make_ljspeech,
    "folder": make_folder,
}


# ------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(MAKERS))
def test_detect_layout(tmp_path, layout):
    assert set(MAKERS) == set(LAYOUTS)
    root = MAKERS[layout](tmp_path / layout)
    assert detect_layout(root) == layout
    listing = read_corpus(root)
    assert listing.layout == layout and len(listing) > 0
    for u in listing:
        assert u.audio_path.is_file() and u.text == " ".join(u.text.split()) and u.speaker


def test_manifest_lines_are_utterances_or_reasons(tmp_path):
    from naturalspeech2_jax.data.readers import manifest_line, read_manifest, write_manifest

    listing = read_manifest(make_manifest(tmp_path / "m"))
    by_id = {u.id: u for u in listing}
    assert set(by_id) == {"a1", "a2"}
    assert by_id["a1"].text == "Hello there." and by_id["a1"].audio_path.is_file()
    assert (by_id["a2"].start, by_id["a2"].end) == (0.2, 0.7)
    why = dict(listing.problems)
    assert "2 lines" in why["dup"] and "4 or 6" in why["short"]
    assert "missing" in why["gone"] and "empty transcript" in why["empty"]
    # written back as a manifest (absolute paths), it reads as the same utterances
    assert write_manifest(listing, tmp_path / "again.tsv") == 2
    lines = (tmp_path / "again.tsv").read_text().splitlines()[1:]
    again = [manifest_line(tmp_path / "elsewhere", line) for line in lines]
    assert [(u.id, u.text, u.audio_path, u.start, u.end) for u in again] == [
        (u.id, u.text, u.audio_path.resolve(), u.start, u.end) for u in listing
    ]
    # a URL is kept as is (the audio stage reads it through etils.epath)
    url = manifest_line(tmp_path, "u\ts\tgs://bucket/a.flac\tHi.")
    assert url.audio_path == "gs://bucket/a.flac"


def test_detect_layout_errors(tmp_path):
    with pytest.raises(CorpusError, match="cannot tell"):
        detect_layout(write(tmp_path / "empty" / "notes.md", "x").parent)
    with pytest.raises(CorpusError, match="does not exist"):
        detect_layout(tmp_path / "nope")
    with pytest.raises(CorpusError, match="unknown layout"):
        read_corpus(tmp_path, layout="timit")


def test_kaldi_speaker_dirs(tmp_path):
    listing = read_corpus(make_kaldi_speaker_dirs(tmp_path / "k"))
    by_id = {u.id: u for u in listing}
    assert sorted(by_id) == ["u1", "u2"]
    assert by_id["u1"].text == "HELLO WORLD" and by_id["u1"].speaker == "s1"
    assert by_id["u1"].extra == {"gender": "f"}
    assert by_id["u1"].textgrid_path == tmp_path / "k" / "s1" / "u1.TextGrid"
    assert by_id["u2"].textgrid_path is None
    why = reasons(listing)
    assert why["u3"] == "empty transcript"
    assert "missing audio" in why["u4"]
    assert "utt2spk" in why["u5"]
    assert "no transcript" in why["orphan.flac"]
    assert len(listing.problems) == 4
    assert "4 problem(s)" in listing.summary()


def test_kaldi_flat_without_utt2spk_speaker_is_utterance(tmp_path):
    root = tmp_path / "flat"
    write(root / "text", "x1 ONE\nx2 TWO\n")
    write(root / "wav.scp", f"x1 {audio(root / 'x1.wav')}\nx2 {audio(root / 'x2.flac')}\n")
    listing = read_corpus(root)
    assert [(u.id, u.speaker) for u in listing] == [("x1", "x1"), ("x2", "x2")]


def test_kaldi_wav_scp_segments(tmp_path):
    root = make_kaldi_scp(tmp_path / "data" / "train")
    listing = read_corpus(root, layout="kaldi")
    by_id = {u.id: u for u in listing}
    assert sorted(by_id) == ["a", "b"]
    assert (by_id["a"].start, by_id["a"].end) == (0.0, 0.4)
    assert (by_id["b"].start, by_id["b"].end) == (0.4, None)
    assert by_id["a"].audio_path == root / "audio" / "rec1.wav"
    why = reasons(listing)
    assert "piped command" in why["c"]
    assert "not listed in wav.scp" in why["d"]
    assert "malformed segments" in why["e"]
    # The segment can be loaded directly.
    seg = load_audio(by_id["b"].audio_path, start=by_id["b"].start, end=by_id["b"].end)
    assert len(seg) == 9600


def test_libritts(tmp_path):
    listing = read_corpus(make_libritts(tmp_path / "LibriTTS"))
    (u,) = listing.utterances
    assert (u.id, u.speaker, u.text) == ("84_121123_000007_000001", "84", "Hello there.")
    assert u.extra == {"chapter": "121123", "original_text": "Hello there!"}
    why = reasons(listing)
    assert "no transcript" in why["84_121123_000008_000000.wav"]
    assert "missing audio" in why["84_121123_000009_000000"]


def test_librispeech(tmp_path):
    listing = read_corpus(make_librispeech(tmp_path / "LibriSpeech"))
    (u,) = listing.utterances
    assert (u.id, u.speaker, u.text) == ("1272-128104-0000", "1272", "MISTER QUILTER")
    assert "missing audio" in reasons(listing)["1272-128104-0001"]


def test_vctk_mic_choice_and_untranscribed_speaker(tmp_path):
    root = make_vctk(tmp_path / "VCTK")
    listing = read_corpus(root)
    assert [u.id for u in listing] == ["p225_001", "p225_002"]
    assert listing[0].audio_path.name == "p225_001_mic1.flac" and listing[0].speaker == "p225"
    assert listing[0].text == "Please call Stella."
    assert "no transcript" in reasons(listing)["p315_001_mic1.flac"]
    mic2 = read_corpus(root, mic="mic2")
    assert mic2[0].audio_path.name == "p225_001_mic2.flac"


def test_vctk_080_wav48(tmp_path):
    root = tmp_path / "VCTK-Corpus"
    audio(root / "wav48" / "p226" / "p226_003.wav")
    write(root / "txt" / "p226" / "p226_003.txt", "Six spoons.")
    listing = read_corpus(root)
    assert [(u.id, u.speaker) for u in listing] == [("p226_003", "p226")]
    assert not listing.problems


def test_mls(tmp_path):
    listing = read_corpus(make_mls(tmp_path / "mls_spanish" / "train"))
    (u,) = listing.utterances
    assert (u.id, u.speaker, u.text, u.extra["book"]) == (
        "10214_10108_000000",
        "10214",
        "la voz",
        "10108",
    )
    assert "missing audio" in reasons(listing)["10214_10108_000001"]


def test_ljspeech(tmp_path):
    listing = read_corpus(make_ljspeech(tmp_path / "LJSpeech-1.1"))
    by_id = {u.id: u for u in listing}
    assert by_id["LJ001-0001"].text == 'Printing, in nineteen twelve "only"'
    assert by_id["LJ001-0001"].extra["original_text"] == 'Printing, in 1912 "only"'
    assert by_id["LJ001-0002"].text == "Second one"  # empty normalized column falls back
    assert {u.speaker for u in listing} == {"LJSpeech-1.1"}
    why = reasons(listing)
    assert "missing audio" in why["LJ001-0003"] and "metadata.csv:4" in why


def test_folder_txt_and_lab(tmp_path):
    listing = read_corpus(make_folder(tmp_path / "corpus"))
    assert [(u.id, u.speaker, u.text) for u in listing] == [
        ("a1", "alice", "Alice one."),
        ("b1", "bob", "bob one"),
    ]
    why = reasons(listing)
    assert "no transcript" in why["b2.flac"]
    assert "no audio" in why["stray.txt"]
    assert why["b3"] == "empty transcript"


def test_alignment_dir_attaches_textgrids(tmp_path):
    root = make_librispeech(tmp_path / "LS")
    aligned = write(tmp_path / "mfa_out" / "1272" / "1272-128104-0000.TextGrid", "x")
    listing = read_corpus(root, alignment_dir=tmp_path / "mfa_out")
    assert listing[0].textgrid_path == aligned
    with pytest.raises(CorpusError, match="alignment folder"):
        read_corpus(root, alignment_dir=tmp_path / "missing")


def test_check_audio_catches_corrupt_and_empty_files(tmp_path):
    root = tmp_path / "c"
    audio(root / "good.wav")
    write(root / "good.txt", "fine")
    (root / "bad.wav").write_bytes(b"RIFF garbage that is not a wave file")
    write(root / "bad.txt", "corrupt")
    (root / "empty.wav").write_bytes(b"")
    write(root / "empty.txt", "zero bytes")
    fast = read_corpus(root)
    assert sorted(u.id for u in fast) == ["bad", "good"]  # size check only
    assert "0 bytes" in reasons(fast)["empty"]
    checked = read_corpus(root, check_audio=True)
    assert [u.id for u in checked] == ["good"]
    assert "cannot be decoded" in reasons(checked)["bad"]


def test_duplicate_ids_are_reported(tmp_path):
    root = tmp_path / "dups"
    write(root / "text", "a ONE\na TWO\n")
    write(root / "utt2spk", "a s\n")
    audio(root / "s" / "a.wav")
    listing = read_corpus(root)
    assert len(listing) == 1 and listing[0].text == "ONE"
    assert any("duplicate" in why for _, why in listing.problems)


@pytest.mark.shared_data
def test_shared_data_corpora(shared_data):
    expected = {"speechocean762_adult/train": 1340, "speechocean762_adult/dev": 400, "cathy": 600}
    for sub, count in expected.items():
        root = shared_data / sub
        assert detect_layout(root) == "kaldi"
        listing = read_corpus(root)
        assert listing.problems == [], listing.summary()
        assert len(listing) == count
        assert all(u.audio_path.suffix == ".flac" and u.text for u in listing)
    train = read_corpus(shared_data / "speechocean762_adult/train")
    dev = read_corpus(shared_data / "speechocean762_adult/dev")
    assert len(train.speakers) == 67 and len(dev.speakers) == 20
    assert not set(train.speakers) & set(dev.speakers)
    assert {u.extra.get("gender") for u in dev} == {"m", "f"}
