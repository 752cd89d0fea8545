"""Evaluation models a user already has on disk, plugged in by ``KIND:PATH`` (or a bare path).

The bundled models (Moonshine, pocketsphinx, resemblyzer) stay the defaults; a spec such as
``whisper:/models/whisper-small`` or ``wavlm:/models/wavlm-base-plus-sv`` swaps one in when its
library is importable. Every failure to build one is an :class:`EvaluatorUnavailable` whose message
is one sentence naming the path or the missing library and the fix (the CLI prints it and exits).
"""

from __future__ import annotations

import importlib.util
import pathlib


class EvaluatorUnavailable(RuntimeError):
    """An evaluation model cannot be built here (missing path, library or files)."""


def split_spec(spec: str, kinds: tuple[str, ...]) -> tuple[str | None, str]:
    """``"whisper:/p"`` -> ("whisper", "/p"); a bare path or name -> (None, spec).

    Only a prefix in ``kinds`` counts as a kind, so Windows drive letters and ``a:b`` paths survive.
    """
    kind, sep, rest = spec.partition(":")
    if sep and kind in kinds:
        return kind, rest
    return None, spec


def require_path(path: str, what: str) -> pathlib.Path:
    """The path as a Path, or one-sentence :class:`EvaluatorUnavailable` when it does not exist."""
    p = pathlib.Path(path).expanduser()
    if not path or not p.exists():
        raise EvaluatorUnavailable(
            f"The {what} path {path!r} does not exist; pass the directory or file that holds the "
            "model's weights."
        )
    return p


def require_module(module: str, what: str, install: str) -> None:
    """One-sentence :class:`EvaluatorUnavailable` when ``module`` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        raise EvaluatorUnavailable(
            f"{what} needs the {module!r} package, which is not importable here; install it "
            f"({install}) or use the bundled default."
        )
