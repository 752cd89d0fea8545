"""Inference: Synthesizer, singing, voice conversion, CLIs and the notebooks on a smoke checkpoint.

One session fixture (``smoke_pipeline``, conftest.py) runs ``launch/quickstart.py --preset=smoke``:
a smoke codec and a smoke NS2 trained for a few steps (noise comes out, but every shape, file and
error path is real).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf
from conftest import REPO

from naturalspeech2_jax.inference import SynthesisError, Synthesizer, singing
from naturalspeech2_jax.inference.synthesizer import CheckpointError, split_sentences
from naturalspeech2_jax.inference.voice_conversion import convert, rescale_durations

STEPS = 2  # sampler steps: shapes and files are under test here, not quality


@pytest.fixture(scope="module")
def synth(smoke_pipeline):
    return Synthesizer.from_checkpoint(smoke_pipeline / "ns2")


@pytest.fixture(scope="module")
def prompt(smoke_pipeline):
    prompts = sorted((smoke_pipeline / "samples").glob("*_prompt.wav"))
    assert prompts, "the quickstart's samples stage wrote no prompt"
    return str(prompts[0])


def test_quickstart_leaves_every_stage_and_resumes(smoke_pipeline):
    for d in ("data", "codec", "ns2", "samples", "eval"):
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
    assert proc.stderr.count("already done") == 7, proc.stderr[-2000:]


@pytest.fixture
def quickstart(monkeypatch):
    """launch/quickstart.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("quickstart", REPO / "launch" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "quickstart", module)  # its dataclasses look it up
    spec.loader.exec_module(module)
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


def test_synthesize_returns_audio_matching_the_durations(synth, prompt):
    out = synth.synthesize("Hello there, my friend.", prompt, steps=STEPS)
    assert out.sample_rate == 16000 and out.wav.dtype == np.float32
    assert np.all(np.isfinite(out.wav))
    assert len(out.wav) == int(out.durations.sum()) * 200
    assert len(out.phonemes) == len(out.durations) == len(out.alignment)
    assert out.phonemes[0] == out.phonemes[-1] == "<sil>"
    assert out.alignment[-1][2] == pytest.approx(out.durations.sum() / 80)
    assert len(out.log_f0) == out.durations.sum()


def test_given_durations_and_f0_are_honoured(synth, prompt):
    tokens = synth.phonemize("Sing a song.")
    durations = np.arange(len(tokens)) % 4 + 2
    f0 = np.full(int(durations.sum()), 220.0)
    out = synth.synthesize(phonemes=tokens, prompt_audio=prompt, durations=durations, f0=f0,
                           steps=STEPS)  # fmt: skip
    np.testing.assert_array_equal(out.durations, durations)
    assert len(out.wav) == durations.sum() * 200
    np.testing.assert_allclose(np.exp(out.log_f0), 220.0, rtol=1e-4)
    shifted = synth.synthesize(phonemes=tokens, prompt_audio=prompt, durations=durations, f0=f0,
                               steps=STEPS, pitch_shift=12)  # fmt: skip
    np.testing.assert_allclose(np.exp(shifted.log_f0), 440.0, rtol=1e-4)


def test_speed_changes_the_length(synth, prompt):
    text = "A somewhat longer sentence to time at two speeds."
    slow = synth.synthesize(text, prompt, steps=STEPS, speed=0.5)
    fast = synth.synthesize(text, prompt, steps=STEPS, speed=2.0)
    assert slow.durations.sum() > fast.durations.sum()


