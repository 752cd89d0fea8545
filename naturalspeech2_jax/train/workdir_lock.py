"""One training per work directory: an exclusive ``flock`` on ``<workdir>/.lock``.

The lock file records who holds it (host, pid, start time) so that a second run can name the
holder. ``flock`` belongs to the open file, so the kernel releases it when the process exits, also
on SIGKILL or a crash: a stale ``.lock`` file left behind never blocks the next run. Object stores
(gs://, s3://) cannot be locked; there the lock is skipped.

    with WorkdirLock(workdir):
        ...  # train
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
from typing import IO

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class WorkdirBusyError(RuntimeError):
    """Another process holds the work directory's lock."""


class WorkdirLock:
    """Exclusive, non-blocking lock on ``<workdir>/.lock``; ``acquire`` raises when it is held."""

    def __init__(self, workdir: str | os.PathLike):
        self.workdir = os.fspath(workdir)
        self.path = os.path.join(self.workdir, LOCK_NAME)
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> WorkdirLock:
        if "://" in self.workdir:
            log.debug("%s is an object store: no work-directory lock", self.workdir)
            return self
        if self._file is not None:
            return self
        os.makedirs(self.workdir, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = _describe(f.read())
            f.close()
            raise WorkdirBusyError(
                f"{self.workdir} is in use by {holder}; wait for it or pass another --workdir."
            ) from None
        now = datetime.datetime.now().astimezone()
        info = {"host": socket.gethostname(), "pid": os.getpid(), "since": now.isoformat()}
        f.seek(0)
        f.truncate()
        f.write(json.dumps(info) + "\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(text: str) -> str:
    """'pid 1234 on host X since 12:00:01' from the lock file's JSON, or a vaguer phrase."""
    try:
        info = json.loads(text)
        since = datetime.datetime.fromisoformat(info["since"])
        when = since.strftime("%H:%M:%S")
        if since.date() != datetime.date.today():
            when = since.strftime("%Y-%m-%d %H:%M:%S")
        return f"pid {info['pid']} on host {info['host']} since {when}"
    except (ValueError, KeyError, TypeError):
        return "another process (its lock file names no holder yet)"
