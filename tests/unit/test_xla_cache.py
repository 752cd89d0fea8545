"""naturalspeech2_jax.xla_cache: where the persistent compilation cache goes, and that a second
process loads what the first compiled."""

from __future__ import annotations

import os
import subprocess
import sys

import jax

from naturalspeech2_jax import xla_cache

# A process that turns the cache on (the default folder is $XDG_CACHE_HOME/...), compiles one
# program and prints the folder and how many cache hits it had.
_CHILD = """
import jax, jax.numpy as jnp
from naturalspeech2_jax import xla_cache
hits = []
HIT = "/jax/compilation_cache/cache_hits"
jax.monitoring.register_event_listener(lambda e, **kw: hits.append(e) if e == HIT else None)
path = xla_cache.enable()
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((64, 64))).block_until_ready()
print(path, len(hits))
"""


def _child(tmp_path, **env) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR",)}
    base.update(XLA_FLAGS="", JAX_PLATFORMS="cpu", XDG_CACHE_HOME=str(tmp_path / "xdg"), **env)
    proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=base)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.split()


def test_a_second_process_loads_the_first_ones_program(tmp_path):
    default = str(tmp_path / "xdg" / "naturalspeech2_jax" / "xla")
    assert _child(tmp_path) == [default, "0"]  # compiled and written
    assert os.listdir(default)
    path, hits = _child(tmp_path)
    assert path == default and int(hits) >= 1  # loaded, not compiled (jnp.ones is one too)
    # JAX's own variable wins over the default; NS2_XLA_CACHE=off turns the cache off.
    own = str(tmp_path / "own")
    assert _child(tmp_path, JAX_COMPILATION_CACHE_DIR=own) == [own, "0"]
    assert _child(tmp_path, NS2_XLA_CACHE="off") == ["None", "0"]


def test_folder_order_and_a_folder_that_cannot_be_made(tmp_path, monkeypatch):
    before = jax.config.jax_compilation_cache_dir, jax.config.jax_compilation_cache_max_size
    try:
        monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
        monkeypatch.delenv("JAX_COMPILATION_CACHE_MAX_SIZE", raising=False)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        assert xla_cache.default_dir() == str(tmp_path / "naturalspeech2_jax" / "xla")
        assert xla_cache.enable(str(tmp_path / "given")) == str(tmp_path / "given")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "given")
        assert jax.config.jax_compilation_cache_max_size == xla_cache.DEFAULT_MAX_BYTES
        (tmp_path / "file").write_text("")  # a file where the folder should go: no cache
        assert xla_cache.enable(str(tmp_path / "file" / "xla")) is None
    finally:
        jax.config.update("jax_compilation_cache_dir", before[0])
        jax.config.update("jax_compilation_cache_max_size", before[1])
