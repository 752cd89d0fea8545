"""Where a CPU step's cycles go, by the code that runs them: Linux ``perf`` samples of a few steps.

``op_profile.py`` times XLA's thunks from a ``jax.profiler`` trace. On XLA:CPU that view misses
the convolutions: a convolution thunk hands its work to Eigen's thread pool (its contractions run
in oneDNN's JIT sgemm kernels), so the trace gave bench44m's convolutions 11 ms a step while perf
found a third of the process's CPU samples in those kernels (docs/experiments/speed.md,
2026-12-08 (2)). ``sample_steps`` runs steps under ``perf record -p <this process>`` and sums the
samples per class of code (``CLASSES``): matrix kernels (YNN's dots; oneDNN's sgemm and Eigen's
packing), XLA's generated loops (anonymous JIT code), YNN's other kernels, memcpy/memset, the
kernel (page zeroing, scheduling), thread pools and runtime, Python. Linux only, and only where
``perf`` is installed (Debian: ``linux-perf``) and ``perf_event_paranoid`` lets this user sample
itself; otherwise it returns ``{"error": ...}`` saying which.

oneDNN names its JIT kernels for perf only when ``ONEDNN_JIT_PROFILE=2`` is set before it
generates the first one (``JIT_PROFILE_ENV``): set it at process start, as
``benchmarks/reference_speed.py --perf`` does for its workers. Without it those kernels count as
anonymous JIT code, i.e. under XLA's loops.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

JIT_PROFILE_ENV = {"ONEDNN_JIT_PROFILE": "2"}  # 2: a /tmp/perf-<pid>.map of oneDNN's kernels

# (class, test on (dso, symbol)), first match wins.
CLASSES: list[tuple[str, Callable[[str, str], bool]]] = [
    ("matmul: YNN dot kernels", lambda dso, sym: sym.startswith("ynn::dot_")),
    (
        "matmul: oneDNN sgemm and Eigen packing (convolutions, Eigen dots)",
        lambda dso, sym: bool(re.search(r"gemm|gebp|TensorContraction", sym)),
    ),
    ("XLA generated loops (anonymous JIT code)", lambda dso, sym: dso.startswith("[JIT]")),
    ("YNN element-wise, reductions, transposes", lambda dso, sym: sym.startswith("ynn::")),
    (
        "memcpy / memset",
        lambda dso, sym: dso.startswith("libc") and bool(re.match(r"__(mem|wmem)", sym)),
    ),
    ("kernel (page faults, scheduling, syscalls)", lambda dso, sym: "kernel" in dso),
    (
        "thread pools and runtime",
        lambda dso, sym: (
            bool(re.match(r"(Eigen::|tsl::|xla::|absl::|std::|pthread|futex)", sym))
            or "pthread" in dso
            or dso.startswith("libc")
        ),
    ),
    ("Python", lambda dso, sym: "python" in dso),
]
OTHER = "other"

_ROW = re.compile(r"^\s*([\d.]+)%\s+(.+?)\s+\[([.kgu])\]\s+(.*?)\s*$")


def classify(dso: str, symbol: str) -> str:
    for name, test in CLASSES:
        if test(dso, symbol):
            return name
    return OTHER


def parse_report(text: str) -> list[tuple[float, str, str]]:
    """``(percent, dso, symbol)`` rows of ``perf report --sort dso,sym --stdio``."""
    rows = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _ROW.match(line)
        if m:
            rows.append((float(m.group(1)), m.group(2).strip(), m.group(4)))
    return rows


def breakdown(rows: list[tuple[float, str, str]], top: int = 15) -> dict[str, Any]:
    """Shares per class (of all samples) and the top symbols, JIT addresses grouped as one."""
    by_class: dict[str, float] = collections.defaultdict(float)
    by_symbol: dict[tuple[str, str], float] = collections.defaultdict(float)
    for pct, dso, sym in rows:
        by_class[classify(dso, sym)] += pct
        anonymous = dso.startswith("[JIT]") and sym.startswith("0x")
        key = ("[JIT]", "(anonymous: XLA loops)") if anonymous else (dso, sym)
        by_symbol[key] += pct
    classes = sorted(by_class.items(), key=lambda kv: -kv[1])
    symbols = sorted(by_symbol.items(), key=lambda kv: -kv[1])[:top]
    return {
        "classes": [{"class": c, "share": round(p / 100, 4)} for c, p in classes],
        "top_symbols": [
            {"dso": d, "symbol": s[:160], "share": round(p / 100, 4)} for (d, s), p in symbols
        ],
    }


def unavailable() -> str | None:
    """Why ``perf`` cannot sample this process here, or None."""
    if not shutil.which("perf"):
        return "perf is not installed (Debian/Ubuntu: apt install linux-perf)"
    try:
        level = int(Path("/proc/sys/kernel/perf_event_paranoid").read_text())
    except (OSError, ValueError):
        return "no /proc/sys/kernel/perf_event_paranoid: not Linux, or perf events disabled"
    if level > 2 and os.geteuid() != 0:
        return f"perf_event_paranoid is {level}: set it to 2 or lower to sample your own process"
    return None


def sample_steps(
    run_step: Callable[[], Any],
    steps: int,
    directory: str,
    frequency: int = 499,
    min_seconds: float = 2.0,
) -> dict[str, Any]:
    """``run_step()`` under ``perf record`` of this process, ``steps`` times and for at least
    ``min_seconds`` (short steps would leave too few samples); the breakdown.

    ``run_step`` must block until its step is done. Writes ``perf.data`` and ``report.txt`` in
    ``directory``."""
    reason = unavailable()
    if reason:
        return {"error": reason}
    os.makedirs(directory, exist_ok=True)
    data = os.path.join(directory, "perf.data")
    Path(data).unlink(missing_ok=True)  # its appearance below says perf has attached
    perf = shutil.which("perf")
    cmd = [perf, "record", "-F", str(frequency), "-p", str(os.getpid()), "-o", data]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10.0
    while not os.path.exists(data) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # perf creates its output once it has attached
    if proc.poll() is not None:
        return {"error": f"perf record exited at once: {proc.stderr.read().strip()[-500:]}"}
    start, ran = time.perf_counter(), 0
    try:
        while ran < steps or time.perf_counter() - start < min_seconds:
            run_step()
            ran += 1
    finally:  # a failing step must not leave perf sampling this process
        seconds = time.perf_counter() - start
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    if proc.returncode not in (0, -signal.SIGINT):
        return {"error": f"perf record failed: {proc.stderr.read().strip()[-500:]}"}
    report = subprocess.run(
        [perf, "report", "-i", data, "--sort", "dso,sym", "--stdio", "--no-children"],
        capture_output=True,
        text=True,
    )
    Path(directory, "report.txt").write_text(report.stdout)
    # oneDNN's symbol map for perf, in /tmp: read by the report above, not needed after it.
    Path(f"/tmp/perf-{os.getpid()}.map").unlink(missing_ok=True)
    rows = parse_report(report.stdout)
    if not rows:
        return {"error": f"perf report gave no samples: {report.stderr.strip()[-500:]}"}
    samples = re.search(r"^# Samples: (\S+)", report.stdout, re.M)  # perf abbreviates: "9K"
    named_jit = os.environ.get("ONEDNN_JIT_PROFILE") == JIT_PROFILE_ENV["ONEDNN_JIT_PROFILE"]
    return {
        "steps": ran,
        "seconds": round(seconds, 3),
        "frequency_hz": frequency,
        "samples": samples.group(1) if samples else None,
        "onednn_kernels_named": named_jit,
        "perf_data": data,
        **breakdown(rows),
    }
