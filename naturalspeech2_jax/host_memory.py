"""Transparent huge pages for host memory: glibc's ``malloc.hugetlb`` tunable, for the commands.

Why: XLA:CPU allocates a program's temporaries afresh at every call, with glibc's malloc, which
maps blocks this large with ``mmap`` and unmaps them when they are freed. Each bench44m training
step (1.6 GB of temporaries) took 407,000 page faults of 4 KiB pages, 1.0-1.3 s of system CPU time
per 4.4-5.6 s step on this project's 2-core machine (``resource.getrusage`` around the step).
With ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (glibc >= 2.35) malloc asks the kernel for
transparent huge pages (``madvise``; the kernel's default THP mode "madvise" grants them): about
1,000 faults and 0.2 s of system time per step, and the step 1-4% faster in three alternating
pairs of runs (docs/experiments/speed.md, 2026-12-08). Accelerator backends allocate device
memory elsewhere; for their hosts this is harmless.

glibc reads ``GLIBC_TUNABLES`` once, when a process starts, so a running Python cannot turn it on
for itself: :func:`ensure` re-executes the command (same interpreter, same arguments, from
``sys.orig_argv``) with the tunable added to the environment, once, before the command does any
work. The launchers that train or benchmark call it first thing (launch/train.py, quickstart.py,
benchmark.py, ``benchmarks/reference_speed.py``); the tests set it for their worker processes
(tests/conftest.py). Nothing happens when ``NS2_HUGE_PAGES=off``, when the environment already
sets ``glibc.malloc.hugetlb`` (to anything: the user's choice stands), or off glibc Linux.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping

__all__ = ["TUNABLE", "ensure", "environment", "tunables_with_huge_pages"]

TUNABLE = "glibc.malloc.hugetlb=1"
_OFF = ("off", "0", "false", "no")


def _glibc_has_tunable() -> bool:
    """Linux with glibc >= 2.35 (the first with ``glibc.malloc.hugetlb``)."""
    if sys.platform != "linux":
        return False
    libc, version = platform.libc_ver()
    if libc != "glibc":
        return False
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 35)


def tunables_with_huge_pages(env: Mapping[str, str], supported: bool | None = None) -> str | None:
    """The ``GLIBC_TUNABLES`` value that adds :data:`TUNABLE` to ``env``'s, or None when nothing
    is to change (turned off, already chosen, or a libc without the tunable)."""
    if env.get("NS2_HUGE_PAGES", "").lower() in _OFF:
        return None
    current = env.get("GLIBC_TUNABLES", "")
    if any(item.split("=")[0] == "glibc.malloc.hugetlb" for item in current.split(":")):
        return None
    if not (_glibc_has_tunable() if supported is None else supported):
        return None
    return f"{current}:{TUNABLE}" if current else TUNABLE


def environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default ``os.environ``) with the tunable added where :func:`ensure` would add it:
    for a child process."""
    env = dict(os.environ if env is None else env)
    value = tunables_with_huge_pages(env)
    if value is not None:
        env["GLIBC_TUNABLES"] = value
    return env


def ensure() -> None:
    """Re-execute this command with huge pages on, unless they are on, off or unavailable.

    Call it first thing in a command's ``__main__`` (it replaces the process: anything done before
    it is done twice). A process started from an interactive interpreter or from standard input
    cannot be re-executed and is left as it is.
    """
    env = environment()
    argv = list(getattr(sys, "orig_argv", []))
    unchanged = env.get("GLIBC_TUNABLES") == os.environ.get("GLIBC_TUNABLES")
    if unchanged or len(argv) < 2 or argv[1] == "-" or sys.flags.interactive:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except OSError:  # no exec here (a sandbox): run on without huge pages
        return
