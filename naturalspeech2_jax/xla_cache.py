"""JAX's persistent compilation cache, on by default for the commands that train and synthesize.

A compiled program is written to disk, and a later process that compiles the same program (same
model, shapes, mesh, XLA flags and JAX version) loads it instead: a resumed or restarted training
run, a second synthesis or evaluation of a checkpoint, the web demo started again. On this
project's CPU the smoke NS2 training of tests/unit/tasks/test_ns2.py took 62 s, and 23 s when run
again with the cache of the first run.

Where the cache lives, the first that applies:

1. ``$JAX_COMPILATION_CACHE_DIR`` (JAX's own variable; a ``gs://`` path works through etils);
2. the command's own default (``launch/quickstart.py``: ``<workdir>/xla_cache``);
3. ``$XDG_CACHE_HOME/naturalspeech2_jax/xla``, i.e. ``~/.cache/naturalspeech2_jax/xla``.

``NS2_XLA_CACHE=off`` turns it off. Only programs that took at least a second to compile are
kept (JAX's ``jax_persistent_cache_min_compile_time_secs``), and the folder is bounded at 8 GiB,
least recently used first out (``jax_compilation_cache_max_size``; set
``JAX_COMPILATION_CACHE_MAX_SIZE`` to change it). JAX treats the cache as trusted code: do not
point it at a folder that others can write.

Benchmarks that report compile times (``benchmarks/reference_speed.py``, ``launch/train.py
--compile_only``) do not turn it on, so that their compile figures are compilations.
"""

from __future__ import annotations

import logging
import os

__all__ = ["DEFAULT_MAX_BYTES", "default_dir", "enable"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 8 << 30


def default_dir() -> str:
    """``$XDG_CACHE_HOME/naturalspeech2_jax/xla`` (``~/.cache/...`` without XDG_CACHE_HOME)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "naturalspeech2_jax", "xla")


def enable(default: str | None = None) -> str | None:
    """Turn the cache on (call before the first compilation); returns its folder, or None when
    ``NS2_XLA_CACHE=off``. See the module docstring for the order the folder is chosen in."""
    if os.environ.get("NS2_XLA_CACHE", "").lower() in ("off", "0", "false", "no"):
        return None
    import jax

    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or default or default_dir()
    if "://" not in path:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:  # a read-only home: run without the cache rather than fail
            log.warning("XLA compilation cache off: cannot create %s (%s)", path, e.strerror)
            return None
    jax.config.update("jax_compilation_cache_dir", path)
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
        jax.config.update("jax_compilation_cache_max_size", DEFAULT_MAX_BYTES)
    return path
