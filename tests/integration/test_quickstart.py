"""launch/quickstart.py: the smoke pipeline's stages and resume (the session's ``smoke_pipeline``),
the evaluation extras it checks first, and its --durations flag."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_quickstart_leaves_every_stage_and_resumes(smoke_pipeline):
    for d in ("data", "codec", "ns2", "samples", "eval", "export"):
        assert (smoke_pipeline / d).is_dir(), d
    assert (smoke_pipeline / "eval" / "report.json").exists()
    assert list((smoke_pipeline / "samples").glob("*_generated.png"))
    # A second run skips every finished stage (seconds, no training).
    env = dict(os.environ, XLA_FLAGS="", NS2_DATA_DIR=str(smoke_pipeline / "cache"))
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch" / "quickstart.py"), f"--workdir={smoke_pipeline}",
         "--preset=smoke"], capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("already done") == 8, proc.stderr[-2000:]


@functools.cache
def _load_quickstart():
    """launch/quickstart.py executed once per process: it defines absl flags at import, and a
    second execution raises DuplicateFlagError whenever the new module object happens to reuse the
    freed one's id (absl's re-import check compares ids), which made CI fail by chance."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("quickstart", REPO / "launch" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["quickstart"] = module  # its dataclasses look it up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def quickstart(monkeypatch):
    """launch/quickstart.py as a module (it is a script, not part of the package)."""
    module = _load_quickstart()
    monkeypatch.setitem(sys.modules, "quickstart", module)
    return module


