"""Fault injection for data preparation (issue 30): bad encodings, unpronounceable characters,
unusable output folders, corpora where nothing survives, reruns with other options."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from naturalspeech2_jax.data import readers
from naturalspeech2_jax.data.prepare import FINGERPRINT_FILE, prepare_corpus, reason_class
from naturalspeech2_jax.data.synthetic import generate_corpus
from naturalspeech2_jax.text.normalize import normalize_text, unpronounceable_characters

REPO = Path(__file__).resolve().parents[3]
FAST = dict(durations="exact", pitch_method="dio", num_workers=1, progress=False)


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    generate_corpus(
        out, num_speakers=2, utts_per_speaker=3, num_heldout=1, num_workers=1, progress=False
    )
    return out


def _voice(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return 0.3 * np.sin(2 * np.pi * 150 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))


def _kaldi_with_latin1(root: Path) -> Path:
    """A Kaldi folder whose ``text`` line 2 holds a Latin-1 'é' (byte 0xe9) at column 7."""
    root.mkdir(parents=True)
    (root / "text").write_bytes(b"u1 hello there\nu2 caf\xe9 au lait\n")
    (root / "utt2spk").write_text("u1 s\nu2 s\n")
    return root


LATIN1_SENTENCE = r"text:2: not UTF-8 \(byte 0xe9 at column 7\); re-encode it as UTF-8"


# ------------------------------------------------------------------------------ item 3
@pytest.mark.parametrize("layout", ["kaldi", None])
def test_kaldi_text_with_a_latin1_byte_names_file_line_and_column(tmp_path, layout):
    corpus = _kaldi_with_latin1(tmp_path / "kaldi")
    with pytest.raises(readers.CorpusError, match=LATIN1_SENTENCE) as err:
        prepare_corpus(corpus, tmp_path / "out", name="k", layout=layout, **FAST)
    assert "not a corpus of any known layout" not in str(err.value)
    assert str(corpus / "text") in str(err.value)


def test_kaldi_latin1_reaches_the_command_line_user_as_one_sentence(tmp_path):
    corpus = _kaldi_with_latin1(tmp_path / "kaldi")
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch" / "prepare_data.py"), f"--corpus={corpus}",
         f"--data_dir={tmp_path / 'out'}", "--layout=kaldi"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "text:2: not UTF-8 (byte 0xe9 at column 7)" in last


def test_plain_folder_latin1_transcript_rejects_that_utterance_only(tmp_path, tiny_corpus):
    """A plain folder (audio + same-name .txt) built from the embedded corpus, one transcript
    re-encoded as Latin-1: it is rejected naming the file, never decoded with U+FFFD."""
    corpus = tmp_path / "folder"
    shutil.copytree(tiny_corpus / "train" / "alignments", corpus / "alignments")
    lines = (tiny_corpus / "train" / "text").read_text().splitlines()
    for line in lines:
        utt, text = line.split(" ", 1)
        spk = utt.split("-")[0]
        (corpus / spk).mkdir(exist_ok=True)
        shutil.copy(tiny_corpus / "train" / spk / f"{utt}.flac", corpus / spk)
        (corpus / spk / f"{utt}.txt").write_text(text + "\n")
    bad_utt = lines[0].split(" ", 1)[0]
    bad_txt = corpus / bad_utt.split("-")[0] / f"{bad_utt}.txt"
    bad_txt.write_bytes("Caf\u00e9 au lait.".encode("latin-1"))

    listing = readers.read_corpus(corpus)
    assert listing.layout == "folder"
    assert bad_utt not in {u.id for u in listing}
    assert all("\ufffd" not in u.text for u in listing)
    (item, reason), = [p for p in listing.problems if p[0] == bad_utt]  # fmt: skip
    assert f"{bad_txt}:1" in reason and "byte 0xe9 at column 4" in reason

    result = prepare_corpus(corpus, tmp_path / "out", name="folder", **FAST)
    rows = [r.split("\t") for r in (result.dataset_dir / "rejected.tsv").read_text().splitlines()]
    assert [r[1] for r in rows[1:]] == [bad_utt]
    assert str(bad_txt) in rows[1][2] and "not UTF-8" in rows[1][2]
    assert sum(s["utterances"] for s in result.card["splits"].values()) == len(lines) - 1
    assert result.card["rejected_by_reason"] == {"transcript is not UTF-8": 1}


# ------------------------------------------------------------------------------ item 7
def test_text_front_end_reports_the_characters_it_drops():
    text = "We met \u4f60\u597d at noon \U0001f600, caf\u00e9 and Stra\u00dfe \u201cok\u201d #1!"
    assert unpronounceable_characters(text) == "\u4f60\u597d\U0001f600\u00df"
    assert "\u4f60" not in normalize_text(text)  # dropped from the spoken words, hence reported
    # Accents fold, symbols are spelled, quotes/dashes are punctuation: nothing reported.
    assert unpronounceable_characters("Caf\u00e9 \u2014 \u201cR&D\u201d costs $5 (50%).") == ""


def test_utterances_with_unpronounceable_characters_are_rejected_naming_them(tmp_path, tiny_corpus):
    """Chosen behaviour: reject (the audio holds sounds the phonemes would lack, so the
    alignment and the model would learn wrong), with the characters and code points named."""
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    text = corpus / "train" / "text"
    lines = text.read_text().splitlines()
    emoji_utt, zh_utt = lines[0].split(" ", 1)[0], lines[1].split(" ", 1)[0]
    lines[0] += " \U0001f600"
    lines[1] = lines[1].replace(" ", " \u4f60\u597d ", 1)
    text.write_text("\n".join(lines) + "\n")
    result = prepare_corpus(corpus, tmp_path / "out", name="chars", **FAST)
    rows = (result.dataset_dir / "rejected.tsv").read_text().splitlines()[1:]
    reasons = {r.split("\t")[1]: r.split("\t")[2] for r in rows}
    assert set(reasons) == {emoji_utt, zh_utt}
    assert "\U0001f600" in reasons[emoji_utt] and "U+1F600" in reasons[emoji_utt]
    assert "\u4f60\u597d" in reasons[zh_utt] and "U+4F60 U+597D" in reasons[zh_utt]
    assert result.card["rejected_by_reason"] == {"unpronounceable characters": 2}
    assert result.card["splits"]["train"]["utterances"] == len(lines) - 2


# ------------------------------------------------------------------------------ item 8
def test_data_dir_that_is_a_file_is_one_sentence(tmp_path, tiny_corpus):
    afile = tmp_path / "data"
    afile.write_text("not a folder")
    with pytest.raises(ValueError, match=r"--data_dir .*data is a file, not a folder"):
        prepare_corpus(tiny_corpus, afile, name="x", **FAST)


def test_unwritable_data_dir_is_one_sentence(tmp_path, tiny_corpus):
    if os.geteuid() == 0:  # root writes anywhere; /proc refuses new folders even to root
        data_dir = Path("/proc/ns2_no_such_dir/data")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        data_dir = locked / "data"
    with pytest.raises(ValueError, match=r"--data_dir .* cannot be written \(.*\); give a folder"):
        prepare_corpus(tiny_corpus, data_dir, name="x", **FAST)


def test_nothing_survives_writes_rejected_tsv_and_tallies_every_reason(tmp_path):
    corpus = tmp_path / "kaldi"
    spk = corpus / "s"
    spk.mkdir(parents=True)
    sf.write(spk / "noexact.flac", _voice(1.0), 16000)
    sf.write(spk / "short.flac", _voice(0.1), 16000)
    sf.write(spk / "punct.flac", _voice(1.0), 16000)
    sf.write(spk / "emoji.flac", _voice(1.0), 16000)
    sf.write(spk / "blank.flac", _voice(1.0), 16000)
    (spk / "corrupt.flac").write_bytes(b"not audio")
    (spk / "zero.flac").write_bytes(b"")
    texts = {
        "noexact": "No timings here.",
        "short": "Far too short.",
        "punct": "?!",
        "emoji": "Smile \U0001f600 please.",
        "blank": "",
        "corrupt": "Broken file.",
        "zero": "Empty file.",
        "nofile": "No audio at all.",
        "nospk": "Nobody said this.",
    }
    (corpus / "text").write_text("".join(f"{k} {v}\n" for k, v in texts.items()))
    (corpus / "utt2spk").write_text("".join(f"{k} s\n" for k in texts if k != "nospk"))
    with pytest.raises(ValueError, match="survived") as err:
        prepare_corpus(corpus, tmp_path / "out", name="none", **FAST)
    msg = str(err.value)
    tsv = tmp_path / "out" / "_work" / "none" / "rejected.tsv"
    assert str(tsv) in msg and "\n" not in msg
    rows = [r.split("\t") for r in tsv.read_text().splitlines()[1:]]
    assert {r[1] for r in rows} == set(texts)
    classes = {reason_class(r[2]) for r in rows}
    assert len(classes) >= 8, classes  # more than the 5 the old message showed
    for c in classes:
        assert c in msg, (c, msg)
    assert "9 rejected" in msg
    assert not any("/" in c for c in classes)  # no file path in a tally key (item 10a)
    assert "audio file is empty" in classes


def test_reason_class_has_no_paths():
    assert reason_class("audio file /a/b/c.flac is empty (0 bytes)") == "audio file is empty"
    assert reason_class("audio file /a/b.flac is missing") == "audio file is missing"
    assert reason_class("too short (0.10 s < 0.5 s)") == "too short"
    assert reason_class("recording 'r1' is not listed in wav.scp") == (
        "recording is not listed in wav.scp"
    )


def test_missing_corpus_prints_the_reason_not_the_help(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch" / "prepare_data.py"), f"--data_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.splitlines() == [
        "error: give exactly one of --corpus=PATH or --embedded (see --help)"
    ], err
    assert "--aligner_preset" not in proc.stdout + proc.stderr  # no flag listing


# ------------------------------------------------------------------------------ item 4
def test_rerun_reuses_refuses_or_rebuilds_by_what_it_was_prepared_from(
    tmp_path, tiny_corpus, caplog
):
    first = prepare_corpus(tiny_corpus, tmp_path, name="t", **FAST)
    stamp = first.dataset_dir / FINGERPRINT_FILE
    recorded = json.loads(stamp.read_text())
    assert recorded["corpora"] == [os.path.abspath(tiny_corpus)]
    assert recorded["options"]["min_seconds"] == 0.5 and "num_workers" not in recorded["options"]
    card_mtime = os.stat(first.dataset_dir / "card.json").st_mtime_ns

    # same corpus and options (worker count does not matter): reused, not rebuilt
    same = prepare_corpus(tiny_corpus, tmp_path, name="t", **{**FAST, "num_workers": 2})
    assert same.card == first.card
    assert os.stat(first.dataset_dir / "card.json").st_mtime_ns == card_mtime

    # another option: refused, naming it and the fix
    with pytest.raises(ValueError, match=r"min_seconds: 0\.5 -> 0\.3.*--overwrite.*--name"):
        prepare_corpus(tiny_corpus, tmp_path, name="t", min_seconds=0.3, **FAST)
    # another corpus under the same name: refused, naming the corpora
    other = tmp_path / "other_corpus"
    shutil.copytree(tiny_corpus, other)
    with pytest.raises(ValueError, match=r"corpora: .*other_corpus"):
        prepare_corpus(other, tmp_path, name="t", **FAST)
    assert os.stat(first.dataset_dir / "card.json").st_mtime_ns == card_mtime

    # --overwrite rebuilds with the new option
    rebuilt = prepare_corpus(tiny_corpus, tmp_path, name="t", min_seconds=0.3, overwrite=True,
                             **FAST)  # fmt: skip
    assert rebuilt.card["options"]["min_seconds"] == 0.3
    assert json.loads(stamp.read_text())["options"]["min_seconds"] == 0.3
    assert rebuilt.card["splits"] == first.card["splits"]

    # a dataset prepared before fingerprints existed: reused with a warning
    stamp.unlink()
    with caplog.at_level(logging.WARNING, logger="naturalspeech2_jax.data.prepare"):
        legacy = prepare_corpus(tiny_corpus, tmp_path, name="t", min_seconds=0.9, **FAST)
    assert legacy.card == rebuilt.card
    assert any(FINGERPRINT_FILE in r.getMessage() for r in caplog.records)
