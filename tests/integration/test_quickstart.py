"""launch/quickstart.py: the smoke pipeline's stages and resume (the session's ``smoke_pipeline``),
the evaluation extras it checks first, and its --durations flag."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_quickstart_leaves_every_stage_and_resumes(smoke_pipeline):
    for d in ("data", "codec", "ns2", "samples", "eval"):
        assert (smoke_pipeline / d).is_dir(), d
    assert (smoke_pipeline / "eval" / "report.json").exists()
    assert list((smoke_pipeline / "samples").glob("*_generated.png"))
    # A second run skips every finished stage (seconds, no training).
    env = dict(os.environ, XLA_FLAGS="", NS2_DATA_DIR=str(smoke_pipeline / "cache"))
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch" / "quickstart.py"), f"--workdir={smoke_pipeline}",
         "--preset=smoke"], capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("already done") == 7, proc.stderr[-2000:]


@pytest.fixture
def quickstart(monkeypatch):
    """launch/quickstart.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("quickstart", REPO / "launch" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "quickstart", module)  # its dataclasses look it up
    spec.loader.exec_module(module)
    return module


def test_quickstart_names_missing_evaluation_extras_before_training(
    tmp_path, monkeypatch, quickstart
):
    """A plain ``pip install -e .`` lacks torch and moonshine: fail at once, not after 20 min."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    tiny, smoke = quickstart.Options(preset="tiny"), quickstart.Options(preset="smoke")
    assert quickstart.missing_eval_modules(tmp_path, tiny) == ["torch"]
    assert quickstart.missing_eval_modules(tmp_path, smoke) == []  # smoke: no ASR, no speaker
    (tmp_path / "eval.done").write_text("{}")
    assert quickstart.missing_eval_modules(tmp_path, tiny) == []  # finished: nothing to import


def test_quickstart_durations_flag_reaches_the_data_stage(tmp_path, monkeypatch, quickstart):
    """--durations=aligner aligns even the embedded corpus (whose exact timings then score the
    aligner); auto keeps its exact timings, and a real corpus gets what prepare_data chooses."""
    from naturalspeech2_jax.data import prepare

    calls = []
    monkeypatch.setattr(
        prepare, "prepare_corpus",
        lambda corpus, out, **kw: calls.append((str(corpus), kw)) or prepare.PrepareResult(out, {}),
    )  # fmt: skip
    for durations in ("auto", "aligner", "exact"):
        quickstart.stage_data(tmp_path, quickstart.Options(durations=durations))
        quickstart.stage_data(tmp_path, quickstart.Options(corpus="/c", durations=durations))
    embedded = [kw["durations"] for c, kw in calls if c != "/c"]
    real = [kw["durations"] for c, kw in calls if c == "/c"]
    assert embedded == ["exact", "aligner", "exact"] and real == ["auto", "aligner", "exact"]
