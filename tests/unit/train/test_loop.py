"""The generic training loop in process: meshes, resume, NaN guard, accumulation, EMA, init_from,
profiling, mixed precision (launch/train.py in subprocesses, kill/resume, multi-process:
tests/integration/test_train_cli.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from naturalspeech2_jax.tasks.loop_test import LoopTestTask
from naturalspeech2_jax.train import loop
from naturalspeech2_jax.train.metrics import read_metrics
from tests.helpers import load_config

MESHES = {
    "1 device": (1, dict(data=1, fsdp=1, model=1)),
    "8 data": (8, dict(data=8, fsdp=1, model=1)),
    "4 data x 2 model": (8, dict(data=4, fsdp=1, model=2)),
    "2 data x 2 fsdp x 2 model": (8, dict(data=2, fsdp=2, model=2)),
}


def smoke_config(**overrides):
    base = dict(total_steps=12, log_every=1, checkpoint_every=100, async_checkpoints=False)
    base.update(overrides)
    return load_config("loop_test", "smoke", **base)


def losses(workdir, key="model/loss"):
    return np.array([m[key] for m in read_metrics(workdir) if key in m])


def params_of(state):
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
        for path, v in jax.tree_util.tree_flatten_with_path(state.params)[0]
    }


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """12 steps on 1 device: the trajectory every other layout must reproduce."""
    workdir = tmp_path_factory.mktemp("ref")
    state = loop.train(smoke_config(num_devices=1, mesh=dict(data=1, fsdp=1, model=1)), workdir)
    return workdir, state


@pytest.mark.parametrize("mesh_name", [m for m in MESHES if m != "1 device"])
def test_same_loss_trajectory_on_every_mesh(tmp_path, reference_run, mesh_name):
    n, mesh = MESHES[mesh_name]
    loop.train(smoke_config(num_devices=n, mesh=mesh), tmp_path)
    ref = losses(reference_run[0])
    got = losses(tmp_path)
    assert len(got) == len(ref) == 12
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    assert got[-1] < got[0]  # it actually trains


def test_training_state_is_sharded_as_configured(tmp_path):
    cfg = smoke_config(mesh=dict(data=2, fsdp=2, model=2), total_steps=1)
    state = loop.train(cfg, tmp_path)
    kernel = state.params["model"]["up"]["kernel"][...]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "model")
    mu = state.opt_state["model"][1][0].mu["up"]["kernel"][...]
    assert mu.sharding.spec == kernel.sharding.spec


def test_restore_onto_other_meshes_gives_identical_parameters(tmp_path):
    cfg = smoke_config(mesh=dict(data=4, fsdp=1, model=2), total_steps=6)
    saved = params_of(loop.train(cfg, tmp_path))
    for n, mesh in [(1, dict(data=1, fsdp=1, model=1)), (4, dict(data=1, fsdp=2, model=2))]:
        trainer = loop.Trainer(smoke_config(num_devices=n, mesh=mesh, total_steps=6), tmp_path)
        state = trainer.restore_or_init(None)
        assert int(state.step) == 6
        restored = params_of(state)
        assert restored.keys() == saved.keys()
        for k in saved:
            np.testing.assert_array_equal(restored[k], saved[k])
        assert len(state.params["model"]["up"]["kernel"][...].sharding.device_set) == n


def test_partial_write_never_damages_last_checkpoint(tmp_path):
    cfg = smoke_config(total_steps=5)
    loop.train(cfg, tmp_path)
    # A process killed while writing leaves an Orbax temporary directory behind.
    junk = tmp_path / "checkpoints" / "9.orbax-checkpoint-tmp-1234"
    (junk / "state").mkdir(parents=True)
    (junk / "state" / "garbage").write_bytes(b"\x00" * 10)
    trainer = loop.Trainer(smoke_config(total_steps=8), tmp_path)
    state = trainer.restore_or_init(None)
    assert int(state.step) == 5
    trainer.run()
    assert read_metrics(tmp_path)[-1]["step"] == 8


class _NanTask(LoopTestTask):
    """Produces NaN losses from a given step on (or only on given steps)."""

    bad_from = 10**9
    bad_steps: tuple = ()

    def loss(self, model, batch, rng, step):
        loss, metrics = super().loss(model, batch, rng, step)
        bad = (step >= self.bad_from) | jnp.isin(step, jnp.array(self.bad_steps or (-1,)))
        return jnp.where(bad, jnp.nan, loss), metrics


def test_nan_guard_skips_updates_and_stops_after_n_in_a_row(tmp_path):
    cfg = smoke_config(total_steps=40, max_nonfinite_steps=3)
    task = _NanTask(cfg)
    task.bad_from = 5
    with pytest.raises(loop.NonFiniteError, match="consecutive steps"):
        loop.train(cfg, tmp_path, task=task)


def test_nan_guard_skips_isolated_bad_steps(tmp_path):
    cfg = smoke_config(total_steps=10, max_nonfinite_steps=3)
    task = _NanTask(cfg)
    task.bad_steps = (3, 7)
    state = loop.train(cfg, tmp_path, task=task)
    skipped = [m["step"] for m in read_metrics(tmp_path) if m["nonfinite_skipped"]]
    assert skipped == [4, 8]  # metrics are written after the step: step index + 1
    assert all(np.isfinite(v).all() for v in params_of(state).values())


def test_gradient_accumulation_matches_full_batch(tmp_path):
    common = dict(total_steps=6, num_devices=1, mesh=dict(data=1, fsdp=1, model=1))
    common["model.dropout"] = 0.0
    loop.train(smoke_config(**common), tmp_path / "full")
    loop.train(smoke_config(grad_accum=4, **common), tmp_path / "accum")
    np.testing.assert_allclose(losses(tmp_path / "accum"), losses(tmp_path / "full"), rtol=1e-5)


def test_ema_tracks_parameters_and_is_checkpointed(tmp_path):
    cfg = smoke_config(total_steps=10, ema_decay=0.5)
    state = loop.train(cfg, tmp_path)
    p = np.asarray(state.params["model"]["up"]["kernel"][...])
    e = np.asarray(state.ema["model"]["up"]["kernel"][...])
    assert not np.allclose(p, e) and np.abs(p - e).max() < np.abs(p).max()
    restored = loop.Trainer(cfg, tmp_path).restore_or_init(None)
    np.testing.assert_array_equal(np.asarray(restored.ema["model"]["up"]["kernel"][...]), e)


def test_rest_state_is_carried_between_steps(tmp_path):
    loop.train(smoke_config(total_steps=5), tmp_path)
    means = losses(tmp_path, "model/target_mean")
    assert len(set(means.tolist())) == 5  # the running mean changes every step


def test_init_from_copies_weights_not_optimizer(tmp_path):
    src = tmp_path / "src"
    trained = params_of(loop.train(smoke_config(total_steps=6), src))
    cfg = smoke_config(total_steps=6, init_from=str(src))
    state = loop.Trainer(cfg, tmp_path / "dst").restore_or_init(None)
    assert int(state.step) == 0
    for k, v in params_of(state).items():
        np.testing.assert_array_equal(v, trained[k])


@pytest.mark.parametrize("src_ema,dst_ema", [(0.0, 0.9), (0.9, 0.0), (0.9, 0.5)])
def test_init_from_across_ema_settings(tmp_path, src_ema, dst_ema):
    # Fine-tuning a run without EMA with EMA on (or the reverse) must work: the new EMA starts
    # from the source's EMA weights when it kept them, else from its trained weights.
    src = tmp_path / "src"
    trained = loop.train(smoke_config(total_steps=6, ema_decay=src_ema), src)
    cfg = smoke_config(total_steps=6, init_from=str(src), ema_decay=dst_ema)
    state = loop.Trainer(cfg, tmp_path / "dst").restore_or_init(None)
    trained_params = params_of(trained)
    for k, v in params_of(state).items():
        np.testing.assert_array_equal(v, trained_params[k])
    if dst_ema == 0.0:
        assert state.ema is None
    else:
        start = trained.ema if trained.ema is not None else trained.params
        want = params_of(trained.replace(params=start))
        got = params_of(state.replace(params=state.ema))
        for k, v in got.items():
            np.testing.assert_array_equal(v, want[k])
    assert int(state.step) == 0


def test_profiler_trace_is_written(tmp_path):
    loop.train(smoke_config(total_steps=6, profile_steps=2, profile_start=2), tmp_path)
    assert any((tmp_path / "profile").rglob("*.xplane.pb"))


def test_bf16_compute_stays_close_to_fp32(tmp_path):
    common = dict(total_steps=10, num_devices=1, mesh=dict(data=1, fsdp=1, model=1))
    loop.train(smoke_config(**common), tmp_path / "fp32")
    state = loop.train(
        smoke_config(**{"precision.compute_dtype": "bfloat16"}, **common), tmp_path / "bf16"
    )
    # Master weights stay float32; bf16 forward/backward changes losses by well under 5%.
    assert state.params["model"]["up"]["kernel"][...].dtype == jnp.float32
    np.testing.assert_allclose(losses(tmp_path / "bf16"), losses(tmp_path / "fp32"), rtol=0.05)
