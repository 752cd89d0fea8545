"""Tests of naturalspeech2_jax.evaluation and launch/evaluate.py (need the `eval` extra).

Recognisers, the speaker encoder and DNSMOS are loaded once per process (lazy singletons), so the
file stays well under two minutes on 2 cores. Tests that read ../shared/data skip when it is absent.
"""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib

import numpy as np
import pytest

from naturalspeech2_jax.evaluation import codec_metrics, corpus, prosody, report
from naturalspeech2_jax.evaluation.normalize_text import normalize_text, number_to_words

REPO = pathlib.Path(__file__).resolve().parents[1]
SR = 16_000


def _needs(*modules: str) -> None:
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[eval]')")


def _speechlike(seconds: float = 3.0, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """Voiced 'syllables' (harmonics of a gliding F0, 4 Hz envelope, pauses) plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    pitch = f0 * (1.0 + 0.15 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = np.clip(np.sin(2 * np.pi * 2.0 * t), 0.0, None) ** 0.5
    wav = 0.3 * voiced * envelope + 0.003 * rng.standard_normal(t.size)
    return (0.5 * wav / np.max(np.abs(wav))).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Text normalisation and WER


def test_number_to_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(21) == "twenty one"
    assert number_to_words(100) == "one hundred"
    assert (
        number_to_words(1234567)
        == "one million two hundred thirty four thousand five hundred sixty seven"
    )


def test_normalize_text_both_sides_agree():
    assert normalize_text("Author of the danger trail, Philip Steels, etc.") == (
        "author of the danger trail philip steels etc"
    )
    assert normalize_text("In 1984, 3 men paid 50%!") == (
        "in nineteen eighty four three men paid fifty percent"
    )
    assert normalize_text("the 21st time") == "the twenty first time"
    assert normalize_text("Don't 'quote' me") == "do not quote me"
    assert normalize_text("WE'RE SURE I'M RIGHT, WON'T WE") == "we are sure i am right will not we"
    assert normalize_text("It's Ann's") == "it's ann's"  # 's is ambiguous: kept
    assert normalize_text("twenty-one") == normalize_text("21")


def test_word_error_rate_counts():
    _needs("jiwer")
    from naturalspeech2_jax.evaluation.asr import word_error_rate

    result = word_error_rate("The cat sat on the mat.", "the cat sat on a mat")
    assert result.substitutions == 1 and result.reference_words == 6
    assert result.wer == pytest.approx(1 / 6)
    assert word_error_rate("a b c", "").wer == 1.0
    corpus_level = word_error_rate(["a b", "c d e f"], ["a b", "c x e f"])
    assert corpus_level.wer == pytest.approx(1 / 6)


# ---------------------------------------------------------------------------------------------
# Moonshine (onnxruntime) and pocketsphinx


def test_moonshine_vocabulary_is_read():
    _needs("moonshine_cpp")
    from naturalspeech2_jax.evaluation.asr import moonshine_model_dir, read_moonshine_vocabulary

    vocab = read_moonshine_vocabulary(moonshine_model_dir() / "tokenizer.bin")
    assert len(vocab) == 32000
    assert vocab[:3] == [b"<unk>", b"<s>", b"</s>"]
    assert vocab[3] == b"\x00" and vocab[258] == b"\xff"  # byte fallback tokens


def test_moonshine_transcribes_the_clip_shipped_in_its_wheel():
    """Needs no shared data: moonshine-cpp ships a recording of a well-known Beckett line."""
    _needs("moonshine_cpp", "onnxruntime", "jiwer")
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
    _needs("moonshine_cpp", "onnxruntime", "jiwer")
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
    _needs("pocketsphinx", "jiwer")
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


# ---------------------------------------------------------------------------------------------
# Evaluation models plugged in by path


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


def test_default_evaluators_load_and_cli_stops_on_a_missing_model(tmp_path):
    _needs("moonshine_cpp", "onnxruntime", "resemblyzer", "torch")
    from naturalspeech2_jax.evaluation import tts_eval

    loaded = tts_eval.load_evaluators(tts_eval.EvaluatorConfig(asr=["moonshine"], dnsmos=False))
    assert loaded["asr:moonshine"].name == "moonshine"
    assert type(loaded["speaker"]).__name__ == "SpeakerEncoder"  # resemblyzer, the default
    corpus_dir = _tiny_kaldi_corpus(tmp_path)
    base = ["tts", "--ground_truth_only", "--from_dir", str(corpus_dir), "--out"]
    cli = _evaluate_cli()
    assert cli.main(base + [str(tmp_path / "a.json"), "--asr", "whisper:/no/such"]) == 2
    assert cli.main(base + [str(tmp_path / "b.json"), "--speaker_model", "ecapa:/no/such"]) == 2
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "b.json").exists()


def _tiny_kaldi_corpus(root: pathlib.Path) -> pathlib.Path:
    import soundfile as sf

    folder = root / "corpus"
    (folder / "spk").mkdir(parents=True)
    for i in range(2):
        sf.write(folder / "spk" / f"u{i}.flac", _speechlike(1.0, seed=i), SR)
    (folder / "text").write_text("u0 HELLO\nu1 WORLD\n")
    (folder / "utt2spk").write_text("u0 spk\nu1 spk\n")
    return folder


# ---------------------------------------------------------------------------------------------
# Speaker similarity and DNSMOS


def test_identical_audio_has_similarity_one():
    _needs("resemblyzer", "torch")
    from naturalspeech2_jax.evaluation.speaker import speaker_similarity

    wav = _speechlike()
    assert speaker_similarity(wav, wav) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.shared_data
def test_same_voice_scores_higher_than_different_voices(shared_data):
    _needs("resemblyzer", "torch")
    from naturalspeech2_jax.evaluation.speaker import cosine_similarity, get_speaker_encoder

    encoder = get_speaker_encoder()
    cathy_a = encoder.embed(corpus.load_audio(shared_data / "cathy" / "arctic_a0010.flac"))
    cathy_b = encoder.embed(corpus.load_audio(shared_data / "cathy" / "arctic_a0020.flac"))
    dev = shared_data / "speechocean762_adult" / "dev"
    other = encoder.embed(corpus.load_audio(sorted((dev / "0157").glob("*.flac"))[0]))
    same = cosine_similarity(cathy_a, cathy_b)
    different = cosine_similarity(cathy_a, other)
    assert same > different + 0.1, (same, different)


def test_dnsmos_prefers_clean_speech():
    _needs("speechmos", "onnxruntime")
    from naturalspeech2_jax.evaluation.dnsmos import dnsmos

    clean = _speechlike(seconds=4.0)
    noisy = clean + 0.2 * np.random.default_rng(1).standard_normal(clean.size).astype(np.float32)
    clean_scores, noisy_scores = dnsmos(clean), dnsmos(np.clip(noisy, -1, 1))
    assert set(clean_scores) == {"ovrl", "sig", "bak", "p808"}
    assert all(1.0 <= v <= 5.0 for v in clean_scores.values())
    assert clean_scores["bak"] > noisy_scores["bak"] + 0.5


# ---------------------------------------------------------------------------------------------
# Prosody


def test_phoneme_level_statistics_match_hand_computation():
    f0 = np.array([100, 100, 0, 200, 200, 200, 0, 0, 150, 150], dtype=float)
    durations = np.array([3, 3, 4])
    pitch = prosody.phoneme_pitch(f0, durations)
    np.testing.assert_allclose(pitch, [100.0, 200.0, 150.0])
    # Same result from log-F0 with -inf on unvoiced frames.
    with np.errstate(divide="ignore"):
        log_f0 = np.log(f0)
    np.testing.assert_allclose(prosody.phoneme_pitch(log_f0, durations, log_f0=True), pitch)

    stats = prosody.prosody_stats(pitch, durations)
    # pitch {100, 200, 150}: mean 150, population std sqrt(5000/3), symmetric, m4/m2^2 = 1.5.
    assert stats["pitch_mean"] == pytest.approx(150.0)
    assert stats["pitch_std"] == pytest.approx(math.sqrt(5000 / 3))
    assert stats["pitch_skew"] == pytest.approx(0.0, abs=1e-12)
    assert stats["pitch_kurt"] == pytest.approx(-1.5)
    # durations {3, 3, 4}: mean 10/3, std sqrt(2)/3, skew 1/sqrt(2), excess kurtosis -1.5.
    assert stats["duration_mean"] == pytest.approx(10 / 3)
    assert stats["duration_std"] == pytest.approx(math.sqrt(2) / 3)
    assert stats["duration_skew"] == pytest.approx(1 / math.sqrt(2))
    assert stats["duration_kurt"] == pytest.approx(-1.5)


def test_unvoiced_phoneme_and_length_checks():
    pitch = prosody.phoneme_pitch(np.array([0, 0, 120, 130]), np.array([2, 2]))
    assert math.isnan(pitch[0]) and pitch[1] == pytest.approx(125.0)
    with pytest.raises(ValueError, match="sum"):
        prosody.phoneme_pitch(np.ones(20) * 100, np.array([3, 3]))


def test_prosody_vs_prompt_and_ground_truth():
    a = prosody.prosody_stats(np.array([100.0, 200.0, 150.0]), np.array([3, 3, 4]))
    b = prosody.prosody_stats(np.array([110.0, 210.0, 160.0]), np.array([3, 3, 4]))
    diff = prosody.prosody_vs_prompt(a, b)
    assert diff["pitch_mean_diff"] == pytest.approx(10.0)
    assert diff["pitch_std_diff"] == pytest.approx(0.0, abs=1e-9)
    assert diff["duration_mean_diff"] == pytest.approx(0.0)

    gt_pitch, gt_dur = np.array([100.0, 200.0, np.nan, 150.0]), np.array([3, 5, 2, 4])
    scores = prosody.prosody_vs_ground_truth(gt_pitch + 10.0, gt_dur + 1, gt_pitch, gt_dur)
    assert scores["pitch_pearson"] == pytest.approx(1.0)
    assert scores["pitch_rmse"] == pytest.approx(10.0)
    assert scores["duration_pearson"] == pytest.approx(1.0)
    assert scores["duration_rmse"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        prosody.prosody_vs_ground_truth(gt_pitch[:3], gt_dur[:3], gt_pitch, gt_dur)


def test_audio_only_variant_on_a_synthetic_tone():
    _needs("pyworld")
    t = np.arange(SR) / SR
    wav = np.concatenate([0.5 * np.sin(2 * np.pi * 200.0 * t), np.zeros(SR // 2)])
    f0 = prosody.extract_f0(wav)
    assert f0.size == wav.size // prosody.HOP
    assert np.median(f0[f0 > 0]) == pytest.approx(200.0, rel=0.02)
    np.testing.assert_array_equal(
        prosody.voiced_segments(np.array([0, 1, 1, 0, 1, 0, 1, 1, 1])), [2, 1, 3]
    )
    stats = prosody.audio_prosody_stats(wav)
    assert stats["pitch_mean"] == pytest.approx(200.0, rel=0.02)
    assert stats["pitch_std"] < 5.0


# ---------------------------------------------------------------------------------------------
# Codec metrics and Opus


def test_codec_metrics_identity_and_noise():
    _needs("pesq", "pystoi")
    ref = _speechlike()
    identity = codec_metrics.codec_metrics(ref, ref.copy())
    assert identity["pesq"] > 4.4
    assert identity["stoi"] > 0.99
    assert identity["mel_distance"] == pytest.approx(0.0, abs=1e-6)
    assert identity["si_sdr"] > 100.0
    # SI-SDR is scale-invariant; white noise at 10 dB SNR gives about 10 dB.
    assert codec_metrics.si_sdr(ref, 0.5 * ref) > 100.0
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(ref.size)
    noise *= np.sqrt(np.mean(ref**2) / np.mean(noise**2) / 10.0)
    noisy = codec_metrics.codec_metrics(ref, ref + noise)
    assert noisy["si_sdr"] == pytest.approx(10.0, abs=0.5)
    assert noisy["pesq"] < identity["pesq"] - 1.0
    assert noisy["stoi"] < identity["stoi"]
    assert noisy["mel_distance"] > 0.1


@pytest.mark.parametrize("backend", ["soundfile", "ffmpeg"])
def test_opus_roundtrip_reports_payload_bitrate(backend):
    from naturalspeech2_jax.evaluation import opus

    if not opus.opus_available(backend):
        pytest.skip(f"the {backend} Opus backend is unavailable (ffmpeg: apt-get install ffmpeg)")
    ref = _speechlike()
    low, low_kbps = opus.opus_roundtrip(ref, 6.0, backend=backend)
    high, high_kbps = opus.opus_roundtrip(ref, 24.0, backend=backend)
    assert low.shape == ref.shape and high.shape == ref.shape
    assert 2.0 < low_kbps < 8.0
    assert 12.0 < high_kbps < 30.0
    assert codec_metrics.mel_distance(ref, high) < codec_metrics.mel_distance(ref, low)


def test_codec_table_with_pluggable_codec():
    _needs("pesq", "pystoi")
    from naturalspeech2_jax.evaluation import opus

    wavs = [_speechlike(2.0, f0=120.0, seed=1), _speechlike(2.0, f0=210.0, seed=2)]
    opus_targets = [6.4] if opus.opus_available("soundfile") else []
    rows = codec_metrics.codec_table(
        wavs, lambda wav, n_quantizers: wav, n_quantizers=[8], opus_kbps=opus_targets
    )
    assert rows[0].system == "codec" and rows[0].kbps == pytest.approx(6.4)
    assert rows[0].pesq > 4.4 and rows[0].n_files == 2
    if opus_targets:
        assert rows[1].system == "opus" and rows[1].pesq < rows[0].pesq
    assert "| codec | 8 quantizers | 6.40 |" in codec_metrics.codec_table_markdown(rows)


# ---------------------------------------------------------------------------------------------
# Pairs, the pipeline and reports


def _write_corpus(root: pathlib.Path) -> None:
    import soundfile as sf

    lines, spk = [], []
    for s, speaker in enumerate(["spk_a", "spk_b"]):
        (root / speaker).mkdir(parents=True)
        for i in range(3):
            utt = f"{speaker}_{i}"
            sf.write(root / speaker / f"{utt}.flac", _speechlike(4.0, 110 + 60 * s, seed=i), SR)
            lines.append(f"{utt} HELLO WORLD NUMBER {i}")
            spk.append(f"{utt} {speaker}")
    (root / "text").write_text("\n".join(lines) + "\n")
    (root / "utt2spk").write_text("\n".join(spk) + "\n")


def test_pairs_use_another_utterance_of_the_same_speaker(tmp_path):
    _write_corpus(tmp_path)
    utts = corpus.read_kaldi_dir(tmp_path)
    assert len(utts) == 6 and utts[0].seconds == pytest.approx(4.0)
    pairs = corpus.make_pairs(utts, seed=3, limit=4)
    assert pairs == corpus.make_pairs(utts, seed=3, limit=4)
    assert {p.speaker for p in pairs} == {"spk_a", "spk_b"}  # round-robin over speakers
    for p in pairs:
        assert p.prompt_audio != p.ground_truth_audio
        assert pathlib.Path(p.prompt_audio).parent.name == p.speaker
        assert 0.0 <= p.prompt_start <= 1.0 and p.prompt_seconds == 3.0
    corpus.write_pair_list(pairs, tmp_path / "pairs.tsv")
    assert corpus.read_pair_list(tmp_path / "pairs.tsv") == pairs
    prompt = corpus.load_audio(pairs[0].prompt_audio, start=pairs[0].prompt_start, seconds=3.0)
    assert prompt.shape == (3 * SR,)


def test_pipeline_with_a_plugged_synthesizer(tmp_path):
    """A fake synthesizer returning the ground truth exercises the generated-speech path."""
    _needs("pocketsphinx", "jiwer", "resemblyzer", "torch", "pyworld")
    import soundfile as sf

    from naturalspeech2_jax.evaluation import tts_eval

    target, prompt = _speechlike(2.0, 130.0, seed=4), _speechlike(3.0, 135.0, seed=5)
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
    _needs("pocketsphinx", "jiwer", "speechmos", "pyworld")
    import soundfile as sf

    from naturalspeech2_jax.evaluation import tts_eval

    sf.write(tmp_path / "t.flac", _speechlike(2.0, seed=6), SR)
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


def test_prepared_dataset_gives_phoneme_level_prosody(tmp_path):
    """--from_prepared: prompts cut on phoneme boundaries, durations on both sides, the paper's
    phoneme-level statistics; the list written with --save_list reads back with its durations."""
    _needs("pyworld", "tensorflow_datasets")
    from naturalspeech2_jax.data.embedded import embedded_dataset_dir

    out = tmp_path / "r.json"
    argv = ["tts", "--ground_truth_only", "--from_prepared", embedded_dataset_dir("smoke")]
    argv += ["--split", "heldout", "--limit", "3", "--skip", "asr,speaker,dnsmos", "--no_plots"]
    argv += ["--out", str(out), "--save_list", str(tmp_path / "pairs.tsv")]
    assert _evaluate_cli().main(argv) == 0
    result = json.loads(out.read_text())
    assert result["summary"]["prosody_level"] == "phoneme"
    assert math.isfinite(result["summary"]["pitch_mean_diff"])
    assert math.isfinite(result["summary"]["duration_std_diff"])
    pairs = corpus.read_pair_list(tmp_path / "pairs.tsv")
    assert len(pairs) == 3
    for pair in pairs:
        assert pair.speaker != "" and pair.prompt_audio != pair.ground_truth_audio
        prompt = corpus.load_audio(pair.prompt_audio, start=pair.prompt_start,
                                   seconds=pair.prompt_seconds)  # fmt: skip
        assert len(prompt) == 200 * sum(pair.prompt_durations)
        target = corpus.load_audio(pair.ground_truth_audio)
        assert len(target) == 200 * sum(pair.ground_truth_durations)


def test_snap_prompt_to_phonemes():
    durations = [10] * 30  # 300 frames = 3.75 s
    start, seconds, span = corpus.snap_prompt_to_phonemes(durations, 0.13, 1.0)
    assert start == pytest.approx(0.25) and span == (10,) * 8 and seconds == pytest.approx(1.0)
    start, seconds, span = corpus.snap_prompt_to_phonemes(durations, 3.5, 1.0)
    assert start + seconds == pytest.approx(3.75) and sum(span) == 80  # moved back to fit
    start, seconds, span = corpus.snap_prompt_to_phonemes([5, 5], 0.0, 3.0)
    assert span == (5, 5)  # a short prompt utterance is taken whole


def test_a_missing_checkpoint_is_one_clear_error():
    from naturalspeech2_jax.evaluation import tts_eval

    # Both loaders exist (inference.synthesizer, codec_api): a bad directory is one sentence
    # naming the run that makes the checkpoint.
    with pytest.raises(FileNotFoundError, match="does not exist.*configs/diffusion.py"):
        tts_eval.load_from_checkpoint("synthesizer", "/nonexistent")
    with pytest.raises(FileNotFoundError, match="does not exist.*configs/codec.py"):
        tts_eval.load_from_checkpoint("codec", "/nonexistent")


def test_checkpoint_loaders_adapt_the_future_modules(monkeypatch):
    """The synthesizer and codec load through small interfaces: a Synthesizer class with
    from_checkpoint and synthesize(text, prompt) (optionally carrying its codec), and a codec_api
    Codec with encode(wav, n_q) / decode_codes(codes)."""
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
    _needs("jiwer")
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


def test_summary_markdown_and_plots(tmp_path):
    records = [
        {"id": "1", "speaker": "a", "system": "ground_truth", "wer": 0.0, "wer_errors": 0,
         "wer_words": 5, "speaker_similarity": 0.8, "dnsmos_ovrl": 3.0, "pitch_mean_diff": 10.0,
         "duration_mean_diff": 1.0},
        {"id": "2", "speaker": "b", "system": "ground_truth", "wer": 0.6, "wer_errors": 3,
         "wer_words": 5, "speaker_similarity": 0.6, "dnsmos_ovrl": float("nan"),
         "pitch_mean_diff": 20.0, "duration_mean_diff": 3.0},
    ]  # fmt: skip
    summary = report.summarize(records)
    assert summary["wer"] == pytest.approx(0.3)  # corpus level: 3 errors / 10 words
    assert summary["failures"] == 1
    assert summary["speaker_similarity"] == pytest.approx(0.7)
    assert summary["dnsmos_ovrl"] == pytest.approx(3.0)  # NaN ignored
    result = {
        "summary": {"system": "ground_truth", **summary},
        "systems": report.summarize_records(records),
        "records": records,
    }
    markdown = report.markdown_report(result)
    assert "| ground_truth | 2 | 0.300 |" in markdown
    paths = report.plot_report(result, tmp_path / "plots")
    assert all(pathlib.Path(p).stat().st_size > 1000 for p in paths) and len(paths) == 2
    report.write_json(result, tmp_path / "r.json")
    loaded = json.loads((tmp_path / "r.json").read_text())
    assert loaded["records"][1]["dnsmos_ovrl"] is None


# ---------------------------------------------------------------------------------------------
# CLI


def _evaluate_cli():
    spec = importlib.util.spec_from_file_location("evaluate_cli", REPO / "launch" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.shared_data
def test_cli_ground_truth_only_smoke(shared_data, tmp_path):
    _needs("moonshine_cpp", "onnxruntime", "pocketsphinx", "resemblyzer", "speechmos", "jiwer")
    out = tmp_path / "r.json"
    dev = shared_data / "speechocean762_adult" / "dev"
    argv = ["tts", "--ground_truth_only", "--from_dir", str(dev), "--limit", "2", "--out", str(out)]
    assert _evaluate_cli().main(argv) == 0
    result = json.loads(out.read_text())
    for key in report.REQUIRED_SUMMARY_KEYS:
        assert key in result["summary"], key
    assert result["summary"]["n"] == 2 and result["summary"]["system"] == "ground_truth"
    assert 0.0 <= result["summary"]["wer"] <= 1.0
    assert 0.3 < result["summary"]["speaker_similarity"] <= 1.0
    assert len(result["records"]) == 2
    assert out.with_suffix(".md").exists()
    assert (tmp_path / "r_plots" / "per_speaker.png").exists()


def test_cli_codec_opus_rows_and_missing_loader(tmp_path):
    _needs("pesq", "pystoi")
    import soundfile as sf

    (tmp_path / "ref").mkdir()
    for i in range(2):
        sf.write(tmp_path / "ref" / f"{i}.flac", _speechlike(2.0, 120.0 + 50 * i, seed=i), SR)
    cli = _evaluate_cli()
    out = tmp_path / "codec.json"
    argv = [
        "codec",
        "--reference_dir",
        str(tmp_path / "ref"),
        "--n_quantizers",
        "8",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    from naturalspeech2_jax.evaluation import opus

    if opus.opus_available("soundfile"):
        assert [r["system"] for r in rows] == ["opus"] and rows[0]["n_files"] == 2
    assert cli.main(argv + ["--checkpoint", str(tmp_path)]) == 2  # not a codec run


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
