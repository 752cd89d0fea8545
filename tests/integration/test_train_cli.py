"""launch/train.py end to end: kill and resume, SIGTERM, two processes (jax.distributed on
localhost), the dry run's parameter JSON, and --compile_only for a mesh."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from naturalspeech2_jax.train.metrics import read_metrics
from tests.helpers import REPO


def losses(workdir, key="model/loss"):
    return np.array([m[key] for m in read_metrics(workdir) if key in m])


def _train_cmd(workdir, *extra):
    return [
        sys.executable,
        str(REPO / "launch" / "train.py"),
        "--config=" + str(REPO / "configs" / "loop_test.py") + ":smoke",
        f"--workdir={workdir}",
        "--config.log_every=1",
        *extra,
    ]


def _env(num_devices=8, **extra):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def _wait_for_step(workdir, step, proc, timeout=120):
    start = time.time()
    while time.time() - start < timeout:
        ms = read_metrics(workdir) if (workdir / "metrics.jsonl").exists() else []
        if ms and ms[-1]["step"] >= step:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training exited early:\n{proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError("training did not reach the step in time")


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted_run(tmp_path):
    steps = ["--config.total_steps=300", "--config.checkpoint_every=25"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(_train_cmd(full, *steps), env=_env(), check=True, capture_output=True)
    proc = subprocess.Popen(_train_cmd(cut, *steps), env=_env(), stderr=subprocess.PIPE, text=True)
    _wait_for_step(cut, 60, proc)
    proc.send_signal(signal.SIGKILL)  # no chance to save: the last periodic checkpoint counts
    proc.wait()
    done = read_metrics(cut)[-1]["step"]
    assert done < 300, "the run finished before it could be killed"
    subprocess.run(_train_cmd(cut, *steps), env=_env(), check=True, capture_output=True)
    a, b = read_metrics(full), read_metrics(cut)
    assert [m["step"] for m in b] == list(range(1, 301))
    for ma, mb in zip(a, b, strict=True):
        assert ma["model/loss"] == mb["model/loss"], ma["step"]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    cmd = _train_cmd(tmp_path, "--config.total_steps=100000", "--config.checkpoint_every=100000")
    proc = subprocess.Popen(cmd, env=_env(), stderr=subprocess.PIPE, text=True)
    _wait_for_step(tmp_path, 30, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    last = read_metrics(tmp_path)[-1]["step"]
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [last]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.multiprocess
def test_two_process_distributed_run_matches_one_process(tmp_path):
    steps = ["--config.total_steps=10", "--config.checkpoint_every=5"]
    one = tmp_path / "one"
    subprocess.run(_train_cmd(one, *steps), env=_env(8), check=True, capture_output=True)
    two = tmp_path / "two"
    port = _free_port()
    procs = [
        subprocess.Popen(
            _train_cmd(two, *steps),
            env=_env(
                4,
                NS2_DISTRIBUTED="1",
                NS2_COORDINATOR=f"127.0.0.1:{port}",
                NS2_NUM_PROCESSES="2",
                NS2_PROCESS_ID=str(i),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    np.testing.assert_allclose(losses(two), losses(one), rtol=1e-5)
    assert len(losses(two)) == 10


def test_dry_run_prints_param_json_as_last_line():
    out = (
        subprocess.run(
            [
                sys.executable,
                str(REPO / "launch" / "train.py"),
                f"--config={REPO / 'configs' / 'loop_test.py'}:paper",
                "--dry_run",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    params = json.loads(out)["params"]
    assert params["total"] == sum(v for k, v in params.items() if k != "total")
    assert set(params) >= {"conv", "up", "down", "head", "total"}


@pytest.mark.slow
def test_compile_only_prints_memory_and_flops_for_a_mesh(tmp_path):
    """The NS2 smoke step compiled for data=2 x fsdp=4 with the random codec: no dataset, no
    workdir written, memory and FLOPs per device in the JSON report."""
    cmd = [
        sys.executable,
        str(REPO / "launch" / "train.py"),
        f"--config={REPO / 'configs' / 'diffusion.py'}:smoke",
        "--compile_only",
        "--num_cpu_devices=8",
        "--config.mesh.data=2",
        "--config.mesh.fsdp=4",
        "--config.codec.checkpoint=random",
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["devices"] == 8
    assert report["mesh"] == {"data": 2, "fsdp": 4, "model": 1}
    assert report["batch_shapes"]["codes"] == [8, 384, 16]  # largest bucket, 16 quantizers
    assert report["memory_per_device_bytes"] > 0
    assert report["flops_per_step"] == pytest.approx(8 * report["flops_per_step_per_device"])
    # Forward + backward cost at least 6 FLOPs per parameter per token (frames are more).
    assert report["flops_per_step"] > 6 * report["params"] * 8 * 96
    # The traced matmul count (right for scanned stacks too); the looped smoke step's XLA count
    # adds elementwise ops and the partitioned program's overhead to the same matmuls.
    assert 6 * report["params"] * 8 * 96 < report["model_flops_per_step"]
    assert report["model_flops_per_step"] < 1.1 * report["flops_per_step"]
    assert not list(tmp_path.iterdir())  # nothing written
