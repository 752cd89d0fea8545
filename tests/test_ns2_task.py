"""The "ns2" task through the generic loop, on a small fake codes dataset and a random codec."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import load_config

from naturalspeech2_jax.data import tfds_builder
from naturalspeech2_jax.models import ns2_task
from naturalspeech2_jax.train import loop
from naturalspeech2_jax.train.checkpoint import Checkpointer
from naturalspeech2_jax.train.metrics import read_metrics

CB_SHAPE = (4, 16, 16)  # quantizers, codes, latent dim of the fake codec


def _fake_codes_dataset(root, seed=0):
    """Two splits of short utterances (speakers s0..s3 train, h0..h1 held out) with codes."""
    rng = np.random.default_rng(seed)
    codes_dtype = tfds_builder.features(CB_SHAPE[0])["codes"].np_dtype

    def utterances(speakers, per_speaker):
        def gen():
            for s, spk in enumerate(speakers):
                for u in range(per_speaker):
                    n_tok = int(rng.integers(8, 16))
                    dur = rng.integers(0, 8, n_tok).astype(np.int32)
                    dur[0] = max(dur[0], 1)
                    n = int(dur.sum())
                    yield {
                        "id": f"{spk}-{u}",
                        "text": "a short test sentence",
                        "speaker": spk,
                        "speaker_id": np.int32(s),
                        "audio": (1000 * rng.normal(size=n * 200)).astype(np.int16),
                        "phonemes": rng.integers(1, 40, n_tok).astype(np.int32),
                        "durations": dur,
                        "log_f0": (5.0 + 0.2 * rng.normal(size=n)).astype(np.float32),
                        "voiced": (rng.random(n) > 0.3).astype(np.int8),
                        "codes": rng.integers(0, CB_SHAPE[1], (n, CB_SHAPE[0])).astype(codes_dtype),
                    }

        return gen

    out = tfds_builder.write_dataset(
        root,
        "fake_codes",
        {"train": utterances(["s0", "s1", "s2", "s3"], 4), "heldout": utterances(["h0", "h1"], 2)},
        num_quantizers=CB_SHAPE[0],
    )
    (out / "codec.json").write_text(json.dumps({"codec_checkpoint": "/fake/codec_run"}))
    (out / "vocab.json").write_text(json.dumps({"version": "test", "tokens": ["<pad>"] * 40}))
    with (out / "latent_stats.npz").open("wb") as f:
        np.savez(f, mean=np.full(CB_SHAPE[2], 0.1, np.float32), std=np.full(CB_SHAPE[2], 2.0))
    return str(out)


def _fake_codec(checkpoint, dataset_dir=None):
    codebooks = np.random.default_rng(1).normal(size=CB_SHAPE).astype(np.float32)
    stats = ns2_task._read_stats(ns2_task.epath.Path(dataset_dir) / "latent_stats.npz")

    def decode(z):
        z = np.asarray(z)
        t = np.arange(z.shape[1] * 200) / 16000.0
        return np.broadcast_to(0.1 * np.sin(2 * np.pi * 200 * t), (z.shape[0], len(t))).copy()

    return ns2_task.CodecAssets(codebooks, stats, decode, checkpoint)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _fake_codes_dataset(tmp_path_factory.mktemp("data"))


def _config(dataset_dir, **kw):
    base = {
        "data.dataset_dir": dataset_dir,
        "codec.num_quantizers": CB_SHAPE[0],
        "codec.codebook_size": CB_SHAPE[1],
        "codec.latent_dim": CB_SHAPE[2],
        "async_checkpoints": False,
    }
    base.update(kw)
    return load_config("diffusion", "smoke", **base)


def test_smoke_trains_through_the_generic_loop_and_evaluates(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(ns2_task, "load_codec_assets", _fake_codec)
    # One device: the mesh/sharding paths are the loop's own tests; here the task is under test.
    config = _config(
        dataset, total_steps=3, eval_every=3, checkpoint_every=3, num_devices=1,
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


def test_batches_hold_only_what_the_loss_reads(dataset, monkeypatch):
    monkeypatch.setattr(ns2_task, "load_codec_assets", _fake_codec)
    task = ns2_task.NS2Task(_config(dataset))
    it = task.train_iterator(seed=0, local_batch_size=8, process_index=0, process_count=1)
    batch = next(it)
    assert set(batch) == set(ns2_task.BATCH_KEYS)
    fm, tm = batch["frame_mask"], batch["token_mask"]
    assert fm.shape[1] in (128, 256, 384) and tm.shape[1] in (32, 64, 96)
    np.testing.assert_array_equal((batch["durations"] * tm).sum(1), fm.sum(1))
    assert batch["codes"].shape == (*fm.shape, CB_SHAPE[0]) and batch["codes"].dtype == np.int32


def test_dataset_and_codec_errors_are_one_clear_sentence(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("NS2_DATA_DIR", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="launch/quickstart.py --workdir="):
        ns2_task.resolve_dataset_dir(_config(""))
    # Once the quickstart registered its codes dataset, an empty dataset_dir finds it.
    from naturalspeech2_jax.data import embedded

    embedded.register_codes_dataset("smoke", dataset, "/fake/codec_run")
    assert ns2_task.resolve_dataset_dir(_config("")) == dataset
    with pytest.raises(FileNotFoundError, match="not a prepared dataset"):
        ns2_task.resolve_dataset_dir(_config(str(tmp_path)))
    cfg = _config(dataset)
    assert ns2_task.codec_checkpoint(cfg, dataset) == "/fake/codec_run"
    cfg.codec.checkpoint = "/other/run"
    assert ns2_task.codec_checkpoint(cfg, dataset) == "/other/run"
    with pytest.raises(FileNotFoundError, match="config.codec.checkpoint"):
        ns2_task.codec_checkpoint(_config(str(tmp_path)), str(tmp_path))


def test_eval_pairs_use_another_utterance_of_the_same_speaker():
    examples = [{"speaker": s} for s in ("a", "a", "b", "b", "b", "c")]
    pairs = ns2_task.eval_pairs(examples, 4)
    assert len(pairs) == 4
    for t, p in pairs:
        assert examples[t]["speaker"] == examples[p]["speaker"]
        assert t != p or examples[t]["speaker"] == "c"
    assert {examples[t]["speaker"] for t, _ in pairs[:3]} == {"a", "b", "c"}
