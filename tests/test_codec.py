"""Codec: frame arithmetic, RVQ properties, GAN training through the generic loop, API and CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, load_config
from flax import nnx

from naturalspeech2_jax.data import pipeline
from naturalspeech2_jax.data.tfds_builder import write_dataset
from naturalspeech2_jax.models import codec_losses as L
from naturalspeech2_jax.models import codec_spectral, codec_task
from naturalspeech2_jax.models.codec import NeuralCodec
from naturalspeech2_jax.models.quantizer import ResidualVQ
from naturalspeech2_jax.train import loop

TRAIN_STEPS = 12


def tone_example(n_frames: int, seed: int) -> dict:
    """A harmonic tone with vibrato and a loudness envelope: learnable, speech-like structure."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames * 200) / 16000
    f0 = 110 + 60 * rng.random() + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.6 + 0.4 * np.sin(2 * np.pi * t))
    cuts = np.sort(rng.choice(np.arange(1, n_frames), 3, replace=False))
    return {
        "id": f"u{seed}",
        "text": "a",
        "speaker": "spk",
        "speaker_id": 0,
        "audio": (0.25 * x * 32767).astype(np.int16),
        "phonemes": rng.integers(1, 40, 4).astype(np.int32),
        "durations": np.diff(np.concatenate([[0], cuts, [n_frames]])).astype(np.int32),
        "log_f0": np.log(f0[::200]).astype(np.float32),
        "voiced": np.ones(n_frames, np.int8),
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # Train examples are exactly one crop long and fill one batch: every batch is the same
    # (shuffled) set of crops, so the loss curve measures fitting a fixed batch. Two training
    # splits (like the shared data's train + cathy) and held-out speakers.
    root = tmp_path_factory.mktemp("codec_data")
    crop = load_config("codec").data.crop_frames
    out = write_dataset(
        root,
        "codec_unit",
        {
            "train": lambda: (tone_example(crop, i) for i in range(5)),
            "cathy": lambda: (tone_example(crop, i) for i in range(5, 8)),
            "heldout": lambda: (tone_example(30 + 5 * i, 100 + i) for i in range(2)),
        },
    )
    (out / "vocab.json").write_text('{"version": "unit"}')
    (out / "speakers.json").write_text('["spk"]')
    return str(out)


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """A persistent XLA cache shared by this module's launch/train.py runs.

    The fixture's training and the no-data-argument run compile the same smoke step, evaluation
    and initialisation (same shapes, one device): the second run reads them from the cache
    instead of compiling again (most of this file's time on 2 CPU cores is XLA compilation).
    """
    return tmp_path_factory.mktemp("xla_cache")


def train_cli(workdir, cache, *flags: str) -> None:
    """``launch/train.py --config=configs/codec.py:smoke`` in a one-device subprocess."""
    argv = [
        sys.executable,
        str(REPO / "launch" / "train.py"),
        f"--config={REPO / 'configs' / 'codec.py'}:smoke",
        f"--workdir={workdir}",
        "--config.num_devices=1",
        "--config.log_every=1",
        *flags,
    ]
    env = dict(
        os.environ,
        XLA_FLAGS="",
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
    )
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=workdir.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def trained(dataset, compilation_cache, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("codec_run") / "run"
    train_cli(
        workdir,
        compilation_cache,
        f"--config.data.dataset_dir={dataset}",
        "--config.data.train_splits=train,cathy",
        f"--config.total_steps={TRAIN_STEPS}",
        f"--config.eval_every={TRAIN_STEPS}",
        f"--config.checkpoint_every={TRAIN_STEPS}",
        "--config.async_checkpoints=False",
    )
    return workdir


def metrics_of(workdir) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------ shapes
def jit_build(ctor):
    """Construct an NNX module inside one jit (eager init compiles one kernel per tensor)."""
    graphdef, _ = nnx.split(nnx.eval_shape(ctor))
    return nnx.merge(graphdef, jax.jit(lambda: nnx.split(ctor())[1])())


@pytest.mark.parametrize(
    "kwargs",
    [dict(channels=2, dilations=(1,)), dict(kind="spectral", channels=16, layers=(1, 1))],
    ids=["wave", "spectral"],
)
def test_frames_are_200_samples_and_round_trip_lengths(kwargs):
    codec = jit_build(lambda: NeuralCodec(**kwargs, rngs=nnx.Rngs(0)))
    assert codec.hop == 200 and codec.codebooks.shape == (16, 1024, 256)
    wav = jnp.asarray(np.random.default_rng(0).normal(size=(2, 1600)) * 0.1, jnp.float32)

    @nnx.jit
    def run(codec, wav):
        codes = codec.encode(wav)
        z = codec.latent(codes)
        return codes, z, codec.decode(z), codec(wav)

    codes, z, audio, out = run(codec, wav)
    assert codes.shape == (2, 8, 16) and codes.dtype == jnp.int32
    assert z.shape == (2, 8, 256) and audio.shape == (2, 1600)
    assert out["audio"].shape == (2, 1600) and out["codes"].shape == (2, 8, 16)
    np.testing.assert_array_equal(out["codes"], codes)  # eval forward == encode
    np.testing.assert_allclose(out["z"], z, atol=1e-5)  # latent(codes) == quantized latent
    with pytest.raises(ValueError, match="multiple of the hop"):
        codec.encode(wav[:, :1599])


def test_frame_stft_is_centred_on_each_hop_and_inverts_exactly():
    rng = np.random.default_rng(0)
    wav = jnp.asarray(rng.normal(size=(2, 4000)) * 0.1, jnp.float32)
    spec = codec_spectral.frame_stft(wav, 800, 200)
    assert spec.shape == (2, 20, 401)
    # Frame t is the Hann-windowed 800 samples centred on hop t (reflect-padded by 300).
    padded = np.pad(np.asarray(wav), ((0, 0), (300, 300)), mode="reflect")
    t = 7
    expected = np.fft.rfft(padded[:, 200 * t : 200 * t + 800] * L.hann(800), axis=-1)
    np.testing.assert_allclose(np.asarray(spec[:, t]), expected, rtol=1e-4, atol=1e-3)
    back = codec_spectral.frame_istft(spec, 800, 200)
    np.testing.assert_allclose(np.asarray(back), np.asarray(wav), atol=1e-5)
    with pytest.raises(ValueError, match="multiple of hop"):
        codec_spectral.frame_stft(wav, 700, 200)


def test_spectral_codec_fits_a_tone_within_a_few_dozen_steps():
    """The frame-rate codec learns fast: 40 Adam steps on two tones cut the mel loss by half."""
    import optax

    codec = jit_build(
        lambda: NeuralCodec(kind="spectral", channels=32, layers=(2, 2), num_quantizers=4,
                            codebook_size=64, quantizer_dropout=0.0, rngs=nnx.Rngs(0))
    )  # fmt: skip
    wav = jnp.asarray(
        np.stack([tone_example(40, i)["audio"] for i in range(2)]) / 32768.0, jnp.float32
    )
    opt = nnx.Optimizer(codec, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(codec, opt, wav):
        def loss_fn(codec):
            y = codec(wav, train=True, update_codebooks=False)["audio"]
            return L.multi_scale_mel_loss(wav, y, (256, 1024), 64)

        loss, grads = nnx.value_and_grad(loss_fn)(codec)
        opt.update(codec, grads)
        return loss

    losses = [float(step(codec, opt, wav)) for _ in range(40)]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses


# ------------------------------------------------------------------------------ RVQ
@nnx.jit(static_argnames="update")
def vq_call(vq, x, n_active=None, rng=None, update=False):
    return vq(x, n_active=n_active, rng=rng, update=update)


def _initialised_vq(x: jax.Array, **kw) -> ResidualVQ:
    nq, k = kw.pop("nq", 16), kw.pop("k", 64)
    vq = jit_build(lambda: ResidualVQ(nq, k, x.shape[-1], rngs=nnx.Rngs(0), **kw))
    vq_call(vq, x, rng=jax.random.key(1), update=True)  # first batch initialises codebooks
    assert int(vq.initialized[...]) == 1
    return vq


def test_codebook_vector_quantizes_to_itself_with_zero_residual():
    x = jax.random.normal(jax.random.key(0), (4, 64, 8))
    vq = _initialised_vq(x, kmeans_iters=2)
    idx = jnp.array([3, 17, 40, 63])
    entries = vq.codebook[0][idx][None]  # [1, 4, D]: latents equal to codebook-0 entries
    zq, codes, aux = vq_call(vq, entries, n_active=1)
    np.testing.assert_array_equal(codes[0, :, 0], idx)
    np.testing.assert_allclose(zq, entries, atol=1e-6)  # residual after quantizer 0 is zero
    assert float(aux["commit_loss"]) < 1e-10
    np.testing.assert_allclose(vq.decode_codes(codes[..., :1]), entries, atol=1e-6)


def test_dead_code_is_replaced_by_a_batch_residual():
    x = jax.random.normal(jax.random.key(0), (2, 32, 8))
    vq = _initialised_vq(x, nq=2, k=16, decay=0.5, dead_code_threshold=0.5)
    far = jnp.full((8,), 1e3)  # a code no residual is ever near: its usage decays to 0
    vq.codebook[...] = vq.codebook[...].at[0, 5].set(far)
    vq.cluster_size[...] = vq.cluster_size[...].at[0, 5].set(0.0)
    _, _, aux = vq_call(vq, x, rng=jax.random.key(2), update=True)
    assert float(aux["dead_codes_replaced"]) >= 1
    new = np.asarray(vq.codebook[0, 5])
    rows = np.asarray(x).reshape(-1, 8)
    assert np.min(np.abs(rows - new).max(-1)) < 1e-5  # now one of the batch's residuals
    assert float(vq.cluster_size[0, 5]) >= 1.0


def test_quantizer_dropout_prefixes_decode_and_error_falls_with_k():
    x = jax.random.normal(jax.random.key(0), (8, 128, 8))
    vq = _initialised_vq(x, kmeans_iters=5)
    codes = nnx.jit(lambda vq, x: vq.encode(x))(vq, x)
    errors = []
    for k in range(1, 17):
        z = vq.decode_codes(codes[..., :k])
        assert z.shape == x.shape
        errors.append(float(jnp.mean((x - z) ** 2)))
        # The training path with k active quantizers decodes to the same latent.
        zq, _, _ = vq_call(vq, x, n_active=jnp.int32(k))
        np.testing.assert_allclose(zq, z, atol=1e-4)
    assert np.all(np.isfinite(errors))
    assert errors[15] < errors[7] < errors[3] < errors[0] < float(jnp.mean(x**2))
    assert sum(b < a for a, b in zip(errors, errors[1:], strict=False)) >= 13


def test_codec_quantizer_dropout_samples_1_to_16():
    codec = nnx.eval_shape(lambda: NeuralCodec(channels=2, dilations=(1,), rngs=nnx.Rngs(0)))
    keys = jax.random.split(jax.random.key(0), 200)
    ns = set(np.asarray(jax.jit(jax.vmap(codec.sample_n_quantizers))(keys)).tolist())
    assert ns == set(range(1, 17))


# ------------------------------------------------------------------------------ losses/metrics
def test_stft_and_mel_match_librosa():
    librosa = pytest.importorskip("librosa")
    x = np.random.default_rng(0).normal(size=(1, 3200)).astype(np.float32)
    ours = np.asarray(L.stft(jnp.asarray(x), 256, 64))[0]
    ref = librosa.stft(x[0], n_fft=256, hop_length=64, window="hann", pad_mode="reflect").T
    np.testing.assert_allclose(ours, ref, atol=1e-3)
    fb = librosa.filters.mel(sr=16000, n_fft=512, n_mels=40, htk=True).T
    np.testing.assert_allclose(L.mel_filterbank(512, 40), fb, atol=1e-6)


def test_quality_metrics_come_from_the_evaluation_package():
    pytest.importorskip("pesq")
    x = tone_example(80, 0)["audio"] / 32768.0
    noise = np.random.default_rng(0).normal(size=x.shape) * 0.05
    same, noisy = codec_task.quality_metrics(x, x), codec_task.quality_metrics(x, x + noise)
    assert set(same) == set(codec_task.METRICS)
    assert same["mel_distance"] == 0.0 and same["si_sdr"] > 80 and same["stoi"] > 0.99
    assert noisy["pesq"] < same["pesq"] and 0 < noisy["si_sdr"] < 30
    assert codec_task.bitrate_kbps(8) == pytest.approx(6.4)


def test_paper_preset_has_about_27m_generator_parameters():
    counts = loop.param_counts(load_config("codec", "paper"))
    generator = counts["encoder"] + counts["decoder"]
    assert abs(generator - 27e6) / 27e6 < 0.1
    assert counts["total"] == generator + counts["discriminators"]


def test_data_settings_and_clear_errors(dataset):
    config = load_config("codec")
    assert config.data.embedded_size == "smoke" and config.data.eval_split == "heldout"
    assert load_config("codec", "tiny").data.embedded_size == "default"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        codec_task.resolve_dataset_dir(load_config("codec", **{"data.dataset_dir": "/nope/1.0.0"}))
    assert len(codec_task.open_splits(dataset, "train, cathy")) == 8
    with pytest.raises(ValueError, match="train_splits"):
        codec_task.open_splits(dataset, "train,nosuch")


# ------------------------------------------------------------------------------ training
def test_gan_training_reduces_reconstruction_loss(trained):
    rows = [m for m in metrics_of(trained) if "generator/mel_loss" in m]
    mel = [m["generator/mel_loss"] for m in rows]
    assert len(mel) == TRAIN_STEPS
    assert np.mean(mel[-3:]) < 0.85 * np.mean(mel[:3]), mel
    last = rows[-1]
    assert last["discriminator/loss"] > 0 and last["generator/adv_loss"] > 0  # GAN active
    assert 1 <= last["generator/vq/n_quantizers"] <= 16
    assert last["generator/vq/perplexity"] > 1


def test_evaluation_writes_samples_metrics_and_latent_stats(trained):
    evals = [m for m in metrics_of(trained) if "eval/mel_distance_q16" in m]
    assert evals
    last = evals[-1]
    for k in (4, 8, 16):
        for name in ("pesq", "stoi", "mel_distance", "si_sdr"):
            assert f"eval/{name}_q{k}" in last
        assert np.isfinite(last[f"eval/mel_distance_q{k}"])
        assert np.isfinite(last[f"eval/si_sdr_q{k}"])
    step_dir = trained / "samples" / f"step_{TRAIN_STEPS}"
    assert (step_dir / "ex0_mel.png").stat().st_size > 0
    wav, sr = sf.read(step_dir / "ex0_q16.wav")
    assert sr == 16000 and len(wav) in (30 * 200, 35 * 200)  # held-out utterances
    # finalize() stored the latent statistics beside the checkpoint.
    stats = np.load(trained / "latent_stats.npz")
    assert stats["mean"].shape == (256,) and np.all(stats["std"] > 0)


# ------------------------------------------------------------------------------ API and CLI
def _cli():
    spec = importlib.util.spec_from_file_location("codec_cli", REPO / "launch" / "codec.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_round_trip_and_errors(trained, tmp_path, capsys):
    cli = _cli()
    n_in = int(22050 * 1.234)  # an odd rate and length: not whole frames
    t = np.arange(n_in) / 22050
    sf.write(tmp_path / "in.wav", 0.3 * np.sin(2 * np.pi * 220 * t), 22050)
    ck, p = str(trained), lambda name: str(tmp_path / name)
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
    from naturalspeech2_jax.codec_api import Codec, load_audio

    codec = Codec.from_checkpoint(trained)
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


def test_encode_dataset_adds_codes_that_match_the_api(trained, dataset, tmp_path):
    from naturalspeech2_jax.codec_api import CODEC_FILE, Codec, load_latent_stats

    cli = _cli()
    out = tmp_path / "coded" / "1.0.0"
    assert cli.main(["encode-dataset", "--checkpoint", str(trained), dataset, str(out)]) == 0
    codec = Codec.from_checkpoint(trained)
    assert codec.latent_stats is not None and codec.codebooks.shape == (16, 1024, 256)
    info = json.loads((out / CODEC_FILE).read_text())
    assert info["codec_checkpoint"] == str(trained.resolve()) and info["codec_step"] == TRAIN_STEPS
    assert (out / "vocab.json").read_text() == '{"version": "unit"}'
    for split in ("train", "cathy", "heldout"):
        src, coded = pipeline.open_split(dataset, split), pipeline.open_split(out, split)
        assert len(coded) == len(src) and info["splits"][split] == len(src)
        np.testing.assert_array_equal(
            pipeline.frame_lengths(out, split), pipeline.frame_lengths(dataset, split)
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
    assert cli.main(["encode-dataset", "--checkpoint", str(trained), dataset, str(out)]) == 2


def test_smoke_training_with_no_data_argument(tmp_path, trained, compilation_cache):
    """The documented command on a fresh clone: the embedded corpus is built on first use."""
    workdir = tmp_path / "run"
    train_cli(workdir, compilation_cache, "--config.total_steps=2", "--config.eval_every=2")
    evals = [m for m in metrics_of(workdir) if "eval/pesq_q16" in m]
    assert evals and (workdir / "latent_stats.npz").exists()
    assert json.loads((workdir / "config.json").read_text())["data"]["dataset_dir"] == ""


def test_evaluate_codec_table_on_a_dataset_split(trained, dataset, tmp_path):
    pytest.importorskip("pesq")
    spec = importlib.util.spec_from_file_location("evaluate_cli", REPO / "launch" / "evaluate.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "codec.json"
    argv = ["codec", "--checkpoint", str(trained), "--data", dataset, "--split", "heldout"]
    assert cli.main(argv + ["--n_quantizers", "4,16", "--limit", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    codec_rows = [r for r in rows if r["system"] == "codec"]
    assert [r["setting"] for r in codec_rows] == ["4 quantizers", "16 quantizers"]
    assert codec_rows[0]["kbps"] == pytest.approx(3.2) and codec_rows[0]["n_files"] == 1
    assert "| codec | 16 quantizers | 12.80 |" in out.with_suffix(".md").read_text()
