"""Synthesizer, singing and voice conversion on the quickstart's smoke checkpoint (the session's
``smoke_pipeline``: a smoke codec and a smoke NS2 trained for a few steps; noise comes out, but
every shape, file and error path is real)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from naturalspeech2_jax.inference import SynthesisError, Synthesizer, singing
from naturalspeech2_jax.inference.synthesizer import CheckpointError, split_sentences
from naturalspeech2_jax.inference.voice_conversion import convert, rescale_durations
from tests.helpers import SYNTH_STEPS as STEPS
from tests.helpers import load_config, write_scores

pytestmark = pytest.mark.slow  # the session's quickstart (smoke_pipeline): minutes


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


def test_long_text_splits_at_sentences_and_batches(synth, prompt):
    assert split_sentences("One. Two! Three? Four") == ["One.", "Two!", "Three?", "Four"]
    text = "The first sentence. The second one is here! And a third?"
    whole = synth.synthesize(text, prompt, steps=STEPS)
    parts = synth.synthesize_batch(["The first sentence.", "The second one is here!",
                                    "And a third?"], prompt, steps=STEPS)  # fmt: skip
    assert whole.phonemes == [p for r in parts for p in r.phonemes]
    assert whole.phonemes.count("<sil>") == 6
    assert len(whole.wav) == sum(len(r.wav) for r in parts) == whole.durations.sum() * 200


def test_sing_lasts_the_score(synth, prompt, tmp_path):
    write_scores(tmp_path)
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

    from naturalspeech2_jax.align import api as align_api
    from naturalspeech2_jax.align.models import build_aligner
    from naturalspeech2_jax.inference import voice_conversion as vc
    from naturalspeech2_jax.text.g2p import SIL, is_phoneme

    pairs = (smoke_pipeline / "samples" / "pairs.tsv").read_text().splitlines()
    row = dict(zip(pairs[0].split("\t"), pairs[1].split("\t"), strict=True))
    source = sorted((smoke_pipeline / "samples").glob("*_ground_truth.wav"))[0]
    wav, _ = sf.read(str(source), dtype="float32")
    tokens = synth.phonemize(row["target_text"])
    ids = synth.encode_tokens(tokens)
    config = load_config("aligner", "smoke_ctc")
    config.model.vocab_size = len(synth.vocab)
    config.data.optional_ids = (int(synth.encode_tokens([SIL])[0]),)
    aligner = align_api.Aligner(build_aligner(config, nnx.Rngs(0)), config)
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
    small = align_api.Aligner(build_aligner(config, nnx.Rngs(0)), config)
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
