"""Fault injection for data preparation (issue 30): bad encodings, unpronounceable characters,
unusable output folders, corpora where nothing survives, reruns with other options or an edited
corpus, kills (the workers end with the preparation; a rerun gives the uninterrupted dataset),
leftovers of interrupted runs, damaged caches, cards and fingerprints, degenerate audio."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
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


# ------------------------------------------------------------------------------ helpers (item 9)
def _records(dataset_dir) -> dict:
    """{(split, id): {feature: array}} of a prepared dataset, every split."""
    from naturalspeech2_jax.data import pipeline

    splits = json.loads((Path(dataset_dir) / "card.json").read_text())["splits"]
    out = {}
    for split in splits:
        source = pipeline.open_split(dataset_dir, split)
        for i in range(len(source)):
            ex = source[i]
            uid = ex["id"].decode() if isinstance(ex["id"], bytes) else str(ex["id"])
            out[(split, uid)] = {k: np.asarray(v) for k, v in ex.items()}
    return out


def _timeless(card: dict) -> dict:
    """A card without what depends on the clock."""
    return {
        k: v for k, v in card.items() if k not in ("seconds", "throughput_audio_hours_per_hour")
    }


def assert_same_dataset(got, want) -> None:
    """Same records (every feature of every example), card (clock aside), side files and file
    names; no leftovers of an interrupted run."""
    got, want = Path(got), Path(want)
    a, b = _records(got), _records(want)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].keys() == b[key].keys(), key
        for feature in a[key]:
            np.testing.assert_array_equal(a[key][feature], b[key][feature], err_msg=str(key))
    card_a, card_b = (json.loads((d / "card.json").read_text()) for d in (got, want))
    assert _timeless(card_a) == _timeless(card_b)
    for name in ("rejected.tsv", "vocab.json", "speakers.json", "card.md", FINGERPRINT_FILE):
        assert (got / name).read_text() == (want / name).read_text(), name
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in want.iterdir())
    assert not list(got.parent.glob("incomplete.*"))


def truncate(path: Path) -> None:
    """Cut ``path`` to half its size."""
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _env() -> dict:
    """A subprocess environment that imports this checkout."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _prepare_cli(corpus, data_dir, *flags: str) -> list[str]:
    return [sys.executable, str(REPO / "launch" / "prepare_data.py"), f"--corpus={corpus}",
            f"--data_dir={data_dir}", "--name=k", "--durations=exact", "--num_workers=2",
            *flags]  # fmt: skip


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (a dead process not yet reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _caches(work: Path) -> dict[str, int]:
    """Finished feature caches under ``work`` -> modification time (ns)."""
    return {str(p): p.stat().st_mtime_ns for p in work.glob("*/*.npz") if ".partial" not in p.name}


# ------------------------------------------------------------------------------ item 9a
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_preparation_takes_its_workers_along(tmp_path, tiny_corpus):
    """SIGKILL of the preparation: its feature workers end at once (they used to finish their
    jobs for seconds and keep writing caches), and no cache is made final after the kill."""
    data_dir = tmp_path / "data"
    work = data_dir / "_work" / "k"
    proc = subprocess.Popen(
        _prepare_cli(tiny_corpus, data_dir, "--pitch_method=harvest"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while not _caches(work):  # the workers are busy: harvest takes seconds an utterance
            assert proc.poll() is None and time.time() < deadline, "no cache was written"
            time.sleep(0.02)
        workers = [p for p in _children(proc.pid)
                   if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]  # fmt: skip
        assert len(workers) == 2
    finally:
        proc.kill()
        killed_at = time.time_ns()
        proc.wait()
    deadline = time.time() + 2
    while any(_running(p) for p in workers):
        assert time.time() < deadline, "a feature worker outlived the killed preparation"
        time.sleep(0.02)
    settled = _caches(work)
    assert len(settled) < 6  # 6 utterances: the run was cut short
    late = [p for p, mtime in settled.items() if mtime > killed_at + 300_000_000]
    assert not late, f"caches written after the kill: {late}"
    time.sleep(1.0)
    assert _caches(work) == settled


@pytest.mark.slow  # ~40 s: four subprocess preparations with harvest pitch
def test_kills_at_random_points_then_a_rerun_give_the_uninterrupted_dataset(tmp_path, tiny_corpus):
    """Kill -9 at three random (seeded) moments of one preparation, then let it finish: the
    dataset equals an uninterrupted run's, array for array, and nothing of the kills is left."""
    import random

    def run(data_dir, kill_after=None) -> float:
        start = time.time()
        proc = subprocess.Popen(
            _prepare_cli(tiny_corpus, data_dir, "--pitch_method=harvest"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(),
            cwd=tmp_path,
        )  # fmt: skip
        try:
            _, err = proc.communicate(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return -1.0
        assert proc.returncode == 0, err[-3000:]
        return time.time() - start

    whole = run(tmp_path / "reference")
    rng = random.Random(30)
    killed = tmp_path / "killed"
    for _ in range(3):
        run(killed, kill_after=rng.uniform(0.3, 1.0) * whole)
    assert run(killed) > 0
    assert_same_dataset(killed / "k" / "1.0.0", tmp_path / "reference" / "k" / "1.0.0")
    assert not list((killed / "_work" / "k").glob("*/*.partial*"))


# ------------------------------------------------------------------------------ item 9b, 9c
def test_leftovers_of_an_interrupted_run_are_removed_with_one_info_line(
    tmp_path, tiny_corpus, caplog
):
    reference = prepare_corpus(tiny_corpus, tmp_path / "ref", name="t", **FAST).dataset_dir
    data_dir = tmp_path / "data"
    incomplete = data_dir / "t" / "incomplete.ABC123_1.0.0"
    incomplete.mkdir(parents=True)
    (incomplete / "t-train.array_record-00000-of-00001").write_bytes(b"half a record")
    unfinished = data_dir / "t" / "1.0.0"  # TFDS finished, the card never came
    shutil.copytree(reference, unfinished)
    (unfinished / "card.json").unlink()
    (unfinished / "stale.txt").write_text("from another run")
    with caplog.at_level(logging.INFO, logger="naturalspeech2_jax.data.prepare"):
        result = prepare_corpus(tiny_corpus, data_dir, name="t", **FAST)
    lines = [r.getMessage() for r in caplog.records if "interrupted" in r.getMessage()]
    assert len(lines) == 1 and str(incomplete) in lines[0] and str(unfinished) in lines[0]
    assert not incomplete.exists() and not (unfinished / "stale.txt").exists()
    assert_same_dataset(result.dataset_dir, reference)


def test_tfds_builder_removes_incomplete_folders(tmp_path, caplog):
    from naturalspeech2_jax.data.tfds_builder import write_dataset
    from tests.helpers import tone_example

    left = tmp_path / "tones" / "incomplete.XYZ_1.0.0"
    left.mkdir(parents=True)
    with caplog.at_level(logging.INFO, logger="naturalspeech2_jax.data.tfds_builder"):
        write_dataset(tmp_path, "tones", {"train": lambda: (tone_example(8, i) for i in range(2))})
    assert not left.exists()
    assert any(str(left) in r.getMessage() for r in caplog.records)


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not even ``except Exception``)."""


def test_card_is_written_figures_first_and_card_json_last(tmp_path, tiny_corpus, monkeypatch):
    """A kill at each write of the card leaves no card.md linking a missing figure and no
    complete-looking dataset (card.json) without its fingerprint; the rerun completes it."""
    from naturalspeech2_jax.data import prepare

    reference = prepare_corpus(tiny_corpus, tmp_path / "ref", name="t", **FAST).dataset_dir
    order = []
    real_replace, real_write_card = os.replace, prepare._write_card
    state = {"in_card": False, "kill_at": None}

    def replace(src, dst):
        if state["in_card"]:
            if len(order) == state["kill_at"]:
                raise _Killed
            order.append(os.path.basename(dst))
        return real_replace(src, dst)

    def write_card(*args, **kwargs):
        state["in_card"] = True
        try:
            return real_write_card(*args, **kwargs)
        finally:
            state["in_card"] = False

    monkeypatch.setattr(prepare.os, "replace", replace)
    monkeypatch.setattr(prepare, "_write_card", write_card)
    data_dir = tmp_path / "data"
    out = data_dir / "t" / "1.0.0"
    prepare_corpus(tiny_corpus, tmp_path / "order", name="t", **FAST)
    assert order == ["lengths.png", "rejected.tsv", "card.md", FINGERPRINT_FILE, "card.json"]
    for k in range(len(order)):
        del order[:]
        state["kill_at"] = k
        with pytest.raises(_Killed):
            prepare_corpus(tiny_corpus, data_dir, name="t", **FAST)
        if (out / "card.md").exists():
            linked = re.findall(r"\]\(([^)]+)\)", (out / "card.md").read_text())
            assert linked and all((out / f).exists() for f in linked), linked
        assert not (out / "card.json").exists()  # the last write never happened
        # A half-written file has a temporary (hidden) name, and is gone after the rerun.
        assert all(p.name.startswith(".") for p in out.iterdir() if ".tmp" in p.name)
    state["kill_at"] = None
    result = prepare_corpus(tiny_corpus, data_dir, name="t", **FAST)
    assert_same_dataset(result.dataset_dir, reference)


# ------------------------------------------------------------------------------ item 9d
def test_damaged_caches_are_detected_reported_and_recomputed(tmp_path, tiny_corpus, caplog):
    from naturalspeech2_jax.data.prepare import cache_problem

    first = prepare_corpus(tiny_corpus, tmp_path, name="t", **FAST).dataset_dir
    keep = tmp_path / "first"
    shutil.copytree(first, keep)
    shutil.rmtree(tmp_path / "t")  # the dataset goes; the feature cache stays
    work = tmp_path / "_work" / "t"
    caches = sorted(work.glob("*/*.npz"))
    assert len(caches) == 6 and all(cache_problem(str(c)) is None for c in caches)
    truncate(caches[0])  # a cut file
    data = bytearray(caches[1].read_bytes())  # a flipped byte inside the audio array
    data[len(data) // 3] ^= 0xFF
    caches[1].write_bytes(bytes(data))
    caches[2].write_bytes(b"")  # an empty file
    np.savez(caches[3], audio=np.zeros(10, np.int16), log_f0=np.zeros(3, np.float32),
             voiced=np.zeros(3, np.int8), mel=np.zeros((3, 80), np.float16))  # fmt: skip
    partial = caches[4].with_name(caches[4].name + ".partial999.npz")
    partial.write_bytes(b"a write that was cut")
    for c in caches[:4]:
        assert cache_problem(str(c)), c
    with caplog.at_level(logging.WARNING, logger="naturalspeech2_jax.data.prepare"):
        result = prepare_corpus(tiny_corpus, tmp_path, name="t", **FAST)
    # Warnings only: the INFO summary also quotes the reasons (and earlier tests may have left
    # caplog's handler at INFO).
    warned = [r.getMessage() for r in caplog.records
              if r.levelno >= logging.WARNING and "damaged" in r.getMessage()]  # fmt: skip
    assert len(warned) == 1 and warned[0].startswith("4 feature cache(s)"), warned
    assert not partial.exists()
    assert all(cache_problem(str(c)) is None for c in caches)
    assert_same_dataset(result.dataset_dir, keep)


# ------------------------------------------------------------------------------ item 10
def test_edited_corpus_is_noticed_by_its_sizes_and_times(tmp_path, tiny_corpus, caplog):
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    first = prepare_corpus(corpus, tmp_path / "data", name="t", **FAST)
    inputs = json.loads((first.dataset_dir / FINGERPRINT_FILE).read_text())["inputs"]
    assert inputs[0]["files"] > 10 and inputs[0]["bytes"] > 0 and len(inputs[0]["digest"]) == 16
    text = corpus / "train" / "spk2gender"
    stat = text.stat()
    old_text = text.read_text()
    text.write_text(old_text.translate(str.maketrans("mf", "fm")))  # same size, new time
    with pytest.raises(ValueError, match=rf"files of {corpus} changed since .*a file was "
                                         r"rewritten.*--overwrite"):  # fmt: skip
        prepare_corpus(corpus, tmp_path / "data", name="t", **FAST)
    text.write_text(old_text)
    os.utime(text, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same file again: reused
    assert prepare_corpus(corpus, tmp_path / "data", name="t", **FAST).card == first.card
    (corpus / "train" / "spk01" / "extra.flac").write_bytes(b"x" * 100)  # a file more
    with pytest.raises(ValueError, match=r"\(\d+ files, .* MB -> \d+ files"):
        prepare_corpus(corpus, tmp_path / "data", name="t", **FAST)
    rebuilt = prepare_corpus(corpus, tmp_path / "data", name="t", overwrite=True, **FAST)
    assert rebuilt.card["splits"] == first.card["splits"]  # extra.flac is in no transcript
    # A fingerprint from before input files were recorded is not compared on them.
    stamp = rebuilt.dataset_dir / FINGERPRINT_FILE
    old = json.loads(stamp.read_text())
    del old["inputs"]
    stamp.write_text(json.dumps(old))
    text.write_text(text.read_text() + "\n")
    assert prepare_corpus(corpus, tmp_path / "data", name="t", **FAST).card == rebuilt.card
    # A corpus deleted after preparing it: its dataset is reused, with a warning.
    shutil.rmtree(corpus)
    with caplog.at_level(logging.WARNING, logger="naturalspeech2_jax.data.prepare"):
        assert prepare_corpus(corpus, tmp_path / "data", name="t", **FAST).card == rebuilt.card
    assert any("no longer exists" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------ damaged cards
@pytest.mark.parametrize("name", ["card.json", FINGERPRINT_FILE])
def test_damaged_card_or_fingerprint_is_one_sentence_and_overwrite_rebuilds(
    tmp_path, tiny_corpus, name
):
    first = prepare_corpus(tiny_corpus, tmp_path, name="t", **FAST)
    truncate(first.dataset_dir / name)
    with pytest.raises(ValueError, match=rf"{re.escape(name)} \(.*\) is damaged \(.*\); give "
                                         "--overwrite to rebuild the dataset") as err:  # fmt: skip
        prepare_corpus(tiny_corpus, tmp_path, name="t", **FAST)
    assert "\n" not in str(err.value)
    rebuilt = prepare_corpus(tiny_corpus, tmp_path, name="t", overwrite=True, **FAST)
    assert rebuilt.card["splits"] == first.card["splits"]
    assert json.loads((rebuilt.dataset_dir / name).read_text())  # whole again


def test_damaged_work_stamp_recomputes_the_features(tmp_path, tiny_corpus):
    first = prepare_corpus(tiny_corpus, tmp_path, name="t", **FAST).dataset_dir
    keep = tmp_path / "first"
    shutil.copytree(first, keep)
    shutil.rmtree(tmp_path / "t")
    truncate(tmp_path / "_work" / "t" / FINGERPRINT_FILE)
    assert_same_dataset(prepare_corpus(tiny_corpus, tmp_path, name="t", **FAST).dataset_dir, keep)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"min_seconds": -1.0}, "min_seconds must be >= 0"),
        ({"min_seconds": float("nan")}, "min_seconds must be >= 0"),
        ({"max_seconds": 0.2}, r"max_seconds \(0.2\) must be more than min_seconds"),
        ({"num_workers": 0}, "num_workers must be >= 1"),
        ({"aligner_steps": -3}, "aligner_steps must be >= 0"),
        ({"pitch_method": "crepe"}, "pitch_method='crepe'; use harvest or dio"),
        ({"max_edge_silence": float("nan")}, "max_edge_silence must be >= 0"),
    ],
)
def test_unusable_options_fail_before_any_work(tmp_path, tiny_corpus, options, match):
    with pytest.raises(ValueError, match=match):
        prepare_corpus(tiny_corpus, tmp_path, name="t", **{**FAST, **options})
    assert not (tmp_path / "_work").exists()


# ------------------------------------------------------------------------------ degenerate audio
def test_degenerate_audio_in_a_corpus_is_rejected_or_normalised(tmp_path, tiny_corpus):
    """Silent, NaN, 0-byte and not-audio (a text file named .wav) files are rejected with their
    reason; clipped and far-too-loud (float, 1e6) recordings are kept and normalised like any
    other."""
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    flacs = sorted((corpus / "train").glob("*/*.flac")) + sorted(
        (corpus / "heldout").glob("*/*.flac")
    )
    assert len(flacs) == 6
    ids = [f.stem for f in flacs]
    wavs = {f.stem: sf.read(f, dtype="float32")[0] for f in flacs}

    def replace(utt: str, data=None, raw: bytes | None = None, subtype="FLOAT") -> None:
        flac = next(f for f in flacs if f.stem == utt)
        flac.unlink()
        if raw is not None:
            flac.with_suffix(".wav").write_bytes(raw)
        else:
            sf.write(flac.with_suffix(".wav"), data, 16000, subtype=subtype)

    silent, nan, zero, text, clipped, huge = ids
    replace(silent, np.zeros_like(wavs[silent]), subtype="PCM_16")
    replace(nan, np.where(np.arange(len(wavs[nan])) == 100, np.nan, wavs[nan]))
    replace(zero, raw=b"")
    replace(text, raw=b"this is a transcript, not audio\n" * 20)
    replace(clipped, np.clip(wavs[clipped] * 30, -1, 1), subtype="PCM_16")
    replace(huge, wavs[huge] * 1e6)
    result = prepare_corpus(corpus, tmp_path / "out", name="d", **FAST)
    rows = (result.dataset_dir / "rejected.tsv").read_text().splitlines()[1:]
    reasons = {r.split("\t")[1]: r.split("\t")[2] for r in rows}
    assert set(reasons) == {silent, nan, zero, text}
    assert reasons[silent] == "empty or silent audio"
    assert "NaN or infinite samples" in reasons[nan]
    assert "is empty (0 bytes)" in reasons[zero]
    assert "cannot be decoded" in reasons[text] and "not audio" in reasons[text]
    records = _records(result.dataset_dir)
    kept = {key[1]: ex for key, ex in records.items()}
    assert set(kept) == {clipped, huge}
    for ex in kept.values():
        audio = ex["audio"].astype(np.float32) / 32768
        assert np.abs(audio).max() <= 10 ** (-1 / 20) + 1e-3  # normalised to the -1 dBFS peak
        assert np.all(np.isfinite(ex["log_f0"]))
    # The far-too-loud copy comes out as its original would (loudness normalisation).
    original = prepare_corpus(tiny_corpus, tmp_path / "orig", name="o", **FAST)
    want = {key[1]: ex for key, ex in _records(original.dataset_dir).items()}[huge]
    np.testing.assert_allclose(kept[huge]["audio"], want["audio"], atol=2)


# ------------------------------------------------------------------------------ two processes
def test_a_second_preparation_of_a_name_waits_for_the_first(tmp_path, tiny_corpus, caplog):
    """Two preparations of one name never write it together: the second waits for the lock
    (one INFO line), then reuses what the first made."""
    import fcntl
    import threading

    lock = tmp_path / "_work" / ".t.lock"
    lock.parent.mkdir(parents=True)
    results = {}
    with open(lock, "a+") as held:  # the "first" preparation
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with caplog.at_level(logging.INFO, logger="naturalspeech2_jax.data.prepare"):
            second = threading.Thread(
                target=lambda: results.update(
                    r=prepare_corpus(tiny_corpus, tmp_path, name="t", **FAST)
                )  # fmt: skip
            )
            second.start()
            deadline = time.time() + 60
            while not any("another process is preparing t" in r.getMessage()
                          for r in caplog.records):  # fmt: skip
                assert time.time() < deadline and second.is_alive()
                time.sleep(0.02)
            time.sleep(0.3)
            assert second.is_alive() and not (tmp_path / "t").exists()  # it waits
            first = prepare_corpus(tiny_corpus, tmp_path / "other", name="t", **FAST)
            shutil.copytree(first.dataset_dir, tmp_path / "t" / "1.0.0")  # "the first" finishes
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    second.join(timeout=120)
    assert results["r"].card == first.card  # reused, not prepared again
