"""The package's layout rules (issue 26): inference loads no training code, configs load no JAX,
no import cycles (function-local imports counted), short config docstrings, no sys.path edits.

Everything here reads the source or imports in a fresh subprocess; nothing depends on ../shared.
"""

from __future__ import annotations

import ast
import json
import os
import pathlib
import subprocess
import sys
from collections import defaultdict

import pytest

from tests.helpers import REPO

PACKAGES = ("naturalspeech2_jax", "configs")
TRAINING_MODULES = (
    "naturalspeech2_jax.train.loop",
    "naturalspeech2_jax.train.step",
    "naturalspeech2_jax.train.optim",
    "naturalspeech2_jax.train.state",
    "naturalspeech2_jax.train.checkpoint",
)
# What one loads to synthesize, convert voices, sing, use a codec or align (no training).
INFERENCE_MODULES = (
    "naturalspeech2_jax.inference",
    "naturalspeech2_jax.inference.codec",
    "naturalspeech2_jax.inference.synthesizer",
    "naturalspeech2_jax.inference.voice_conversion",
    "naturalspeech2_jax.inference.singing",
    "naturalspeech2_jax.inference.codes_dataset",
    "naturalspeech2_jax.align.api",
    "naturalspeech2_jax.demo.service",
)
CONFIG_MODULES = sorted(p.stem for p in (REPO / "configs").glob("*.py") if p.stem != "__init__")


def loaded_modules(*imports: str) -> set[str]:
    """sys.modules of a fresh interpreter after importing ``imports`` (in this checkout)."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {list(imports)!r}:\n"
        "    importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_inference_loads_no_training_code():
    """Inference restores weights (``train/restore.py``) with no optimizer, step or Trainer.
    (flax.nnx itself imports optax, so optax is not checked.)"""
    modules = loaded_modules(*INFERENCE_MODULES)
    assert "naturalspeech2_jax.train.restore" in modules
    assert not [m for m in TRAINING_MODULES if m in modules]
    assert not [m for m in modules if m.startswith("naturalspeech2_jax.tasks")]


@pytest.mark.parametrize("name", CONFIG_MODULES)
def test_config_modules_load_neither_jax_nor_the_package(name):
    modules = loaded_modules(f"configs.{name}")
    assert f"configs.{name}" in modules
    assert not [m for m in modules if m == "jax" or m.startswith(("jax.", "jaxlib"))]
    assert not [m for m in modules if m.split(".")[0] == "naturalspeech2_jax"]


# ---------------------------------------------------------------------------------- source scans
def _modules() -> dict[str, str]:
    """{dotted module name: path} of every .py file under the packages (``pkg.__init__`` as
    ``pkg``)."""
    mods = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = str(path)
    return mods


def _import_graph(mods: dict[str, str]) -> dict[str, set[str]]:
    """module -> the internal modules it imports anywhere in its source (function bodies too)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        tree = ast.parse(pathlib.Path(path).read_text(encoding="utf-8"))
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
    return edges


def _cycles(mods: dict[str, str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), except a package with its
    own submodules (a package's __init__ importing its submodules, which import the package)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            head = min(component, key=len)
            if len(component) > 1 and not all(
                m == head or m.startswith(head + ".") for m in component
            ):
                found.append(sorted(component))

    for module in sorted(mods):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles_counting_function_local_imports():
    mods = _modules()
    assert "naturalspeech2_jax.train.restore" in mods and "configs.common" in mods
    edges = _import_graph(mods)
    assert "naturalspeech2_jax.train.loop" in edges["naturalspeech2_jax.tasks.aligner"]
    assert _cycles(mods, edges) == []


def test_cycle_detection_finds_a_function_local_cycle():
    """The scan itself: an import inside a function closes a cycle; a package and its own
    submodules do not count."""
    mods = {m: "" for m in ("p", "p.a", "p.b", "q")}
    edges = defaultdict(set, {"p": {"p.a"}, "p.a": {"p"}, "q": set()})
    assert _cycles(mods, edges) == []
    edges["p.a"].add("q")
    edges["q"].add("p.a")  # e.g. `def f(): from p import a` inside q
    assert _cycles(mods, edges) == [["p", "p.a", "q"]]


@pytest.mark.parametrize("name", CONFIG_MODULES)
def test_config_module_docstrings_are_at_most_15_lines(name):
    doc = ast.get_docstring(ast.parse((REPO / "configs" / f"{name}.py").read_text()), clean=False)
    assert doc, f"configs/{name}.py has no docstring"
    lines = len(doc.strip().splitlines())
    assert lines <= 15, f"configs/{name}.py: a docstring of {lines} lines; keep it to 15"


def _sys_path_uses(path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        ):
            lines.append(node.lineno)
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "sys"
            and (any(a.name == "path" for a in node.names))
        ):
            lines.append(node.lineno)
    return lines


def test_nothing_edits_sys_path():
    """configs/ is an installed package: neither the package, the configs, the launch scripts
    nor the tests put the repository on sys.path."""
    offenders = {}
    for folder in ("naturalspeech2_jax", "configs", "launch", "tests"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if lines := _sys_path_uses(path):
                offenders[str(path.relative_to(REPO))] = lines
    assert offenders == {}
