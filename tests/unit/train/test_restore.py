"""Parameters-only restore (``train/restore.py``): a run's EMA (else raw) weights and non-parameter
variables into a built or abstract model, with no optimizer and no Trainer; the same arrays the
Trainer evaluates. The codec's ``Codec.from_checkpoint`` restores its ``codec`` subtree."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from naturalspeech2_jax.tasks.loop_test import LoopTestTask
from naturalspeech2_jax.train import loop
from naturalspeech2_jax.train import state as state_lib
from naturalspeech2_jax.train.restore import (
    RestoreError,
    latest_step,
    restore_meta,
    restore_params,
)
from tests.helpers import load_config

STEPS = 6


def loop_config(**overrides):
    """loop_test smoke, checkpoints at steps 3 and 6, sharded over data x fsdp x model."""
    base = dict(total_steps=STEPS, log_every=1, checkpoint_every=3, async_checkpoints=False)
    base["mesh"] = dict(data=2, fsdp=2, model=2)
    base.update(overrides)
    return load_config("loop_test", "smoke", **base)


def arrays(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every variable of a model (parameters and the rest) by path, as numpy."""
    pure = nnx.to_pure_dict(nnx.state(model))
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
        for path, v in jax.tree_util.tree_flatten_with_path(pure)[0]
    }


def assert_same_arrays(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def abstract_model(config) -> nnx.Module:
    return nnx.eval_shape(lambda: LoopTestTask(config).build_model(nnx.Rngs(0)))


def trained_run(workdir, **overrides):
    """(config, trainer, final state) of a loop_test run trained in this process."""
    config = loop_config(**overrides)
    trainer = loop.Trainer(config, workdir)
    state = trainer.run()
    return config, trainer, state


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ema_run")
    return (workdir, *trained_run(workdir, ema_decay=0.5))


def test_restores_the_ema_weights_the_trainer_evaluates(ema_run):
    workdir, config, trainer, state = ema_run
    model, step = restore_params(workdir, abstract_model(config))
    assert step == STEPS == latest_step(workdir)
    got, want = arrays(model), arrays(trainer.eval_model(state))
    assert "target_mean" in got  # a non-parameter variable (nnx.BatchStat) comes back too
    assert_same_arrays(got, want)
    # The sharded (data x fsdp x model) checkpoint lands whole on one device by default.
    leaves = jax.tree.leaves(nnx.state(model))
    assert {len(x.sharding.device_set) for x in leaves} == {1}
    assert restore_meta(workdir, step)["config"]["task"] == "loop_test"


def test_ema_false_restores_the_raw_parameters(ema_run):
    workdir, config, trainer, state = ema_run
    model, _ = restore_params(workdir, abstract_model(config), ema=False)
    raw = state_lib.merge_model(trainer.graphdef, trainer.groups, state.params, state.rest)
    got = arrays(model)
    assert_same_arrays(got, arrays(raw))
    ema = arrays(trainer.eval_model(state))
    assert not np.allclose(got["up/kernel"], ema["up/kernel"])  # EMA and raw weights differ


def test_an_earlier_step_and_a_built_model(ema_run):
    workdir, config, trainer, state = ema_run
    built = LoopTestTask(config).build_model(nnx.Rngs(1))  # a real (not abstract) model works too
    model, step = restore_params(workdir, built, step=3)
    assert step == 3
    latest, _ = restore_params(workdir, abstract_model(config))
    early, last = arrays(model), arrays(latest)
    assert early.keys() == last.keys()
    assert not np.allclose(early["up/kernel"], last["up/kernel"])
    with pytest.raises(RestoreError, match="does not exist; pick a step"):
        restore_params(workdir, abstract_model(config), step=4)


def test_a_run_without_ema_restores_its_parameters(tmp_path):
    config, trainer, state = trained_run(tmp_path, ema_decay=0.0, total_steps=3)
    assert state.ema is None
    for ema in (True, False):
        model, step = restore_params(tmp_path, abstract_model(config), ema=ema)
        assert step == 3
        assert_same_arrays(arrays(model), arrays(trainer.eval_model(state)))


def test_a_model_of_another_size_is_refused_naming_the_shapes(ema_run):
    workdir, config, _, _ = ema_run
    other = abstract_model(loop_config(**{"model.hidden": 16}))
    with pytest.raises(RestoreError) as error:
        restore_params(workdir, other)
    # The first variable that differs: the conv's bias (32,) or kernel (3, 8, 32) vs hidden 16.
    assert error.match(
        r"conv/(bias has shape \(32,\) in .* but \(16,\)|kernel has shape \(3, 8, 32\) in .* "
        r"but \(3, 8, 16\)) in the model; build the model with the run's config"
    )


def test_an_empty_workdir_is_refused(tmp_path):
    model = abstract_model(loop_config())
    assert latest_step(tmp_path) is None
    with pytest.raises(RestoreError, match="holds no checkpoint; train the run first"):
        restore_params(tmp_path, model)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(RestoreError, match="holds no checkpoint"):
        restore_params(tmp_path, model)
    assert issubclass(RestoreError, FileNotFoundError)


@pytest.mark.slow
def test_codec_from_checkpoint_equals_the_trainers_codec(trained_codec):
    """``Codec.from_checkpoint`` restores the ``codec`` subtree of the CodecGAN alone: the same
    weights and EMA codebooks as the Trainer's evaluation model (which also holds the
    discriminators and, in its state, the optimizers)."""
    from naturalspeech2_jax.inference.codec import Codec, load_config

    codec = Codec.from_checkpoint(trained_codec)
    config = load_config(trained_codec)
    trainer = loop.Trainer(config, trained_codec)
    state = trainer.restore_or_init(None)
    trainer.checkpointer.close()
    assert codec.step == int(state.step)
    want = arrays(trainer.eval_model(state).codec)
    got = arrays(codec.model)
    assert any("codebook" in k for k in got)  # non-parameter variables of the quantizer
    assert_same_arrays(got, want)
