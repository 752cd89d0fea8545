"""The notebooks in colabs/ run top to bottom on the quickstart's smoke checkpoint."""

from __future__ import annotations

import json

import pytest

from tests.helpers import REPO
from tests.helpers import SYNTH_STEPS as STEPS

pytestmark = pytest.mark.slow  # the session's quickstart (smoke_pipeline): minutes


@pytest.mark.parametrize("name", ["synthesize", "train_small"])
def test_notebooks_run(name, smoke_pipeline, prompt, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("NS2_CHECKPOINT", str(smoke_pipeline / "ns2"))
    monkeypatch.setenv("NS2_PROMPT", prompt)
    monkeypatch.setenv("NS2_STEPS", str(STEPS))
    monkeypatch.setenv("NS2_PRESET", "smoke")
    monkeypatch.setenv("NS2_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("NS2_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XLA_FLAGS", "")
    # The training notebook compiles the fixture's programs again: reuse its XLA cache.
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(smoke_pipeline / "xla_cache"))
    nb = nbformat.read(str(REPO / "colabs" / f"{name}.ipynb"), as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={
        "metadata": {"path": str(REPO / "colabs")}}).execute()  # fmt: skip
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("audio" in json.dumps(o.get("data", {})).lower() for o in outputs)
