"""launch/evaluate.py end to end: ground truth only (tts), a prepared dataset (phoneme-level
prosody), codec rows against Opus, and stopping at once on a missing evaluation model."""

from __future__ import annotations

import json
import math
import pathlib

import pytest

from naturalspeech2_jax.evaluation import corpus, report
from tests.helpers import SR, load_script, needs, speechlike


def test_default_evaluators_load_and_cli_stops_on_a_missing_model(tmp_path):
    needs("moonshine_cpp", "onnxruntime", "resemblyzer", "torch")
    from naturalspeech2_jax.evaluation import tts_eval

    loaded = tts_eval.load_evaluators(tts_eval.EvaluatorConfig(asr=["moonshine"], dnsmos=False))
    assert loaded["asr:moonshine"].name == "moonshine"
    assert type(loaded["speaker"]).__name__ == "SpeakerEncoder"  # resemblyzer, the default
    corpus_dir = _tiny_kaldi_corpus(tmp_path)
    base = ["tts", "--ground_truth_only", "--from_dir", str(corpus_dir), "--out"]
    cli = load_script("evaluate")
    assert cli.main(base + [str(tmp_path / "a.json"), "--asr", "whisper:/no/such"]) == 2
    assert cli.main(base + [str(tmp_path / "b.json"), "--speaker_model", "ecapa:/no/such"]) == 2
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "b.json").exists()


def _tiny_kaldi_corpus(root: pathlib.Path) -> pathlib.Path:
    import soundfile as sf

    folder = root / "corpus"
    (folder / "spk").mkdir(parents=True)
    for i in range(2):
        sf.write(folder / "spk" / f"u{i}.flac", speechlike(1.0, seed=i), SR)
    (folder / "text").write_text("u0 HELLO\nu1 WORLD\n")
    (folder / "utt2spk").write_text("u0 spk\nu1 spk\n")
    return folder


def test_prepared_dataset_gives_phoneme_level_prosody(tmp_path):
    """--from_prepared: prompts cut on phoneme boundaries, durations on both sides, the paper's
    phoneme-level statistics; the list written with --save_list reads back with its durations."""
    needs("pyworld", "tensorflow_datasets")
    from naturalspeech2_jax.data.embedded import embedded_dataset_dir

    out = tmp_path / "r.json"
    argv = ["tts", "--ground_truth_only", "--from_prepared", embedded_dataset_dir("smoke")]
    argv += ["--split", "heldout", "--limit", "3", "--skip", "asr,speaker,dnsmos", "--no_plots"]
    argv += ["--out", str(out), "--save_list", str(tmp_path / "pairs.tsv")]
    assert load_script("evaluate").main(argv) == 0
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


@pytest.mark.shared_data
def test_cli_ground_truth_only_smoke(shared_data, tmp_path):
    needs("moonshine_cpp", "onnxruntime", "pocketsphinx", "resemblyzer", "speechmos", "jiwer")
    out = tmp_path / "r.json"
    dev = shared_data / "speechocean762_adult" / "dev"
    argv = ["tts", "--ground_truth_only", "--from_dir", str(dev), "--limit", "2", "--out", str(out)]
    assert load_script("evaluate").main(argv) == 0
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
    needs("pesq", "pystoi")
    import soundfile as sf

    (tmp_path / "ref").mkdir()
    for i in range(2):
        sf.write(tmp_path / "ref" / f"{i}.flac", speechlike(2.0, 120.0 + 50 * i, seed=i), SR)
    cli = load_script("evaluate")
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
