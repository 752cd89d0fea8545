"""The TTS evaluation pipeline with plugged synthesizers and codecs, its checkpoint loaders, WER
rescoring and synthesis options."""

from __future__ import annotations

import json

import numpy as np
import pytest

from naturalspeech2_jax.evaluation import corpus, report
from tests.helpers import SR, needs, speechlike


def test_pipeline_with_a_plugged_synthesizer(tmp_path):
    """A fake synthesizer returning the ground truth exercises the generated-speech path."""
    needs("pocketsphinx", "jiwer", "resemblyzer", "torch", "pyworld")
    import soundfile as sf

    from naturalspeech2_jax.evaluation import tts_eval

    target, prompt = speechlike(2.0, 130.0, seed=4), speechlike(3.0, 135.0, seed=5)
    sf.write(tmp_path / "target.flac", target, SR)
    sf.write(tmp_path / "prompt.flac", prompt, SR)
    durations = [40, 40, 40, 40]  # 160 frames = 2 s at hop 200
    (tmp_path / "list.tsv").write_text(
        "prompt_audio\ttarget_text\tground_truth_audio\tground_truth_durations\n"
        f"prompt.flac\tHELLO WORLD\ttarget.flac\t{' '.join(map(str, durations))}\n"
    )
    pairs = corpus.read_pair_list(tmp_path / "list.tsv")
    assert pairs[0].ground_truth_durations == tuple(durations)
    calls = []

    def synthesize(text, prompt_wav):
        calls.append((text, prompt_wav.shape))
        return target, np.array(durations)

    config = tts_eval.EvaluatorConfig(asr=["pocketsphinx"], dnsmos=False)
    result = tts_eval.evaluate_tts(
        pairs, synthesize, codec_resynthesize=lambda wav: wav, config=config
    )
    assert calls == [("HELLO WORLD", (3 * SR,))]
    assert [r["system"] for r in result["records"]] == [
        "ground_truth",
        "ground_truth_codec",
        "generated",
    ]
    generated = result["records"][2]
    assert generated["pitch_pearson_vs_gt"] == pytest.approx(1.0)
    assert generated["duration_rmse_vs_gt"] == pytest.approx(0.0)
    gt_similarity = result["records"][0]["speaker_similarity"]
    assert generated["speaker_similarity"] == pytest.approx(gt_similarity, abs=1e-4)

    assert result["summary"]["system"] == "generated"
    for key in report.REQUIRED_SUMMARY_KEYS:
        assert key in result["summary"]
    assert set(result["timing"]["evaluators"]) >= {"asr:pocketsphinx", "speaker", "prosody"}
    report.write_json(result, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["system"] == "generated"


def test_degenerate_generated_speech_is_recorded_not_fatal(tmp_path):
    needs("pocketsphinx", "jiwer", "speechmos", "pyworld")
    import soundfile as sf

    from naturalspeech2_jax.evaluation import tts_eval

    sf.write(tmp_path / "t.flac", speechlike(2.0, seed=6), SR)
    (tmp_path / "l.tsv").write_text(
        "prompt_audio\ttarget_text\tground_truth_audio\nt.flac\tHI\tt.flac\n"
    )
    config = tts_eval.EvaluatorConfig(asr=["pocketsphinx"], speaker=False)
    result = tts_eval.evaluate_tts(
        corpus.read_pair_list(tmp_path / "l.tsv"),
        lambda text, prompt: (np.zeros(SR), None),
        None,
        config,
    )
    generated = result["records"][-1]
    assert generated["wer"] == 1.0 and result["summary"]["failures"] == 1
    assert any(e.startswith("dnsmos") for e in generated["errors"])  # silent audio has no MOS


def test_a_missing_checkpoint_is_one_clear_error():
    from naturalspeech2_jax.evaluation import tts_eval

    # Both loaders exist (inference.synthesizer, inference.codec): a bad directory is one sentence
    # naming the run that makes the checkpoint.
    with pytest.raises(FileNotFoundError, match="does not exist.*configs/diffusion.py"):
        tts_eval.load_from_checkpoint("synthesizer", "/nonexistent")
    with pytest.raises(FileNotFoundError, match="does not exist.*configs/codec.py"):
        tts_eval.load_from_checkpoint("codec", "/nonexistent")


def test_checkpoint_loaders_adapt_the_future_modules(monkeypatch):
    """The synthesizer and codec load through small interfaces: a Synthesizer class with
    from_checkpoint and synthesize(text, prompt) (optionally carrying its codec), and an
    inference.codec Codec with encode(wav, n_q) / decode_codes(codes)."""
    import sys
    import types

    from naturalspeech2_jax.evaluation import tts_eval

    class FakeCodec:
        hop = 200

        @classmethod
        def from_checkpoint(cls, path):
            return cls()

        def encode(self, wav, n_q=None):
            frames = -(-len(wav) // self.hop)
            return np.zeros((frames, n_q or 16), np.int32)

        def decode_codes(self, codes):
            return np.full(len(codes) * self.hop, codes.shape[1] / 100.0, np.float32)

    class FakeSynthesizer:
        codec = FakeCodec()

        @classmethod
        def from_checkpoint(cls, path):
            return cls()

        def synthesize(self, text, prompt_wav):
            return {"wav": np.zeros(len(text) * 200, np.float32), "durations": [1] * len(text)}

    module = types.ModuleType("fake_ns2_inference")
    module.Synthesizer, module.Codec = FakeSynthesizer, FakeCodec
    monkeypatch.setitem(sys.modules, "fake_ns2_inference", module)
    monkeypatch.setitem(tts_eval.LOADERS, "synthesizer", (("fake_ns2_inference", "Synthesizer"),))
    monkeypatch.setitem(
        tts_eval.LOADERS, "codec", (("no_such_module_x", "Codec"), ("fake_ns2_inference", "Codec"))
    )
    synthesize, codec = tts_eval.load_synthesizer_and_codec("/ckpt")
    wav, durations = synthesize("abc", np.zeros(100, np.float32))
    assert wav.shape == (600,) and durations.tolist() == [1, 1, 1]
    out = codec(np.ones(450, np.float32), 8)
    assert out.shape == (450,) and np.allclose(out, 0.08)  # trimmed; 8 quantizers kept
    resynth = tts_eval.load_from_checkpoint("codec", "/ckpt")
    assert np.allclose(resynth(np.ones(10, np.float32)), 0.16)


def test_rescore_recomputes_wer_from_stored_transcripts():
    needs("jiwer")
    from naturalspeech2_jax.evaluation import tts_eval

    records = [
        {"id": "a", "speaker": "s", "system": "ground_truth", "text": "I AM HERE",
         "hypothesis": "I'm here.", "wer": 0.67, "hypothesis_pocketsphinx": "i am there"},
        {"id": "b", "speaker": "s", "system": "ground_truth", "text": "WE WON'T GO",
         "hypothesis": "", "wer": 1.0, "hypothesis_pocketsphinx": "we will not go"},
    ]  # fmt: skip
    result = tts_eval.rescore_wer({"records": records, "summary": {"system": "ground_truth"}})
    assert [r["wer"] for r in records] == [0.0, 1.0]
    # corpus level: 4 errors / 7 words ("won't" reads "will not" on both sides)
    assert result["summary"]["wer"] == pytest.approx(4 / 7)
    assert result["summary"]["failures"] == 1
    assert result["summary"]["wer_pocketsphinx"] == pytest.approx(1 / 7)


def test_synthesis_options_reach_every_call():
    """``evaluate.py tts --sampler/--steps/--temperature`` become keyword arguments of each
    synthesize call; the result's shapes are normalised as without options."""
    from naturalspeech2_jax.evaluation import tts_eval

    calls = []

    class Recorder:
        def synthesize(self, text, prompt_wav, **options):
            calls.append(options)
            return np.ones(160, np.float64), [2, 3]

    fn = tts_eval.as_synthesize(Recorder(), sampler="euler", steps=7, temperature=0.5)
    wav, durations = fn("hi", np.zeros(16000, np.float32))
    assert calls == [{"sampler": "euler", "steps": 7, "temperature": 0.5}]
    assert wav.dtype == np.float32 and wav.shape == (160,) and durations.tolist() == [2, 3]
    tts_eval.as_synthesize(Recorder())("hi", np.zeros(16000, np.float32))
    assert calls[-1] == {}
