"""The restore benchmark: weights-only restore reads less than the whole train state, and the
weights are those the Trainer evaluates."""

from __future__ import annotations

import shutil

import pytest

from naturalspeech2_jax.benchmarks.restore import measure_restore
from tests.helpers import REPO

LEGACY = REPO / "tests" / "testdata" / "legacy_loop_test"


def test_params_mode_restores_the_weights_only(tmp_path):
    run = shutil.copytree(LEGACY, tmp_path / "run")
    trainer = measure_restore(str(run), "trainer")
    params = measure_restore(str(run), "params")
    assert trainer["task"] == params["task"] == "loop_test"
    # The loop_test run kept Adam (mu, nu per parameter) and an EMA: the state is > 3x the weights.
    assert 0 < 3 * params["restored_bytes"] < trainer["restored_bytes"]
    assert params["seconds"] > 0 and params["peak_rss_mb"] > 0


def test_bad_mode_and_missing_run_fail_in_one_sentence(tmp_path):
    with pytest.raises(ValueError, match="use one of"):
        measure_restore(str(tmp_path), "everything")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        measure_restore(str(tmp_path), "params")
