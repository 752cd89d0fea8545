"""The "codec" task: its metrics, sizes and data settings, and GAN training through the generic loop
(the session's ``trained_codec``: ``configs/codec.py:smoke`` run by launch/train.py)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

from naturalspeech2_jax.data import embedded, pipeline
from naturalspeech2_jax.models.codec import CodecGAN
from naturalspeech2_jax.tasks import codec as codec_task
from naturalspeech2_jax.train import loop
from naturalspeech2_jax.train.task import make_task
from tests.helpers import CODEC_TRAIN_STEPS, load_config, metrics_of, tone_example


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


def test_task_is_found_by_name_and_trains_the_codec_gan():
    config = load_config("codec")
    task = make_task(config)
    assert isinstance(task, codec_task.Task) and codec_task.Task is codec_task.CodecTask
    model = nnx.eval_shape(lambda: task.build_model(nnx.Rngs(0)))
    assert isinstance(model, CodecGAN)
    reference = nnx.eval_shape(lambda: CodecGAN(config, nnx.Rngs(0)))
    shapes = lambda m: jax.tree.map(lambda x: x.shape, nnx.state(m, nnx.Param))
    assert shapes(model) == shapes(reference)
    # The two parameter groups split the GAN: discriminators apart, the codec (generator) apart.
    groups = {g.name: g.filter for g in task.param_groups()}
    assert set(groups) == {"discriminator", "generator"}

    def count(filt):
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, filt)))

    counts = loop.param_counts(config)
    assert count(groups["discriminator"]) == counts["discriminators"] > 0
    assert count(groups["generator"]) == counts["total"] - counts["discriminators"] > 0


def test_data_settings_and_clear_errors(codec_dataset):
    config = load_config("codec")
    assert config.data.embedded_size == "smoke" and config.data.eval_split == "heldout"
    assert load_config("codec", "tiny").data.embedded_size == "default"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        embedded.resolve_dataset_dir(load_config("codec", **{"data.dataset_dir": "/nope/1.0.0"}))
    assert len(pipeline.open_splits(codec_dataset, "train, cathy")) == 8
    with pytest.raises(ValueError, match="train_splits"):
        pipeline.open_splits(codec_dataset, "train,nosuch")


# ------------------------------------------------------------------------------ training
@pytest.mark.slow
def test_gan_training_reduces_reconstruction_loss(trained_codec):
    rows = [m for m in metrics_of(trained_codec) if "generator/mel_loss" in m]
    mel = [m["generator/mel_loss"] for m in rows]
    assert len(mel) == CODEC_TRAIN_STEPS
    assert np.mean(mel[-3:]) < 0.85 * np.mean(mel[:3]), mel
    last = rows[-1]
    assert last["discriminator/loss"] > 0 and last["generator/adv_loss"] > 0  # GAN active
    assert 1 <= last["generator/vq/n_quantizers"] <= 16
    assert last["generator/vq/perplexity"] > 1


@pytest.mark.slow
def test_evaluation_writes_samples_metrics_and_latent_stats(trained_codec):
    evals = [m for m in metrics_of(trained_codec) if "eval/mel_distance_q16" in m]
    assert evals
    last = evals[-1]
    for k in (4, 8, 16):
        for name in ("pesq", "stoi", "mel_distance", "si_sdr"):
            assert f"eval/{name}_q{k}" in last
        assert np.isfinite(last[f"eval/mel_distance_q{k}"])
        assert np.isfinite(last[f"eval/si_sdr_q{k}"])
    step_dir = trained_codec / "samples" / f"step_{CODEC_TRAIN_STEPS}"
    assert (step_dir / "ex0_mel.png").stat().st_size > 0
    wav, sr = sf.read(step_dir / "ex0_q16.wav")
    assert sr == 16000 and len(wav) in (30 * 200, 35 * 200)  # held-out utterances
    # finalize() stored the latent statistics beside the checkpoint.
    stats = np.load(trained_codec / "latent_stats.npz")
    assert stats["mean"].shape == (256,) and np.all(stats["std"] > 0)
