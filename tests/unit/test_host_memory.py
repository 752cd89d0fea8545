"""naturalspeech2_jax/host_memory.py: the commands re-execute once with glibc's huge-page
tunable, and their malloc'd buffers then come in transparent huge pages."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from naturalspeech2_jax import host_memory

REPO = pathlib.Path(__file__).resolve().parents[2]

# A command that calls ensure() first thing, then mallocs and touches 64 MiB and reports how
# much of its anonymous memory is in huge pages. Every start appends a line to STARTS.
_COMMAND = textwrap.dedent("""
    import ctypes, json, os, sys
    with open(os.environ["STARTS"], "a") as f:
        f.write("start\\n")
    from naturalspeech2_jax import host_memory
    host_memory.ensure()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    size = 64 << 20
    ctypes.memset(libc.malloc(size), 1, size)
    with open("/proc/self/smaps") as f:
        huge = sum(int(l.split()[1]) for l in f if l.startswith("AnonHugePages:"))
    print(json.dumps(dict(argv=sys.argv[1:], tunables=os.environ.get("GLIBC_TUNABLES"),
                          huge_kib=huge)))
""")


def test_the_tunable_is_added_once_and_never_over_the_users_choice():
    assert host_memory.tunables_with_huge_pages({}, supported=True) == "glibc.malloc.hugetlb=1"
    other = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert host_memory.tunables_with_huge_pages(other, supported=True) == (
        "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    )
    for env in (
        {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"},  # the user's choice stands
        {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2"},
        {"NS2_HUGE_PAGES": "off"},
    ):
        assert host_memory.tunables_with_huge_pages(env, supported=True) is None, env
    assert host_memory.tunables_with_huge_pages({}, supported=False) is None
    env = host_memory.environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", "A": "1"})
    assert env == {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", "A": "1"}


def _thp_mode() -> str | None:
    try:
        text = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return None
    return text[text.index("[") + 1 : text.index("]")] if "[" in text else None


def _run(tmp_path, extra_env: dict[str, str]) -> tuple[dict, int]:
    script = tmp_path / "command.py"
    script.write_text(_COMMAND)
    starts = tmp_path / f"starts_{len(list(tmp_path.iterdir()))}"
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "NS2_HUGE_PAGES")}
    env.update(extra_env, STARTS=str(starts), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(script), "--flag=a b", "x"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), len(starts.read_text().splitlines())


def test_a_command_reexecutes_once_with_its_arguments_and_gets_huge_pages(tmp_path):
    if host_memory.tunables_with_huge_pages({}) is None:
        pytest.skip("this libc has no glibc.malloc.hugetlb tunable (glibc >= 2.35 on Linux)")
    out, starts = _run(tmp_path, {})
    assert starts == 2 and out["argv"] == ["--flag=a b", "x"]
    assert out["tunables"] == host_memory.TUNABLE
    off, off_starts = _run(tmp_path, {"NS2_HUGE_PAGES": "off"})
    assert off_starts == 1 and off["tunables"] is None
    if _thp_mode() not in ("madvise", "always"):
        pytest.skip(f"the kernel's transparent huge pages are {_thp_mode()!r}")
    # 64 MiB malloc'd and touched: in huge pages with the tunable; with the kernel's "madvise"
    # mode, in none without it.
    assert out["huge_kib"] >= 32 << 10, out
    if _thp_mode() == "madvise":
        assert off["huge_kib"] < out["huge_kib"] // 2, (off, out)