@contextlib.contextmanager
def count_compiles():
    """A list that receives one entry per XLA backend compilation inside the block."""
    compiles = []

    def listener(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_same_bucket_does_not_recompile(synth, prompt):
    synth.synthesize("First sentence here.", prompt, steps=STEPS, speed=1.0)
    with count_compiles() as compiles:
        synth.synthesize("A second one.", prompt, steps=STEPS, speed=1.3, pitch_shift=2.0)
    assert not compiles, "a second sentence of the same bucket recompiled"


def test_warmup_compiles_the_bucket_ahead(synth, prompt):
    tokens = synth.phonemize("Hi there.")
    durations = np.full(len(tokens), 100 // len(tokens))
    assert synth.warmup(tokens=(32,), frames=(128,), steps=STEPS) > 0
    with count_compiles() as compiles:
        out = synth.synthesize(phonemes=tokens, prompt_audio=prompt, durations=durations,
                               steps=STEPS)  # fmt: skip
    assert not compiles and len(out.wav) == durations.sum() * 200


def test_long_text_splits_at_sentences_and_batches(synth, prompt):
    assert split_sentences("One. Two! Three? Four") == ["One.", "Two!", "Three?", "Four"]
    text = "The first sentence. The second one is here! And a third?"
    whole = synth.synthesize(text, prompt, steps=STEPS)
    parts = synth.synthesize_batch(["The first sentence.", "The second one is here!",
                                    "And a third?"], prompt, steps=STEPS)  # fmt: skip
    assert whole.phonemes == [p for r in parts for p in r.phonemes]
    assert whole.phonemes.count("<sil>") == 6
    assert len(whole.wav) == sum(len(r.wav) for r in parts) == whole.durations.sum() * 200


def _write_scores(tmp_path):
    notes = [
        {"lyric": "twin", "pitch": "C4", "beats": 1}, {"lyric": "kle", "pitch": 60, "beats": 1},
        {"rest": True, "beats": 0.5}, {"lyric": "star", "pitch": "G4", "seconds": 0.6},
        {"lyric": "-", "pitch": "A4", "seconds": 0.4},
    ]  # fmt: skip
    (tmp_path / "s.json").write_text(json.dumps({"tempo": 120, "notes": notes}))
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120)))
    for i, (lyric, pitch) in enumerate((("la", 60), ("li", 62), ("lo", 64))):
        track.append(mido.MetaMessage("lyrics", text=lyric, time=240 if i == 2 else 0))
        track.append(mido.Message("note_on", note=pitch, velocity=80, time=0))
        track.append(mido.Message("note_off", note=pitch, velocity=0, time=480))
    mid.save(str(tmp_path / "s.mid"))
    xml = """<?xml version="1.0"?><score-partwise><part id="P1"><measure number="1">
      <attributes><divisions>2</divisions></attributes><sound tempo="60"/>
      <note><pitch><step>E</step><octave>4</octave></pitch><duration>2</duration>
        <lyric><text>hel</text></lyric></note>
      <note><pitch><step>F</step><alter>1</alter><octave>4</octave></pitch><duration>1</duration>
        <lyric><text>lo</text></lyric></note>
      <note><rest/><duration>1</duration></note></measure></part></score-partwise>"""
    (tmp_path / "s.musicxml").write_text(xml)


def test_scores_become_durations_and_pitch(tmp_path):
    _write_scores(tmp_path)
    js = singing.read_score(str(tmp_path / "s.json"))
    assert [n.pitch for n in js] == [60, 60, None, 67, 69]
    assert sum(n.seconds for n in js) == pytest.approx(2.25)  # 120 bpm: a beat is 0.5 s
    mid = singing.read_score(str(tmp_path / "s.mid"))
    assert [(n.lyric, n.pitch) for n in mid] == [("la", 60), ("li", 62), ("", None), ("lo", 64)]
    assert sum(n.seconds for n in mid) == pytest.approx(1.75)
    xml = singing.read_score(str(tmp_path / "s.musicxml"))
    assert [n.pitch for n in xml] == [64, 66, None] and sum(n.seconds for n in xml) == 2.0
    tokens, durations, f0 = singing.score_to_inputs(js)
    assert durations.sum() == len(f0) == 180 and len(tokens) == len(durations)
    assert tokens[0] == tokens[-1] == "<sil>" and "," in tokens
    assert f0[0] == pytest.approx(261.63, rel=1e-3) and f0[90] == 0.0  # the rest


def test_sing_lasts_the_score(synth, prompt, tmp_path):
    _write_scores(tmp_path)
    for name, seconds in (("s.json", 2.25), ("s.mid", 1.75), ("s.musicxml", 2.0)):
        out = singing.sing(synth, str(tmp_path / name), prompt, steps=STEPS)
        assert len(out.wav) == int(round(seconds * 80)) * 200, name
        assert np.all(np.isfinite(out.wav))