def test_quickstart_names_missing_evaluation_extras_before_training(
    tmp_path, monkeypatch, quickstart
):
    """A plain ``pip install -e .`` lacks torch and moonshine: fail at once, not after 20 min."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    tiny, smoke = quickstart.Options(preset="tiny"), quickstart.Options(preset="smoke")
    assert quickstart.missing_eval_modules(tmp_path, tiny) == ["torch"]
    assert quickstart.missing_eval_modules(tmp_path, smoke) == []  # smoke: no ASR, no speaker
    (tmp_path / "eval.done").write_text("{}")
    assert quickstart.missing_eval_modules(tmp_path, tiny) == []  # finished: nothing to import


def test_quickstart_durations_flag_reaches_the_data_stage(tmp_path, monkeypatch, quickstart):
    """--durations=aligner aligns even the embedded corpus (whose exact timings then score the
    aligner); auto keeps its exact timings, and a real corpus gets what prepare_data chooses."""
    from naturalspeech2_jax.data import prepare

    calls = []
    monkeypatch.setattr(
        prepare, "prepare_corpus",
        lambda corpus, out, **kw: calls.append((str(corpus), kw)) or prepare.PrepareResult(out, {}),
    )  # fmt: skip
    for durations in ("auto", "aligner", "exact"):
        quickstart.stage_data(tmp_path, quickstart.Options(durations=durations))
        quickstart.stage_data(tmp_path, quickstart.Options(corpus="/c", durations=durations))
    embedded = [kw["durations"] for c, kw in calls if c != "/c"]
    real = [kw["durations"] for c, kw in calls if c == "/c"]
    assert embedded == ["exact", "aligner", "exact"] and real == ["auto", "aligner", "exact"]


def test_shared_data_flag_links_the_corpora_and_transcribes(tmp_path, monkeypatch, quickstart):
    """--shared_data: the corpus stage writes the split folders (native hold-out apart), the data
    stage prepares all of them with transcription, and training never sees the hold-outs."""
    from naturalspeech2_jax.data import prepare
    from naturalspeech2_jax.inference import codes_dataset
    from tests.unit.data.test_shared_corpus import _fake_shared

    shared = _fake_shared(tmp_path / "shared")
    opts = quickstart.Options(preset="real", shared_data=str(shared))
    with pytest.raises(FileNotFoundError, match="lists 8 readers: holding out 25 leaves none"):
        quickstart.stage_corpus(tmp_path / "w", opts)
    monkeypatch.setitem(quickstart.QUICKSTART["real"], "native_heldout", 3)
    corpus = quickstart.run_stage(tmp_path / "w", "corpus", opts)
    assert len(corpus["heldout_speakers"]) == 3 and corpus["native_speakers"] == 5
    calls = []
    monkeypatch.setattr(
        prepare, "prepare_corpus",
        lambda corpus, out, **kw: calls.append((corpus, kw)) or prepare.PrepareResult(out, {}),
    )  # fmt: skip
    quickstart.stage_data(tmp_path / "w", opts)
    ((corpora, kw),) = calls
    assert [c.rsplit("/", 1)[1] for c in corpora] == [
        "speechocean762_adult", "cathy", "native", "native_heldout"]  # fmt: skip
    assert kw["transcribe"] and kw["max_edge_silence"] == 0.2
    splits = ["cathy", "dev", "native", "native_heldout", "train"]
    monkeypatch.setattr(codes_dataset, "dataset_info", lambda d: ({}, splits))
    assert quickstart._splits("D") == ("cathy,native,train", "dev")


@pytest.mark.slow
def test_real_recipe_samples_and_eval_stages(smoke_pipeline, tmp_path, monkeypatch, quickstart):
    """The real preset's samples and eval on the smoke models: evaluate.py's pairs, voice
    conversion scored by similarity, the codec beside Opus with its codebook usage."""
    w = tmp_path / "w"
    w.mkdir()
    for stage in ("data", "codes"):
        (w / f"{stage}.done").write_text((smoke_pipeline / f"{stage}.done").read_text())
    for run in ("ns2", "codec"):
        (w / run).symlink_to(smoke_pipeline / run)
    smoke = quickstart.QUICKSTART["smoke"]
    preset = dict(
        smoke, samples=dict(count=2, sampler="dpm++2m", steps=2, pairs="prepared"),
        conversion=dict(count=2, steps=2), codec_eval=dict(limit=2, quantizers=(4, 16)),
        eval=dict(asr=(), speaker=True, dnsmos=False),
    )  # fmt: skip
    monkeypatch.setitem(quickstart.QUICKSTART, "smoke", preset)
    opts = quickstart.Options(preset="smoke")
    done = quickstart.run_stage(w, "samples", opts)
    assert len(list((w / "samples").glob("*_generated.wav"))) == 2
    assert len(list((w / "samples" / "conversion").glob("*_converted.wav"))) == 2
    summary = quickstart.run_stage(w, "eval", opts)
    assert 0 <= summary["conversion/closer_to_target"] <= 1 and summary["conversion/count"] == 2
    assert -1 <= summary["generated/speaker_similarity"] <= 1
    assert summary["codec/codec/4 quantizers/kbps"] == pytest.approx(3.2)
    codec_md = (w / "eval" / "codec.md").read_text()
    assert "## Codebook usage" in codec_md and "| 16 |" in codec_md
    assert (w / "eval" / "conversion.md").exists() and done["conversions"].endswith(".tsv")


def test_same_utterance_samples_continue_the_prompt(synth, smoke_pipeline, tmp_path):
    """The native hold-out's pairs: prompt = an utterance's start, target = its continuation."""
    from naturalspeech2_jax.data.pipeline import open_split
    from naturalspeech2_jax.evaluation.corpus import read_pair_list, snap_prompt_to_phonemes
    from naturalspeech2_jax.inference.samples import write_same_utterance_samples

    codes = __import__("json").loads((smoke_pipeline / "codes.done").read_text())["dataset_dir"]
    path = write_same_utterance_samples(
        synth, codes, "heldout", tmp_path, prompt_seconds=1.0, min_target_seconds=0.3, steps=2
    )
    pairs = read_pair_list(path)
    source = open_split(codes, "heldout")
    assert 0 < len(pairs) <= len(source)
    first = next(source[i] for i in range(len(source)))
    durations = [int(d) for d in first["durations"]]
    _, _, span = snap_prompt_to_phonemes(durations, 0.0, 1.0)
    pair = pairs[0]
    assert pair.ground_truth_durations == tuple(durations[len(span) :])
    import soundfile as sf

    assert len(sf.read(pair.prompt_audio)[0]) == sum(span) * 200
    assert len(sf.read(pair.ground_truth_audio)[0]) == sum(durations[len(span) :]) * 200
    assert (tmp_path / f"{pair.pair_id}_generated.wav").exists()


@pytest.mark.slow
def test_export_check_scores_the_export_on_the_runs_pairs_and_seeds(
    smoke_pipeline, tmp_path, monkeypatch, quickstart
):
    """The real preset's export check: the exported model speaks the samples stage's pairs with
    the same sampler and seeds and is scored beside the run's row. A float32 export holds the
    run's weights, so it must give the run's speech and a difference of exactly 0."""
    import json
    import shutil

    from etils import epath

    from naturalspeech2_jax.evaluation import corpus, report, tts_eval
    from naturalspeech2_jax.inference import Synthesizer
    from naturalspeech2_jax.inference import samples as S
    from naturalspeech2_jax.inference.export import export_model

    monkeypatch.setitem(quickstart.QUICKSTART["smoke"], "eval", dict(asr=(), speaker=True))
    work = epath.Path(tmp_path / "w")
    (work / "eval").mkdir(parents=True)
    shutil.copy(smoke_pipeline / "samples.done", work / "samples.done")
    pairs = corpus.read_pair_list(json.loads((work / "samples.done").read_text())["pairs"])
    q = quickstart.QUICKSTART["smoke"]["samples"]
    run_dir = S.write_pair_samples(Synthesizer.from_checkpoint(smoke_pipeline / "ns2"), pairs,
                                   work / "run_samples", sampler=q["sampler"],
                                   steps=q["steps"]).parent  # fmt: skip
    config = tts_eval.EvaluatorConfig(asr=[], speaker=True)
    run = quickstart.evaluate_written_samples(pairs, run_dir, config, tts_eval)
    report.write_json(run, work / "eval" / "report.json")

    model = export_model(smoke_pipeline / "ns2", tmp_path / "f32").out_dir
    got = quickstart._check_export(work, quickstart.Options(preset="smoke"), model, "float32")
    assert got == {"export_check/speaker_similarity": 0.0}, got
    written = sorted((work / "samples_export").glob("*_generated.wav"))
    assert len(written) == len(pairs) > 0
    for path in written:
        assert path.read_bytes() == (run_dir / path.name).read_bytes()
    md = (work / "eval" / "export.md").read_text()
    assert "| float32 (the run) |" in md and "| float32 (the export) |" in md
    assert json.loads((work / "eval" / "export.json").read_text())["difference"] == {
        "speaker_similarity": 0.0
    }
