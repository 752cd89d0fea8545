"""prepare_corpus(runner="beam"): Apache Beam's DirectRunner with several worker processes
writes exactly what the local runner writes (every feature of every example, frame counts,
rejected.tsv, vocabulary, speakers, card), for exact timings, pocketsphinx, a built-in aligner
trained before the run, and a streamed manifest; reruns are reused or refused, never doubled."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

from naturalspeech2_jax.data import readers
from naturalspeech2_jax.data.prepare import prepare_corpus, train_aligner_on_corpus
from naturalspeech2_jax.data.synthetic import generate_corpus

pytest.importorskip("apache_beam")

# The card entries that differ by design: how long it took, and how it was run.
_RUN_ENTRIES = {"seconds", "throughput_audio_hours_per_hour", "options", "name"}
_COMMON = dict(pitch_method="dio", progress=False, num_workers=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The embedded corpus (3 speakers x 3 utterances, one held out) with bad utterances in it:
    a corrupt file, an empty one, one too short, text with nothing or with unknown characters
    to say, and an 8 kHz stereo file without exact timings."""
    out = tmp_path_factory.mktemp("corpus")
    generate_corpus(
        out, num_speakers=3, utts_per_speaker=3, num_heldout=1, num_workers=1, progress=False
    )
    spk_dir = next(p for p in (out / "train").iterdir() if p.is_dir())
    t = np.arange(16000 * 2) / 16000
    voice = 0.3 * np.sin(2 * np.pi * 150 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    (spk_dir / "corrupt.wav").write_bytes(b"not audio at all")
    sf.write(spk_dir / "empty.wav", np.zeros(0), 16000)
    sf.write(spk_dir / "short.wav", voice[:1000], 16000)
    sf.write(spk_dir / "punct.wav", voice, 16000)
    sf.write(spk_dir / "unknown.wav", voice, 16000)
    sf.write(spk_dir / "stereo8k.wav", np.stack([voice[::2], voice[::2]], 1), 8000)
    bad = {
        "corrupt": "This file is corrupt.",
        "empty": "Nothing in here.",
        "short": "Too short to use.",
        "punct": "?!... --",
        "unknown": "\u4f60\u597d",
        "stereo8k": "Eight k.",
    }
    with (out / "train" / "text").open("a") as f:
        f.write("".join(f"{k} {v}\n" for k, v in bad.items()))
    with (out / "train" / "utt2spk").open("a") as f:
        f.write("".join(f"{k} {spk_dir.name}\n" for k in bad))
    return out


def _records(dataset_dir):
    import tensorflow_datasets as tfds

    source = tfds.builder_from_directory(str(dataset_dir)).as_data_source()
    return {s: [source[s][i] for i in range(len(source[s]))] for s in source}


def assert_same_dataset(local, beam) -> None:
    """Every feature of every example (in record order), frame counts, sidecars and card."""
    a, b = _records(local.dataset_dir), _records(beam.dataset_dir)
    assert set(a) == set(b) and all(a.values())
    for split in a:
        assert [r["id"] for r in a[split]] == [r["id"] for r in b[split]], split
        for x, y in zip(a[split], b[split], strict=True):
            assert set(x) == set(y)
            for key in x:
                assert np.array_equal(np.asarray(x[key]), np.asarray(y[key])), (x["id"], key)
        frames = [np.load(r.dataset_dir / f"frames_{split}.npy") for r in (local, beam)]
        assert np.array_equal(*frames)
        assert frames[0].tolist() == [len(r["log_f0"]) for r in a[split]]  # record order
    for sidecar in ("rejected.tsv", "vocab.json", "speakers.json"):
        assert (local.dataset_dir / sidecar).read_text() == (beam.dataset_dir / sidecar).read_text()
    card_a = {k: v for k, v in local.card.items() if k not in _RUN_ENTRIES}
    card_b = {k: v for k, v in beam.card.items() if k not in _RUN_ENTRIES}
    for entry in ("aligner",):  # its timings are the local run's own
        for key in ("train_seconds", "align_seconds"):
            card_a.get(entry, {}).pop(key, None)
    assert card_a == card_b
    assert (local.dataset_dir / "alignment.png").exists() == bool(card_b["aligner"].get("figure"))


def _reasons(result) -> dict[str, str]:
    rows = (result.dataset_dir / "rejected.tsv").read_text().splitlines()[1:]
    return {r.split("\t")[1]: r.split("\t")[2] for r in rows}


def test_beam_writes_what_the_local_runner_writes_and_reruns_are_reused(tmp_path, corpus):
    local = prepare_corpus(corpus, tmp_path, name="local", durations="exact", **_COMMON)
    beam = prepare_corpus(
        corpus, tmp_path, name="beam", durations="exact", runner="beam", **_COMMON
    )
    assert_same_dataset(local, beam)
    reasons = _reasons(beam)
    assert set(reasons) == {"corrupt", "empty", "short", "punct", "unknown", "stereo8k"}
    assert "unreadable audio" in reasons["corrupt"]  # a corrupt file is a reject, not fatal
    assert "exact timings" in reasons["stereo8k"]
    assert beam.card["splits"]["train"]["utterances"] == 6
    assert beam.card["options"]["runner"] == "beam"

    # The same inputs again: the dataset is reused (nothing rewritten, no duplicate examples);
    # another option: refused, naming it.
    again = prepare_corpus(
        corpus, tmp_path, name="beam", durations="exact", runner="beam", **_COMMON
    )
    assert again.card == beam.card
    total = sum(s["utterances"] for s in beam.card["splits"].values())
    assert sum(len(v) for v in _records(again.dataset_dir).values()) == total == 9
    with pytest.raises(ValueError, match="min_seconds"):
        prepare_corpus(corpus, tmp_path, name="beam", durations="exact", runner="beam",
                       min_seconds=1.0, **_COMMON)  # fmt: skip


def test_a_streamed_manifest_gives_the_local_runners_dataset(tmp_path, corpus):
    """A manifest corpus (the Beam workers read its lines; the local runner reads it whole):
    both give the same dataset, and reject malformed and repeated lines alike."""
    folder = tmp_path / "manifest_corpus"
    folder.mkdir()
    listing = readers.read_corpus(corpus / "train")
    readers.write_manifest(listing, folder / readers.MANIFEST_FILE)
    first = listing.utterances[0]
    with (folder / readers.MANIFEST_FILE).open("a") as f:
        f.write("broken line without tabs\n")
        f.write(f"{first.id}\tother\t{first.audio_path}\tthe same id again\t\t\n")
    assert readers.detect_layout(folder) == "manifest"
    opts = dict(durations="auto", aligner="pocketsphinx", **_COMMON)
    pytest.importorskip("pocketsphinx")
    local = prepare_corpus(folder, tmp_path / "data", name="local", **opts)
    beam = prepare_corpus(folder, tmp_path / "data", name="beam", runner="beam", **opts)
    assert_same_dataset(local, beam)
    reasons = _reasons(beam)
    assert "manifest" in reasons[first.id] and "4 or 6" in reasons["broken line without tabs"]
    # the listed corpus's own bad utterances are rejected by the stages, as in the folder
    assert "unreadable audio" in reasons["corrupt"]


def test_pocketsphinx_durations_agree(tmp_path, corpus):
    pytest.importorskip("pocketsphinx")
    opts = dict(durations="aligner", aligner="pocketsphinx", **_COMMON)
    local = prepare_corpus(corpus, tmp_path, name="local", **opts)
    beam = prepare_corpus(corpus, tmp_path, name="beam", runner="beam", **opts)
    assert beam.card["durations_source"] == {"pocketsphinx": 10}  # the 8 kHz file too
    assert "boundary_error_ms" in beam.card["aligner"]
    assert_same_dataset(local, beam)


def test_a_builtin_aligner_trained_before_the_run_gives_the_same_durations(tmp_path, corpus):
    opts = dict(durations="aligner", aligner="builtin", **_COMMON)
    with pytest.raises(ValueError, match="--train_aligner"):  # Beam never trains it itself
        prepare_corpus(corpus, tmp_path, name="beam", runner="beam", **opts)
    with pytest.raises(FileNotFoundError, match="no trained aligner"):
        prepare_corpus(corpus, tmp_path, name="beam", aligner_checkpoint=str(tmp_path), **opts)
    report = train_aligner_on_corpus(
        corpus, tmp_path / "aligner", sample=6, aligner_steps=10, pitch_method="dio",
        progress=False, num_workers=2,
    )  # fmt: skip
    assert 4 <= report["utterances"] <= 6  # a sampled bad file is left out
    opts["aligner_checkpoint"] = report["aligner_checkpoint"]
    local = prepare_corpus(corpus, tmp_path, name="local", **opts)
    beam = prepare_corpus(corpus, tmp_path, name="beam", runner="beam", **opts)
    assert local.card["durations_source"]["built-in aligner"] >= 8
    assert_same_dataset(local, beam)


def test_the_command_line_writes_a_manifest_and_refuses_beam_without_an_aligner(tmp_path, corpus):
    """launch/prepare_data.py: --write_manifest lists a corpus; --runner=beam with the built-in
    aligner and no checkpoint is one sentence naming --train_aligner (exit status 2)."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    script = [sys.executable, str(repo / "launch" / "prepare_data.py")]
    manifest = tmp_path / "m" / readers.MANIFEST_FILE
    manifest.parent.mkdir()
    run = dict(capture_output=True, text=True, timeout=300, cwd=repo)
    train = corpus / "train"
    proc = subprocess.run([*script, f"--corpus={train}", f"--write_manifest={manifest}"], **run)
    assert proc.returncode == 0, proc.stderr
    listed = [u.id for u in readers.read_manifest(manifest.parent)]
    assert listed == [u.id for u in readers.read_corpus(train)] and "utterances" in proc.stdout
    proc = subprocess.run(
        [*script, f"--corpus={corpus}", f"--data_dir={tmp_path / 'd'}", "--runner=beam",
         "--aligner=builtin", "--durations=aligner"], **run,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "--train_aligner" in proc.stderr


def test_without_beam_installed_the_error_names_the_extra(tmp_path, corpus, monkeypatch):
    import sys

    import naturalspeech2_jax.data

    monkeypatch.setitem(sys.modules, "apache_beam", None)
    monkeypatch.delitem(sys.modules, "naturalspeech2_jax.data.prepare_beam", raising=False)
    monkeypatch.delattr(naturalspeech2_jax.data, "prepare_beam", raising=False)
    shutil.rmtree(tmp_path, ignore_errors=True)
    with pytest.raises(ImportError, match=r"\.\[beam\]"):
        prepare_corpus(corpus, tmp_path, name="x", durations="exact", runner="beam", **_COMMON)
    assert not tmp_path.exists()  # said before any work


@pytest.mark.shared_data
def test_real_speech_of_the_dev_split_agrees(tmp_path, shared_data):
    """20 utterances spread over ../shared/data's dev speakers (as a manifest), pocketsphinx
    durations and harvest pitch (the defaults): the same dataset from both runners."""
    pytest.importorskip("pocketsphinx")
    listing = readers.read_corpus(shared_data / "speechocean762_adult" / "dev")
    subset = readers.CorpusListing(listing.root, "kaldi", listing.utterances[::20], [])
    folder = tmp_path / "dev20"
    folder.mkdir()
    assert readers.write_manifest(subset, folder / readers.MANIFEST_FILE) == 20
    opts = dict(progress=False, num_workers=2)
    local = prepare_corpus(folder, tmp_path / "data", name="local", **opts)
    beam = prepare_corpus(folder, tmp_path / "data", name="beam", runner="beam", **opts)
    assert beam.card["durations_source"] == {"pocketsphinx": 20}
    assert_same_dataset(local, beam)


def test_untranscribed_audio_is_transcribed_alike_by_both_runners(tmp_path, corpus):
    """A plain folder of audio without transcripts, ``transcribe=True``: the bundled recogniser
    fills the text in (close to what was said), silence and an impossible threshold are
    rejected with their reasons, and both runners write the same dataset."""
    pytest.importorskip("onnxruntime")
    from naturalspeech2_jax.evaluation.asr import word_error_rate

    folder = tmp_path / "untranscribed" / "spk"
    folder.mkdir(parents=True)
    listing = readers.read_corpus(corpus / "train")
    said = {}
    for u in listing.utterances[:3]:
        shutil.copy(u.audio_path, folder / u.audio_path.name)
        said[u.id] = u.text
    sf.write(folder / "silence.wav", np.zeros(16000), 16000)
    assert readers.detect_layout(folder.parent) == "folder"
    with pytest.raises(ValueError, match="survived"):  # without --transcribe: nothing to use
        prepare_corpus(folder.parent, tmp_path / "none", name="x", **_COMMON)
    opts = dict(transcribe=True, durations="auto", aligner="pocketsphinx", **_COMMON)
    pytest.importorskip("pocketsphinx")
    local = prepare_corpus(folder.parent, tmp_path / "data", name="local", **opts)
    beam = prepare_corpus(folder.parent, tmp_path / "data", name="beam", runner="beam", **opts)
    assert_same_dataset(local, beam)
    assert beam.card["transcription"]["untranscribed"] == 4
    assert beam.card["transcription"]["kept"] == 3
    assert "silent" in _reasons(beam)["silence"]
    heard = {
        r["id"].decode(): r["text"].decode() for r in _records(beam.dataset_dir)["untranscribed"]
    }
    assert set(heard) == set(said)
    assert word_error_rate(list(said.values()), [heard[k] for k in said]).wer < 0.5, heard
    # an impossible threshold: all three rejected, with the reason
    with pytest.raises(ValueError, match="3 transcription confidence below the threshold"):
        prepare_corpus(folder.parent, tmp_path / "data", name="strict", transcribe=True,
                       transcribe_min_confidence=-1e-6, **_COMMON)  # fmt: skip