def test_voice_conversion_keeps_the_source_length(synth, prompt, smoke_pipeline):
    assert rescale_durations(np.array([1, 2, 3]), 12).tolist() == [2, 4, 6]
    source = sorted((smoke_pipeline / "samples").glob("*_ground_truth.wav"))[0]
    wav, _ = sf.read(str(source), dtype="float32")
    pairs = (smoke_pipeline / "samples" / "pairs.tsv").read_text().splitlines()
    header = pairs[0].split("\t")
    row = dict(zip(header, pairs[1].split("\t"), strict=True))
    out = convert(synth, str(source), prompt, text=row["target_text"], steps=STEPS)
    assert len(out.wav) == -(-len(wav) // 200) * 200
    assert np.all(np.isfinite(out.wav))


def test_voice_conversion_takes_the_aligners_durations(synth, prompt, smoke_pipeline):
    """With an aligner, the source's durations are its Viterbi path on the preparation's mel
    (phonemes as themselves, <sil>/<wb>/punctuation as the optional silence class). The aligner
    here is untrained: what is under test is that its path, not the predictor's, is used."""
    from flax import nnx

    from naturalspeech2_jax.align import aligner_task
    from naturalspeech2_jax.align import api as align_api
    from naturalspeech2_jax.inference import voice_conversion as vc
    from naturalspeech2_jax.text.g2p import SIL, is_phoneme

    pairs = (smoke_pipeline / "samples" / "pairs.tsv").read_text().splitlines()
    row = dict(zip(pairs[0].split("\t"), pairs[1].split("\t"), strict=True))
    source = sorted((smoke_pipeline / "samples").glob("*_ground_truth.wav"))[0]
    wav, _ = sf.read(str(source), dtype="float32")
    tokens = synth.phonemize(row["target_text"])
    ids = synth.encode_tokens(tokens)
    config = align_api._config_module().get_config("smoke_ctc")
    config.model.vocab_size = len(synth.vocab)
    config.data.optional_ids = (int(synth.encode_tokens([SIL])[0]),)
    aligner = align_api.Aligner(aligner_task.AlignerTask(config).build_model(nnx.Rngs(0)), config)
    frames = -(-len(wav) // 200)
    spoken = np.array([is_phoneme(t) for t in tokens])
    expected = aligner.align(
        vc._preparation_mel(wav, frames), np.where(spoken, ids, config.data.optional_ids[0]),
        min_frames=spoken.astype(np.int64),
    )  # fmt: skip
    assert expected.sum() == frames and np.all(expected[spoken] >= 1)
    out = convert(synth, str(source), prompt, text=row["target_text"], steps=STEPS, aligner=aligner)
    np.testing.assert_array_equal(out.durations, expected)
    assert len(out.wav) == frames * 200
    config.model.vocab_size = 2  # an aligner of another corpus: one clear sentence
    small = align_api.Aligner(aligner_task.AlignerTask(config).build_model(nnx.Rngs(0)), config)
    with pytest.raises(SynthesisError, match="aligner's vocabulary"):
        convert(synth, str(source), prompt, text=row["target_text"], steps=STEPS, aligner=small)


def test_voice_conversion_with_pocketsphinx_durations(synth, prompt, smoke_pipeline):
    """aligner="pocketsphinx": the source's durations are pocketsphinx's alignment of it to its
    text (no corpus-trained aligner needed); with phonemes only it says it needs the text."""
    pytest.importorskip("pocketsphinx")
    from naturalspeech2_jax.inference import voice_conversion as vc
    from naturalspeech2_jax.text.g2p import is_phoneme

    pairs = (smoke_pipeline / "samples" / "pairs.tsv").read_text().splitlines()
    row = dict(zip(pairs[0].split("\t"), pairs[1].split("\t"), strict=True))
    source = sorted((smoke_pipeline / "samples").glob("*_ground_truth.wav"))[0]
    wav, _ = sf.read(str(source), dtype="float32")
    tokens = synth.phonemize(row["target_text"])
    frames = -(-len(wav) // 200)
    expected = vc.sphinx_align_source(wav, row["target_text"], tokens, frames)
    spoken = np.array([is_phoneme(t) for t in tokens])
    assert expected.sum() == frames and np.all(expected[spoken] >= 1)
    assert np.median(expected[spoken]) >= 2  # real phone lengths, not a one-frame pile-up
    out = convert(
        synth, str(source), prompt, text=row["target_text"], steps=STEPS, aligner="pocketsphinx"
    )
    np.testing.assert_array_equal(out.durations, expected)
    with pytest.raises(SynthesisError, match="pass text"):
        convert(synth, str(source), prompt, phonemes=tokens, steps=STEPS, aligner="pocketsphinx")


def test_errors_are_one_clear_sentence(synth, prompt, smoke_pipeline, tmp_path):
    with pytest.raises(SynthesisError, match="text is empty"):
        synth.synthesize("   ", prompt)
    with pytest.raises(SynthesisError, match="nothing pronounceable"):
        synth.synthesize("!!! ... ???", prompt)
    short = np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32)
    with pytest.raises(SynthesisError, match="at least 1 s"):
        synth.synthesize("Hello.", short)
    with pytest.raises(SynthesisError, match="silent"):
        synth.synthesize("Hello.", np.zeros(32000, np.float32))
    long = np.random.default_rng(0).normal(0, 0.1, 16000 * 8).astype(np.float32)
    assert len(synth.load_prompt(long)) == synth.prompt_frames * 200  # cropped with a warning
    with pytest.raises(CheckpointError, match="does not exist"):
        Synthesizer.from_checkpoint(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="not an NS2 run"):
        Synthesizer.from_checkpoint(smoke_pipeline / "codec")
    from naturalspeech2_jax.text.vocab import default_vocab

    other = default_vocab().extended(["q̃"])
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        Synthesizer.from_checkpoint(smoke_pipeline / "ns2", vocab=other)
    with pytest.raises(SynthesisError, match="not in the checkpoint's vocabulary"):
        synth.synthesize(phonemes=["<sil>", "q̃", "<sil>"], prompt_audio=prompt)


def test_cli_round_trip(smoke_pipeline, prompt, tmp_path):
    # The quickstart's samples stage compiled the same one-sentence programs into its cache.
    cache = str(smoke_pipeline / "xla_cache")
    env = dict(os.environ, XLA_FLAGS="", JAX_COMPILATION_CACHE_DIR=cache)
    out = tmp_path / "out.wav"
    # Relative paths, as a user types them (`--checkpoint work/quickstart/ns2`): Orbax itself
    # accepts only absolute ones.
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch" / "synthesize.py"), "--checkpoint", "ns2",
         "--text", "Hello world, bye now.", "--prompt", os.path.relpath(prompt, smoke_pipeline),
         "--out", str(out), "--steps", str(STEPS)], capture_output=True, text=True, env=env,
        cwd=str(smoke_pipeline),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    wav, sr = sf.read(str(out))
    alignment = json.loads((tmp_path / "out.alignment.json").read_text())["alignment"]
    assert sr == 16000 and len(wav) == round(alignment[-1]["end"] * 16000)
    assert out.with_suffix(".png").stat().st_size > 1000
    bad = subprocess.run(
        [sys.executable, str(REPO / "launch" / "synthesize.py"), "--checkpoint",
         str(tmp_path / "nope"), "--text", "Hi.", "--prompt", prompt, "--out", str(out)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert bad.returncode == 2 and "does not exist" in bad.stderr


@pytest.mark.parametrize("name", ["synthesize", "train_small"])
def test_notebooks_run(name, smoke_pipeline, prompt, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("NS2_CHECKPOINT", str(smoke_pipeline / "ns2"))
    monkeypatch.setenv("NS2_PROMPT", prompt)
    monkeypatch.setenv("NS2_STEPS", str(STEPS))
    monkeypatch.setenv("NS2_PRESET", "smoke")
    monkeypatch.setenv("NS2_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("NS2_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XLA_FLAGS", "")
    # The training notebook compiles the fixture's programs again: reuse its XLA cache.
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(smoke_pipeline / "xla_cache"))
    nb = nbformat.read(str(REPO / "colabs" / f"{name}.ipynb"), as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={
        "metadata": {"path": str(REPO / "colabs")}}).execute()  # fmt: skip
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("audio" in json.dumps(o.get("data", {})).lower() for o in outputs)


def test_guidance_needs_a_model_trained_with_condition_dropout():
    """guidance_scale != 1 on a model without an unconditional branch fails in one sentence."""
    import ml_collections

    from naturalspeech2_jax.models.ns2 import model_config

    cfg = ml_collections.ConfigDict({"model": model_config("smoke")})
    stats = {"mean": np.zeros(4), "std": np.ones(4)}
    synth = Synthesizer(None, None, None, stats, cfg, checkpoint="runs/plain")
    synth.check_guidance(1.0)
    with pytest.raises(SynthesisError, match=r"runs/plain was trained with neither"):
        synth.check_guidance(2.0)
    with pytest.raises(SynthesisError, match="cond_drop_prob"):  # before any model call
        synth.synthesize("hello", np.zeros(16000, np.float32), guidance_scale=2.0)
    cfg.model.cond_drop_prob = 0.2
    synth.check_guidance(2.0)
    cfg.model.cond_drop_prob, cfg.model.prompt_drop_prob = 0.0, 0.1
    synth.check_guidance(3.0)


def test_probe_diffusion_reads_the_trajectory_of_the_quickstart_model(smoke_pipeline, tmp_path):
    """launch/probe_diffusion.py on the smoke checkpoint: a row per probed step and the sample,
    finite latent errors, per-utterance records; guidance the model lacks is refused."""
    from launch import probe_diffusion

    data = smoke_pipeline / "codes" / "quickstart_codes" / "1.0.0"
    out = tmp_path / "probe.json"
    args = ["--checkpoint", str(smoke_pipeline / "ns2"), "--data", str(data), "--split",
            "heldout", "--limit", "2", "--steps", "6", "--probe_steps", "0,3,9",
            "--max_frames", "448", "--max_tokens", "96", "--out", str(out)]  # fmt: skip
    assert probe_diffusion.main(args) == 0
    result = json.loads(out.read_text())
    rows = result["guidance"]["1.0"]
    assert [r["step"] for r in rows] == [0, 3, "sample"]  # step 9 is past the 6 steps
    assert rows[0]["t"] == 1.0 and rows[1]["t"] < 1.0
    assert all(np.isfinite(r["rel_mse"]) and r["rel_mse"] > 0 for r in rows)
    assert len(result["utterances"]) == 2 and "| step |" in out.with_suffix(".md").read_text()
    assert probe_diffusion.main([*args[:-2], "--guidance", "2", "--out", str(out)]) == 2
