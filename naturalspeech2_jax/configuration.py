"""Helpers for ``ml_collections`` configs shared by the package, ``configs/`` and the tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def apply_overrides(config: Any, overrides: Mapping[str, Any], sep: str = ".") -> None:
    """Set dotted keys in place: ``{"mesh.data": 2}`` is ``--config.mesh.data=2`` in code
    (``sep="__"`` for keys that travel as Python keyword arguments, ``mesh__data=2``)."""
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split(sep)
        for p in parents:
            node = node[p]
        node[leaf] = value
