"""Fault injection on a run's work directory: damaged checkpoints, two runs in one directory, cut
metrics lines. Every resume must end in the same state as an uninterrupted run."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from naturalspeech2_jax.train import loop
from naturalspeech2_jax.train.metrics import MetricsFileError, read_metrics
from naturalspeech2_jax.train.workdir_lock import WorkdirBusyError, WorkdirLock
from tests.helpers import REPO, load_config

TOTAL = 8


def config():
    return load_config(
        "loop_test",
        "smoke",
        total_steps=TOTAL,
        log_every=1,
        checkpoint_every=2,
        async_checkpoints=False,
    )


def leaves(state) -> list[np.ndarray]:
    out = []
    for x in jax.tree.leaves(state):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out.append(np.asarray(x))
    return out


def assert_same_state(got, want):
    a, b = leaves(got), leaves(want)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def metric_lines(workdir):
    return [{k: v for k, v in m.items() if k != "steps_per_sec"} for m in read_metrics(workdir)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 8-step run (checkpoints 4, 6, 8 kept): (workdir, final state)."""
    workdir = tmp_path_factory.mktemp("reference")
    return workdir, loop.train(config(), workdir)


@pytest.fixture
def copy(reference, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(reference[0], workdir)
    return workdir


def truncate(path):
    size = path.stat().st_size
    assert size > 1, path
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def damage(workdir, step, item):
    root = workdir / "checkpoints" / str(step)
    if item == "state":  # the largest array file of the state
        files = [p for p in (root / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
        truncate(max(files, key=lambda p: p.stat().st_size))
    elif item == "meta":
        truncate(root / "meta" / "metadata")
    else:
        truncate(root / "data" / "process_0-of-1.json")


@pytest.mark.parametrize("item", ["state", "meta", "data"])
def test_damaged_latest_checkpoint_falls_back_to_previous_step(copy, reference, item, caplog):
    damage(copy, TOTAL, item)
    with caplog.at_level(logging.WARNING, logger="naturalspeech2_jax"):
        state = loop.train(config(), copy)
    warnings = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"checkpoint {TOTAL} in {copy / 'checkpoints'} is damaged ({item}: " in warnings[0]
    assert f"resuming from step {TOTAL - 2} instead" in warnings[0]
    assert "kept" in warnings[0]
    # Exact resume: the same final state and metrics as the uninterrupted run, no duplicates.
    assert int(state.step) == TOTAL
    assert_same_state(state, reference[1])
    assert metric_lines(copy) == metric_lines(reference[0])
    # The damaged step is kept aside, and the resumed run saved that step again.
    assert (copy / "damaged_checkpoints" / str(TOTAL)).is_dir()
    assert TOTAL in loop.Trainer(config(), copy).checkpointer.all_steps()


def test_every_checkpoint_damaged_is_one_clear_error(copy):
    steps = sorted(int(p.name) for p in (copy / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [4, 6, 8]
    for step, item in zip(steps, ["state", "meta", "data"], strict=True):
        damage(copy, step, item)
    trainer = loop.Trainer(config(), copy)
    with pytest.raises(loop.NoIntactCheckpointError) as err:
        trainer.restore_or_init(None)
    message = str(err.value)
    assert "\n" not in message
    assert f"no checkpoint in {copy / 'checkpoints'} can be restored" in message
    assert "8: data: process_0-of-1.json" in message and "4: state: " in message
    assert "6: meta: metadata: invalid JSON" in message
    assert "--workdir" in message
    assert not (copy / "damaged_checkpoints").exists()  # nothing moved when nothing is intact


def test_second_run_on_a_locked_workdir_is_refused(tmp_path):
    with WorkdirLock(tmp_path), pytest.raises(WorkdirBusyError) as err:
        loop.train(config(), tmp_path)
    message = str(err.value)
    assert message.startswith(f"{tmp_path} is in use by pid {os.getpid()} on host ")
    assert message.endswith("; wait for it or pass another --workdir.")
    assert not (tmp_path / "checkpoints").exists()  # refused before touching anything
    # Released: a run goes through, and releases the lock when it is done.
    loop.train(config(), tmp_path)
    with WorkdirLock(tmp_path) as lock:
        assert lock.held


def test_lock_of_a_killed_process_is_released(tmp_path):
    code = (
        "import sys, time; from naturalspeech2_jax.train.workdir_lock import WorkdirLock; "
        "lock = WorkdirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)"
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.getenv("PYTHONPATH")]))
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(WorkdirBusyError, match=f"in use by pid {proc.pid} on host "):
            WorkdirLock(tmp_path).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    deadline = time.time() + 10
    while True:
        try:
            WorkdirLock(tmp_path).acquire().release()
            break
        except WorkdirBusyError:
            assert time.time() < deadline
            time.sleep(0.1)


def test_lock_is_skipped_on_object_stores():
    lock = WorkdirLock("gs://bucket/run").acquire()
    assert not lock.held
    lock.release()


def test_cut_last_metrics_line_is_dropped_and_resume_is_exact(copy, reference, caplog):
    # Killed at step 7 while writing its metrics line: checkpoint 8 never written.
    shutil.rmtree(copy / "checkpoints" / str(TOTAL))
    path = copy / "metrics.jsonl"
    lines = path.read_text().splitlines()
    cut = lines[TOTAL - 2]
    assert '"step": 7' in cut
    path.write_text("".join(line + "\n" for line in lines[: TOTAL - 2]) + cut[: len(cut) // 2])
    with caplog.at_level(logging.WARNING, logger="naturalspeech2_jax"):
        state = loop.train(config(), copy)
    warnings = [r.getMessage() for r in caplog.records if "metrics.jsonl" in r.getMessage()]
    assert len(warnings) == 1 and str(path) in warnings[0] and "last line (7)" in warnings[0]
    assert_same_state(state, reference[1])
    steps = [m["step"] for m in read_metrics(copy)]
    assert steps == list(range(1, TOTAL + 1))  # no duplicates, nothing missing
    assert metric_lines(copy) == metric_lines(reference[0])


def test_corrupt_middle_metrics_line_names_file_and_line(copy):
    path = copy / "metrics.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:10]
    path.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(MetricsFileError, match=rf"^line 3 of {path} is not valid JSON"):
        loop.train(config(), copy)
    with pytest.raises(MetricsFileError, match="line 3 of"):
        read_metrics(copy)


def test_signal_stops_training_with_a_checkpoint_and_raises(tmp_path):
    """SIGTERM mid-run: the step's checkpoint is saved and ``train`` raises TrainingInterrupted
    (what follows training must not run on an unfinished model); the same call resumes."""
    import threading

    long = config()
    long.total_steps = 100_000

    def send_sigterm():
        deadline = time.time() + 120
        while time.time() < deadline:
            if (tmp_path / "metrics.jsonl").exists() and read_metrics(tmp_path):
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=send_sigterm, daemon=True)
    killer.start()
    with pytest.raises(loop.TrainingInterrupted, match="run the same command again") as stop:
        loop.train(long, tmp_path)
    killer.join()
    step = stop.value.step
    assert 1 <= step < long.total_steps and stop.value.exit_status == 130
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved[-1] == step
    again = config()
    again.total_steps = step + 2
    loop.train(again, tmp_path)  # resumes and finishes: no exception
    assert [m["step"] for m in read_metrics(tmp_path)][-2:] == [step + 1, step + 2]


def test_another_model_in_the_workdir_is_a_mismatch_not_damage(copy):
    """Resuming with a config whose model differs from the run's: one sentence naming the first
    differing array and the run's config.json, and nothing moved aside."""
    from naturalspeech2_jax.train.checkpoint import CheckpointMismatchError

    before = sorted(p.name for p in (copy / "checkpoints").iterdir())
    other = config()
    other.model.hidden = other.model.hidden * 2
    with pytest.raises(CheckpointMismatchError, match=r"holds another model.*shape.*config\.json"):
        loop.train(other, copy)
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == before
    assert not (copy / "damaged_checkpoints").exists()
    # The run's own config still resumes (the check passes on an intact, matching checkpoint).
    same = config()
    same.total_steps = TOTAL + 1
    loop.train(same, copy)
    assert read_metrics(copy)[-1]["step"] == TOTAL + 1
