"""Recognisers (moonshine, pocketsphinx, plugged models) and the word error rate. Tests that read
../shared/data skip when it is absent; those of a missing extra skip too."""

from __future__ import annotations

import importlib.util

import pytest

from naturalspeech2_jax.evaluation import corpus
from tests.helpers import needs


def test_word_error_rate_counts():
    needs("jiwer")
    from naturalspeech2_jax.evaluation.asr import word_error_rate

    result = word_error_rate("The cat sat on the mat.", "the cat sat on a mat")
    assert result.substitutions == 1 and result.reference_words == 6
    assert result.wer == pytest.approx(1 / 6)
    assert word_error_rate("a b c", "").wer == 1.0
    corpus_level = word_error_rate(["a b", "c d e f"], ["a b", "c x e f"])
    assert corpus_level.wer == pytest.approx(1 / 6)


def test_moonshine_vocabulary_is_read():
    needs("moonshine_cpp")
    from naturalspeech2_jax.evaluation.asr import moonshine_model_dir, read_moonshine_vocabulary

    vocab = read_moonshine_vocabulary(moonshine_model_dir() / "tokenizer.bin")
    assert len(vocab) == 32000
    assert vocab[:3] == [b"<unk>", b"<s>", b"</s>"]
    assert vocab[3] == b"\x00" and vocab[258] == b"\xff"  # byte fallback tokens


def test_moonshine_transcribes_the_clip_shipped_in_its_wheel():
    """Needs no shared data: moonshine-cpp ships a recording of a well-known Beckett line."""
    needs("moonshine_cpp", "onnxruntime", "jiwer")
    from naturalspeech2_jax.evaluation.asr import get_asr, moonshine_model_dir, word_error_rate

    clip = moonshine_model_dir().parents[1] / "test-data" / "beckett.wav"
    if not clip.exists():
        pytest.skip("moonshine-cpp no longer ships test-data/beckett.wav")
    wav = corpus.load_audio(clip)
    hypothesis = get_asr("moonshine").transcribe(wav)
    reference = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
    assert word_error_rate(reference, hypothesis).wer < 0.15, hypothesis


@pytest.mark.shared_data
def test_moonshine_wer_on_native_speech(shared_data):
    needs("moonshine_cpp", "onnxruntime", "jiwer")
    from naturalspeech2_jax.evaluation.asr import get_asr, word_error_rate

    lines = (shared_data / "cathy" / "text").read_text(encoding="utf-8").splitlines()
    texts = dict(line.split(" ", 1) for line in lines if line.strip())
    utts = ["arctic_a0003", "arctic_a0004", "arctic_a0005"]
    asr = get_asr("moonshine")
    hyps = [asr.transcribe(corpus.load_audio(shared_data / "cathy" / f"{u}.flac")) for u in utts]
    result = word_error_rate([texts[u] for u in utts], hyps)
    assert result.wer < 0.15, hyps


@pytest.mark.shared_data
def test_pocketsphinx_second_opinion(shared_data):
    needs("pocketsphinx", "jiwer")
    from naturalspeech2_jax.evaluation.asr import get_asr, word_error_rate

    wav = corpus.load_audio(shared_data / "cathy" / "arctic_a0001.flac")
    hypothesis = get_asr("pocketsphinx").transcribe(wav)
    # pocketsphinx is weak (about 25% WER on this speaker) but must be far from random.
    assert word_error_rate("Author of the danger trail, Philip Steels, etc.", hypothesis).wer < 0.5


def test_get_asr_rejects_unknown_names():
    from naturalspeech2_jax.evaluation.asr import get_asr
    from naturalspeech2_jax.evaluation.plugins import EvaluatorUnavailable

    with pytest.raises(EvaluatorUnavailable, match="Unknown ASR"):
        get_asr("no-such-recogniser")


def test_plugged_models_fail_with_one_sentence(tmp_path):
    from naturalspeech2_jax.evaluation.asr import get_asr
    from naturalspeech2_jax.evaluation.plugins import EvaluatorUnavailable
    from naturalspeech2_jax.evaluation.speaker import get_speaker_encoder

    def one_sentence(error):
        text = str(error.value)
        assert text.endswith(".") and text.count(". ") == 0 and "\n" not in text, text

    for spec in ("whisper:/no/such/model", "ctc:/no/such.onnx", "moonshine:/no/such/dir"):
        with pytest.raises(EvaluatorUnavailable, match="does not exist") as error:
            get_asr(spec)
        one_sentence(error)
    with pytest.raises(EvaluatorUnavailable, match="does not exist") as error:
        get_speaker_encoder("wavlm:/no/such/model")
    one_sentence(error)
    (tmp_path / "config.json").write_text('{"model_type": "whisper"}')
    if importlib.util.find_spec("transformers") is None:
        with pytest.raises(EvaluatorUnavailable, match="'transformers' package") as error:
            get_asr(str(tmp_path))  # a bare path: recognised as a Whisper directory
        one_sentence(error)
        with pytest.raises(EvaluatorUnavailable, match="'transformers' package"):
            get_speaker_encoder(f"wavlm:{tmp_path}")
    if importlib.util.find_spec("speechbrain") is None:
        (tmp_path / "hyperparams.yaml").write_text("")
        with pytest.raises(EvaluatorUnavailable, match="'speechbrain' package") as error:
            get_speaker_encoder(str(tmp_path))
        one_sentence(error)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EvaluatorUnavailable, match="Cannot tell which kind"):
        get_asr(str(empty))
    with pytest.raises(EvaluatorUnavailable, match="vocab.json or tokens.txt"):
        (empty / "model.onnx").write_bytes(b"")
        get_asr(f"ctc:{empty / 'model.onnx'}")


def test_ctc_greedy_decoding():
    from naturalspeech2_jax.evaluation.asr import CTCOnnxASR

    asr = CTCOnnxASR.__new__(CTCOnnxASR)
    asr._vocab = ["<pad>", "<s>", "|", "h", "i", "o"]
    asr._blank = 0
    # h h <pad> i | | <s> h o o <pad> o -> "hi hoo"
    assert asr.decode_ids([3, 3, 0, 4, 2, 2, 1, 3, 5, 5, 0, 5]) == "hi hoo"
