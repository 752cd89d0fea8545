"""Metrics output: JSON lines in ``<workdir>/metrics.jsonl`` (+ TensorBoard when installed).

Every line is one JSON object with ``step`` and scalar values. Only process 0 writes. On resume the
file is truncated to the lines up to the restored step, so a killed-and-resumed run leaves the
same file as an uninterrupted one. A last line cut by a kill is dropped with a warning; a damaged
line before it raises ``MetricsFileError`` naming the file and line.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from etils import epath

from naturalspeech2_jax import parallel

log = logging.getLogger(__name__)


class MetricsFileError(ValueError):
    """A line of ``metrics.jsonl`` other than the last is not valid JSON."""


def parse_lines(path: epath.Path, text: str) -> list[tuple[str, dict]]:
    """(line, record) for every non-blank line of a metrics file's ``text``.

    A last line that does not parse (a write cut by a kill) is dropped with a warning; any other
    line that does not parse raises ``MetricsFileError``.
    """
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    out = []
    for i, (n, line) in enumerate(lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if i == len(lines) - 1:
                log.warning(
                    "dropped the last line (%d) of %s: it is not valid JSON (%s), a write cut "
                    "short by a kill.",
                    n,
                    path,
                    e,
                )
                break
            raise MetricsFileError(
                f"line {n} of {path} is not valid JSON ({e}); fix or delete that line, then run "
                "again."
            ) from None
        out.append((line, record))
    return out


def to_python(value: Any) -> Any:
    """Scalars (numpy/JAX) -> float/int; NaN and Inf -> strings so the line stays valid JSON."""
    v = np.asarray(value)
    if v.size != 1:
        return v.tolist()
    v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricWriter:
    """Appends metric lines; mirrors them to TensorBoard if tensorboardX is importable."""

    def __init__(self, workdir: str | epath.Path, *, resume_step: int = 0):
        self.enabled = parallel.is_main_process()
        self.path = epath.Path(workdir) / "metrics.jsonl"
        # Object stores (gs://, s3://) cannot append: there the file is rewritten from memory.
        self._lines: list[str] | None = None if "://" not in str(workdir) else []
        self._tb = None
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            kept = [
                line
                for line, record in parse_lines(self.path, self.path.read_text())
                if record.get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
            if self._lines is not None:
                self._lines = kept
        try:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(epath.Path(workdir) / "tensorboard"))
        except ImportError:
            self._tb = None

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: to_python(v) for k, v in metrics.items()}}
        if self._lines is not None:
            self._lines.append(json.dumps(record))
            self.path.write_text("".join(line + "\n" for line in self._lines))
        else:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str | epath.Path) -> list[dict]:
    """All lines of ``metrics.jsonl`` as dicts (for tests and notebooks)."""
    path = epath.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [record for _, record in parse_lines(path, path.read_text())]
