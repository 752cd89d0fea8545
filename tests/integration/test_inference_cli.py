"""launch/synthesize.py and launch/probe_diffusion.py on the quickstart's smoke checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import REPO
from tests.helpers import SYNTH_STEPS as STEPS

pytestmark = pytest.mark.slow  # the session's quickstart (smoke_pipeline): minutes


def test_cli_round_trip(smoke_pipeline, prompt, tmp_path):
    # The quickstart's samples stage compiled the same one-sentence programs into its cache.
    cache = str(smoke_pipeline / "xla_cache")
    env = dict(os.environ, XLA_FLAGS="", JAX_COMPILATION_CACHE_DIR=cache)
    out = tmp_path / "out.wav"
    # Relative paths, as a user types them (`--checkpoint work/quickstart/ns2`): Orbax itself
    # accepts only absolute ones.
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch" / "synthesize.py"), "--checkpoint", "ns2",
         "--text", "Hello world, bye now.", "--prompt", os.path.relpath(prompt, smoke_pipeline),
         "--out", str(out), "--steps", str(STEPS)], capture_output=True, text=True, env=env,
        cwd=str(smoke_pipeline),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    wav, sr = sf.read(str(out))
    alignment = json.loads((tmp_path / "out.alignment.json").read_text())["alignment"]
    assert sr == 16000 and len(wav) == round(alignment[-1]["end"] * 16000)
    assert out.with_suffix(".png").stat().st_size > 1000
    bad = subprocess.run(
        [sys.executable, str(REPO / "launch" / "synthesize.py"), "--checkpoint",
         str(tmp_path / "nope"), "--text", "Hi.", "--prompt", prompt, "--out", str(out)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_probe_diffusion_reads_the_trajectory_of_the_quickstart_model(smoke_pipeline, tmp_path):
    """launch/probe_diffusion.py on the smoke checkpoint: a row per probed step and the sample,
    finite latent errors, per-utterance records; guidance the model lacks is refused."""
    from launch import probe_diffusion

    data = smoke_pipeline / "codes" / "quickstart_codes" / "1.0.0"
    out = tmp_path / "probe.json"
    args = ["--checkpoint", str(smoke_pipeline / "ns2"), "--data", str(data), "--split",
            "heldout", "--limit", "2", "--steps", "6", "--probe_steps", "0,3,9",
            "--max_frames", "448", "--max_tokens", "96", "--out", str(out)]  # fmt: skip
    assert probe_diffusion.main(args) == 0
    result = json.loads(out.read_text())
    rows = result["guidance"]["1.0"]
    assert [r["step"] for r in rows] == [0, 3, "sample"]  # step 9 is past the 6 steps
    assert rows[0]["t"] == 1.0 and rows[1]["t"] < 1.0
    assert all(np.isfinite(r["rel_mse"]) and r["rel_mse"] > 0 for r in rows)
    assert len(result["utterances"]) == 2 and "| step |" in out.with_suffix(".md").read_text()
    assert probe_diffusion.main([*args[:-2], "--guidance", "2", "--out", str(out)]) == 2
