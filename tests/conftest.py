"""Test set-up: 8 simulated CPU devices before JAX starts, and the ../shared/data location."""

import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("NS2_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> pathlib.Path:
    """Path to ../shared/data; skips the test when it is absent (a fresh clone has none)."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"{SHARED_DATA} is absent")
    return SHARED_DATA


import sys  # noqa: E402

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # config modules import `configs.common`


def load_config(name: str, preset: str = "smoke", **overrides):
    """``configs/<name>.py:<preset>`` as a ConfigDict with dotted-key overrides applied."""
    import importlib

    from configs.common import apply_overrides

    config = importlib.import_module(f"configs.{name}").get_config(preset)
    apply_overrides(config, overrides)
    return config


@pytest.fixture(scope="session")
def smoke_pipeline(tmp_path_factory) -> pathlib.Path:
    """``launch/quickstart.py --preset=smoke`` run once per session: W/{data,codec,ns2,samples,
    eval} with a smoke codec and a smoke NS2 checkpoint (a few steps; noise comes out). Its XLA
    cache is W/xla_cache (the notebooks' test reuses it)."""
    import subprocess

    workdir = tmp_path_factory.mktemp("quickstart_smoke")
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", NS2_DATA_DIR=str(workdir / "cache"))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch" / "quickstart.py"), f"--workdir={workdir}",
         "--preset=smoke"], capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir
