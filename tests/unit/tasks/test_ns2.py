"""The "ns2" task through the generic loop, on a small fake codes dataset and a fake codec."""

from __future__ import annotations

import json

import numpy as np
import pytest
from etils import epath

from naturalspeech2_jax.data import codes
from naturalspeech2_jax.inference.codec import CodecAssets
from naturalspeech2_jax.tasks import ns2
from naturalspeech2_jax.train import loop
from naturalspeech2_jax.train.checkpoint import Checkpointer
from naturalspeech2_jax.train.metrics import read_metrics
from naturalspeech2_jax.train.task import make_task
from tests.helpers import CB_SHAPE, ns2_config


def _fake_codec(checkpoint, dataset_dir=None):
    """Stands in for ``tasks.ns2.codec_assets``: random codebooks, the dataset's statistics."""
    codebooks = np.random.default_rng(1).normal(size=CB_SHAPE).astype(np.float32)
    stats = codes.read_latent_stats(epath.Path(dataset_dir) / codes.LATENT_STATS_FILE)

    def decode(z):
        z = np.asarray(z)
        t = np.arange(z.shape[1] * 200) / 16000.0
        return np.broadcast_to(0.1 * np.sin(2 * np.pi * 200 * t), (z.shape[0], len(t))).copy()

    return CodecAssets(codebooks, stats, decode, checkpoint)


@pytest.mark.slow
def test_smoke_trains_through_the_generic_loop_and_evaluates(
    ns2_codes_dataset, tmp_path, monkeypatch
):
    monkeypatch.setattr(ns2, "codec_assets", _fake_codec)
    # One device: the mesh/sharding paths are the loop's own tests; here the task is under test.
    config = ns2_config(
        ns2_codes_dataset, total_steps=3, eval_every=3, checkpoint_every=3, num_devices=1,
        **{"mesh.data": 1},
    )  # fmt: skip
    loop.train(config, tmp_path)
    rows = [m for m in read_metrics(tmp_path) if "model/loss" in m]
    assert len(rows) == 3 and all(np.isfinite(r["model/loss"]) for r in rows)
    for key in ("model/data", "model/score", "model/ce_rvq", "model/duration_l1"):
        assert np.isfinite(rows[-1][key]), key
    evals = [m for m in read_metrics(tmp_path) if "eval/duration_l1_log" in m]
    assert evals and np.isfinite(evals[-1]["eval/length_ratio"])
    samples = tmp_path / "samples" / "step_3"
    names = {p.name for p in samples.iterdir()}
    for kind in ("generated.wav", "ground_truth.wav", "codec.wav", "prompt.wav", "mel.png"):
        assert any(n.endswith(kind) for n in names), (kind, names)
    assert any(n.endswith("pitch.png") for n in names)
    # Inference finds vocabulary, codec and statistics in the workdir and the checkpoint meta.
    assert json.loads((tmp_path / "vocab.json").read_text())["version"] == "test"
    assets = json.loads((tmp_path / "ns2_assets.json").read_text())
    assert assets["codec_checkpoint"] == "/fake/codec_run"
    meta = Checkpointer(tmp_path / "checkpoints", async_writes=False).restore_meta(3)
    assert meta["ns2"]["codec_checkpoint"] == "/fake/codec_run"
    assert len(meta["ns2"]["latent_stats"]["std"]) == CB_SHAPE[2]
    assert meta["ns2"]["vocab"]["version"] == "test"


def test_batches_hold_only_what_the_loss_reads(ns2_codes_dataset, monkeypatch):
    monkeypatch.setattr(ns2, "codec_assets", _fake_codec)
    task = make_task(ns2_config(ns2_codes_dataset))
    assert isinstance(task, ns2.NS2Task) and ns2.Task is ns2.NS2Task
    it = task.train_iterator(seed=0, local_batch_size=8, process_index=0, process_count=1)
    batch = next(it)
    assert set(batch) == set(codes.BATCH_KEYS)
    fm, tm = batch["frame_mask"], batch["token_mask"]
    assert fm.shape[1] in (128, 256, 384) and tm.shape[1] in (32, 64, 96)
    np.testing.assert_array_equal((batch["durations"] * tm).sum(1), fm.sum(1))
    assert batch["codes"].shape == (*fm.shape, CB_SHAPE[0]) and batch["codes"].dtype == np.int32


def test_random_codec_needs_no_dataset_and_takes_the_configured_shape():
    """``codec.checkpoint=random`` (speed runs, --compile_only): codebooks of the config's shape
    and no dataset lookup (dataset_dir points nowhere)."""
    task = ns2.NS2Task(ns2_config("/nowhere/1.0.0", **{"codec.checkpoint": "random"}))
    assert task.assets.codebooks.shape == CB_SHAPE and task.assets.checkpoint == "random"
    assert task.assets.decode(np.zeros((1, 3, CB_SHAPE[2]))).shape == (1, 600)
