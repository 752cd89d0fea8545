"""The codec's command lines end to end: launch/codec.py (encode, decode, resynth,
encode-dataset), launch/train.py with no data argument, launch/evaluate.py codec."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from naturalspeech2_jax.data import pipeline
from tests.helpers import CODEC_TRAIN_STEPS, codec_train_cli, load_script, metrics_of

pytestmark = pytest.mark.slow  # the session's trained codec (launch/train.py): minutes


def test_cli_round_trip_and_errors(trained_codec, tmp_path, capsys):
    cli = load_script("codec")
    n_in = int(22050 * 1.234)  # an odd rate and length: not whole frames
    t = np.arange(n_in) / 22050
    sf.write(tmp_path / "in.wav", 0.3 * np.sin(2 * np.pi * 220 * t), 22050)
    ck, p = str(trained_codec), lambda name: str(tmp_path / name)
    assert cli.main(["encode", "--checkpoint", ck, p("in.wav"), p("c.npy")]) == 0
    codes = np.load(tmp_path / "c.npy")
    n16 = round(n_in * 16000 / 22050)
    assert codes.shape == (-(-n16 // 200), 16) and codes.dtype == np.int32
    assert cli.main(["decode", "--checkpoint", ck, p("c.npy"), p("d.wav")]) == 0
    wav, sr = sf.read(tmp_path / "d.wav")
    assert sr == 16000 and len(wav) == codes.shape[0] * 200
    assert cli.main(["resynth", "--checkpoint", ck, p("in.wav"), p("r.wav")]) == 0
    wav, sr = sf.read(tmp_path / "r.wav")
    assert sr == 16000 and abs(len(wav) - n16) <= 1
    # The Python functions give the same result as the CLI.
    from naturalspeech2_jax.inference.codec import Codec, load_audio

    codec = Codec.from_checkpoint(trained_codec)
    np.testing.assert_array_equal(codec.encode(load_audio(tmp_path / "in.wav")), codes)
    capsys.readouterr()
    (tmp_path / "bad.wav").write_text("not audio")
    failures = {
        "missing.npy": ["decode", "--checkpoint", ck, p("missing.npy"), p("x.wav")],
        "bad.wav": ["resynth", "--checkpoint", ck, p("bad.wav"), p("x.wav")],
        "nocodec": ["encode", "--checkpoint", p("nocodec"), p("in.wav"), p("x.npy")],
        str(tmp_path): ["encode", "--checkpoint", str(tmp_path), p("in.wav"), p("x.npy")],
    }
    for name, argv in failures.items():
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and name in err and len(err.splitlines()) == 1, err


def test_encode_dataset_adds_codes_that_match_the_api(trained_codec, codec_dataset, tmp_path):
    from naturalspeech2_jax.data.codes import CODEC_FILE
    from naturalspeech2_jax.inference.codec import Codec, load_latent_stats

    cli = load_script("codec")
    out = tmp_path / "coded" / "1.0.0"
    argv = ["encode-dataset", "--checkpoint", str(trained_codec), codec_dataset, str(out)]
    assert cli.main(argv) == 0
    codec = Codec.from_checkpoint(trained_codec)
    assert codec.latent_stats is not None and codec.codebooks.shape == (16, 1024, 256)
    info = json.loads((out / CODEC_FILE).read_text())
    assert info["codec_checkpoint"] == str(trained_codec.resolve())
    assert info["codec_step"] == CODEC_TRAIN_STEPS
    assert (out / "vocab.json").read_text() == '{"version": "unit"}'
    for split in ("train", "cathy", "heldout"):
        src, coded = pipeline.open_split(codec_dataset, split), pipeline.open_split(out, split)
        assert len(coded) == len(src) and info["splits"][split] == len(src)
        np.testing.assert_array_equal(
            pipeline.frame_lengths(out, split), pipeline.frame_lengths(codec_dataset, split)
        )
        by_id = {coded[i]["id"]: coded[i] for i in range(len(coded))}
        for i in range(len(src)):
            ex = src[i]
            new = by_id[ex["id"]]
            n = pipeline.check_example(new)
            assert new["codes"].shape == (n, 16) and new["codes"].dtype == np.int32
            for key in ex:
                np.testing.assert_array_equal(new[key], ex[key])
            np.testing.assert_array_equal(new["codes"], codec.encode(ex["audio"] / 32768.0))
    stats = load_latent_stats(out)
    assert stats["mean"].shape == (256,) and stats["frames"] == 8 * 8  # train + cathy frames
    z = codec.latent(new["codes"])
    assert z.shape == (n, 256) and codec.decode(z).shape == (n * 200,)
    assert cli.main(argv) == 2  # the destination exists: refused


def test_smoke_training_with_no_data_argument(tmp_path, trained_codec, codec_xla_cache):
    """The documented command on a fresh clone: the embedded corpus is built on first use."""
    workdir = tmp_path / "run"
    codec_train_cli(workdir, codec_xla_cache, "--config.total_steps=2", "--config.eval_every=2")
    evals = [m for m in metrics_of(workdir) if "eval/pesq_q16" in m]
    assert evals and (workdir / "latent_stats.npz").exists()
    assert json.loads((workdir / "config.json").read_text())["data"]["dataset_dir"] == ""


def test_evaluate_codec_table_on_a_dataset_split(trained_codec, codec_dataset, tmp_path):
    pytest.importorskip("pesq")
    cli = load_script("evaluate")
    out = tmp_path / "codec.json"
    argv = ["codec", "--checkpoint", str(trained_codec), "--data", codec_dataset]
    argv += ["--split", "heldout"]
    assert cli.main(argv + ["--n_quantizers", "4,16", "--limit", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    codec_rows = [r for r in rows if r["system"] == "codec"]
    assert [r["setting"] for r in codec_rows] == ["4 quantizers", "16 quantizers"]
    assert codec_rows[0]["kbps"] == pytest.approx(3.2) and codec_rows[0]["n_files"] == 1
    assert "| codec | 16 quantizers | 12.80 |" in out.with_suffix(".md").read_text()
    # Codebook usage of all 16 quantizers, with the mel distance of every prefix of the stack.
    usage = json.loads(out.read_text())["codebook_usage"]
    assert [u["quantizer"] for u in usage] == list(range(1, 17))
    assert all(1 <= u["codes_used"] <= 1024 and u["mel_distance"] > 0 for u in usage)
    assert "## Codebook usage" in out.with_suffix(".md").read_text()
