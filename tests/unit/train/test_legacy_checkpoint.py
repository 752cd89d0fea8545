"""Checkpoints written before the restructure (issue 26) still restore: ``tests/testdata/
legacy_loop_test`` was written by the old code (its README names the commit), with the weights its
Trainer evaluated beside it."""

from __future__ import annotations

import shutil

import ml_collections
import numpy as np
import pytest
from flax import nnx

from naturalspeech2_jax.train import loop
from naturalspeech2_jax.train.restore import latest_step, restore_meta, restore_params
from naturalspeech2_jax.train.task import make_task
from tests.helpers import REPO
from tests.unit.train.test_restore import arrays, assert_same_arrays

LEGACY = REPO / "tests" / "testdata" / "legacy_loop_test"


@pytest.fixture
def legacy_run(tmp_path):
    """A copy of the legacy run (nothing may write into tests/testdata)."""
    return shutil.copytree(LEGACY, tmp_path / "legacy_loop_test")


def _config(workdir):
    return ml_collections.ConfigDict(restore_meta(workdir, latest_step(workdir))["config"])


def _npz(path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def test_restore_params_loads_a_pre_restructure_checkpoint(legacy_run):
    assert latest_step(legacy_run) == 4
    config = _config(legacy_run)
    assert config.task == "loop_test" and config.ema_decay > 0
    abstract = nnx.eval_shape(lambda: make_task(config).build_model(nnx.Rngs(0)))
    model, step = restore_params(legacy_run, abstract)
    assert step == 4
    assert_same_arrays(arrays(model), _npz(legacy_run / "eval_weights.npz"))
    raw, _ = restore_params(legacy_run, abstract, ema=False)
    assert_same_arrays(arrays(raw), _npz(legacy_run / "raw_weights.npz"))


def test_the_trainer_resumes_a_pre_restructure_checkpoint(legacy_run):
    """The new loop restores the whole old train state (optimizer, EMA, data position) too."""
    config = _config(legacy_run)
    trainer = loop.Trainer(config, legacy_run)
    state = trainer.restore_or_init(None)
    trainer.checkpointer.close()
    assert int(state.step) == 4
    assert_same_arrays(arrays(trainer.eval_model(state)), _npz(legacy_run / "eval_weights.npz"))
