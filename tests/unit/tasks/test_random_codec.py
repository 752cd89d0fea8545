"""The random codec and its codes dataset: NS2 speed runs without a trained codec."""

from __future__ import annotations

import json

import numpy as np

from naturalspeech2_jax.data import pipeline
from naturalspeech2_jax.data.codes import CODEC_FILE
from naturalspeech2_jax.tasks import ns2, random_codec


def test_random_codec_dataset_and_assets_for_speed_runs(tmp_path):
    out = random_codec.random_codes_dataset(tmp_path)
    assert json.loads((out / CODEC_FILE).read_text())["codec_checkpoint"] == "random"
    source = pipeline.open_split(str(out), "train")
    ex = source[0]
    assert ex["codes"].shape == (len(ex["log_f0"]), 16)
    assert ex["codes"].min() >= 0 and ex["codes"].max() < 1024
    assert random_codec.random_codes_dataset(tmp_path) == out  # built once, then reused
    assets = ns2.codec_assets("random", str(out))
    assert assets.codebooks.shape == (16, 1024, 256) and assets.checkpoint == "random"
    assert assets.decode(np.zeros((2, 5, 256), np.float32)).shape == (2, 1000)
