"""Codes datasets (``data.codes``) and finding them (``data.embedded.resolve_dataset_dir``)."""

from __future__ import annotations

import numpy as np
import pytest

from naturalspeech2_jax.data import codes, embedded
from tests.helpers import CB_SHAPE, ns2_config


def test_dataset_and_codec_errors_are_one_clear_sentence(ns2_codes_dataset, tmp_path, monkeypatch):
    dataset = ns2_codes_dataset
    monkeypatch.setenv("NS2_DATA_DIR", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="launch/quickstart.py --workdir="):
        embedded.resolve_dataset_dir(ns2_config(""), codes=True)
    # Once the quickstart registered its codes dataset, an empty dataset_dir finds it.
    embedded.register_codes_dataset("smoke", dataset, "/fake/codec_run")
    assert embedded.resolve_dataset_dir(ns2_config(""), codes=True) == dataset
    with pytest.raises(FileNotFoundError, match="not a prepared dataset"):
        embedded.resolve_dataset_dir(ns2_config(str(tmp_path)), codes=True)
    cfg = ns2_config(dataset)
    assert codes.codec_checkpoint(cfg, dataset) == "/fake/codec_run"
    cfg.codec.checkpoint = "/other/run"
    assert codes.codec_checkpoint(cfg, dataset) == "/other/run"
    with pytest.raises(FileNotFoundError, match="config.codec.checkpoint"):
        codes.codec_checkpoint(ns2_config(str(tmp_path)), str(tmp_path))


def test_eval_pairs_use_another_utterance_of_the_same_speaker():
    examples = [{"speaker": s} for s in ("a", "a", "b", "b", "b", "c")]
    pairs = codes.eval_pairs(examples, 4)
    assert len(pairs) == 4
    for t, p in pairs:
        assert examples[t]["speaker"] == examples[p]["speaker"]
        assert t != p or examples[t]["speaker"] == "c"
    assert {examples[t]["speaker"] for t, _ in pairs[:3]} == {"a", "b", "c"}


def test_training_source_skips_what_no_bucket_holds(ns2_codes_dataset):
    source, frames, tokens = codes.open_training_source(ns2_codes_dataset, ["train"], 40, 12)
    assert len(source) == len(frames) == len(tokens) > 0
    assert frames.max() <= 40 and tokens.max() <= 12 and frames.min() > 0
    for i in range(len(source)):
        ex = source[i]
        assert len(ex["log_f0"]) == frames[i] and len(ex["phonemes"]) == tokens[i]
    padded = codes.training_example(source[0], 48, 16)
    assert set(padded) == set(codes.BATCH_KEYS) and padded["codes"].dtype == np.int32
    assert padded["codes"].shape == (48, CB_SHAPE[0]) and padded["phonemes"].shape == (16,)
    with pytest.raises(ValueError, match="train_splits"):
        codes.open_training_source(ns2_codes_dataset, ["nosuch"], 40, 12)


def test_latent_from_codes_sums_one_entry_per_quantizer():
    codebooks = np.random.default_rng(0).normal(size=CB_SHAPE).astype(np.float32)
    ids = np.array([[1, 2, 3, 4], [0, 0, 15, 7]])
    z = codes.latent_from_codes(ids, codebooks)
    want = [sum(codebooks[j, row[j]] for j in range(CB_SHAPE[0])) for row in ids]
    np.testing.assert_allclose(z, np.stack(want), rtol=1e-6)
    assert codes.as_text(b"spk") == "spk" == codes.as_text("spk")
