"""Test set-up: 8 simulated CPU devices before JAX starts, the markers' skips, shared fixtures.

Layout: ``tests/unit/<subpackage>/`` mirrors ``naturalspeech2_jax/<subpackage>/`` (plus
``unit/test_parallel.py`` and ``unit/test_configs.py``); ``tests/integration/`` holds what runs
the launch scripts or several stages end to end (quickstart, multi-process, notebooks, CLIs).
Markers (pyproject.toml): ``slow``, ``shared_data``, ``multiprocess``, ``accelerator``,
``browser``, e.g. ``python -m pytest -m "not slow"``. Browser tests (the web demo in headless
Chromium) skip where Chromium, Playwright or Gradio is missing. Accelerator tests run only where
JAX's default backend is a GPU or TPU: ``JAX_PLATFORMS=cuda python -m pytest -m accelerator``
(JAX_PLATFORMS defaults to cpu here, so the rest of the suite sees 8 CPU devices).
"""

import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

# One persistent XLA cache for the whole run, made by the first process (the xdist controller, or
# the only one) and inherited by the workers and every subprocess a test starts: many tests
# compile the same smoke programs. The process that made it removes it at the end of the run.
if "NS2_TEST_XLA_CACHE" not in os.environ:
    import tempfile

    os.environ["NS2_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="ns2_tests_xla_")
    os.environ["NS2_TEST_XLA_CACHE_OWNER"] = str(os.getpid())
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["NS2_TEST_XLA_CACHE"]

# Huge pages for XLA's host buffers (naturalspeech2_jax/host_memory.py) in the xdist workers and
# every command a test starts: they inherit this environment (this process started without).
from naturalspeech2_jax import host_memory  # noqa: E402

os.environ.update(host_memory.environment())

import jax  # noqa: E402
import pytest  # noqa: E402

from tests.helpers import (  # noqa: E402, F401  (REPO and load_config: used by test modules)
    CODEC_TRAIN_STEPS,
    REPO,
    SHARED_DATA,
    codec_train_cli,
    fake_codes_dataset,
    load_config,
    tone_example,
)

jax.config.update("jax_num_cpu_devices", 8)


def _shared_data_present() -> bool:
    return (SHARED_DATA / "README.md").exists()


def _browser_missing() -> str | None:
    """Why the ``browser`` tests cannot run here (None when they can)."""
    import importlib.util

    from naturalspeech2_jax.demo.browser import chromium_path

    for module, extra in (("gradio", "demo"), ("playwright", "dev")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[{extra}]')"
    if chromium_path() is None:
        return "no Chromium (apt-get install chromium, or set NS2_CHROMIUM)"
    return None


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("NS2_TEST_XLA_CACHE_OWNER") == str(os.getpid()):
        import shutil

        shutil.rmtree(os.environ["NS2_TEST_XLA_CACHE"], ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Skip ``accelerator`` tests on a CPU backend, ``shared_data`` tests without the data and
    ``browser`` tests without Chromium, Playwright or Gradio."""
    on_cpu = jax.default_backend() == "cpu"
    have_data = _shared_data_present()
    no_browser = _browser_missing() if any(i.get_closest_marker("browser") for i in items) else None
    for item in items:
        if no_browser and item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.skip(reason=no_browser))
        if on_cpu and item.get_closest_marker("accelerator"):
            item.add_marker(pytest.mark.skip(reason="needs a GPU or TPU (JAX backend is cpu)"))
        if not have_data and item.get_closest_marker("shared_data"):
            item.add_marker(pytest.mark.skip(reason=f"{SHARED_DATA} is absent"))


@pytest.fixture
def shared_data() -> pathlib.Path:
    """Path to ../shared/data; skips the test when it is absent (a fresh clone has none)."""
    if not _shared_data_present():
        pytest.skip(f"{SHARED_DATA} is absent")
    return SHARED_DATA


def built_once(tmp_path_factory, name: str, build) -> pathlib.Path:
    """``build(dir)`` run once per test run, however many pytest-xdist workers ask for it.

    Session fixtures are per process: under ``-n 2`` (the CI command) each worker would build the
    smoke pipeline or the trained codec again, minutes of the same 2 cores. Workers share the
    parent of their base temp folder; the first one to take the lock builds, the others wait and
    reuse. Without xdist this is ``build(tmp_path_factory.mktemp(name))``.
    """
    import fcntl

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        out = tmp_path_factory.mktemp(name)
        build(out)
        return out
    root = tmp_path_factory.getbasetemp().parent
    out, done = root / name, root / f"{name}.built"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            if out.exists():  # a build that failed in another worker: start again
                import shutil

                shutil.rmtree(out)
            out.mkdir()
            build(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def smoke_pipeline(tmp_path_factory) -> pathlib.Path:
    """``launch/quickstart.py --preset=smoke`` run once per session: W/{data,codec,ns2,samples,
    eval} with a smoke codec and a smoke NS2 checkpoint (a few steps; noise comes out). Its XLA
    cache is W/xla_cache (the notebooks' test reuses it)."""
    import subprocess
    import sys

    def build(workdir):
        env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu",
                   NS2_DATA_DIR=str(workdir / "cache"))  # fmt: skip
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        proc = subprocess.run(
            [sys.executable, str(REPO / "launch" / "quickstart.py"), f"--workdir={workdir}",
             "--preset=smoke"], capture_output=True, text=True, env=env,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]

    return built_once(tmp_path_factory, "quickstart_smoke", build)


# ------------------------------------------------------------------------------ codec
@pytest.fixture(scope="session")
def codec_dataset(tmp_path_factory) -> str:
    """A prepared dataset of harmonic tones for the smoke codec.

    Train examples are exactly one crop long and fill one batch: every batch is the same
    (shuffled) set of crops, so the loss curve measures fitting a fixed batch. Two training
    splits (like the shared data's train + cathy) and held-out speakers.
    """
    from naturalspeech2_jax.data.tfds_builder import VERSION, write_dataset

    crop = load_config("codec").data.crop_frames

    def build(root):
        out = write_dataset(
            root,
            "codec_unit",
            {
                "train": lambda: (tone_example(crop, i) for i in range(5)),
                "cathy": lambda: (tone_example(crop, i) for i in range(5, 8)),
                "heldout": lambda: (tone_example(30 + 5 * i, 100 + i) for i in range(2)),
            },
        )
        (out / "vocab.json").write_text('{"version": "unit"}')
        (out / "speakers.json").write_text('["spk"]')

    # One dataset for every worker: the trained codec (also built once) records its path.
    return str(built_once(tmp_path_factory, "codec_data", build) / "codec_unit" / VERSION)


@pytest.fixture(scope="session")
def codec_xla_cache(tmp_path_factory) -> pathlib.Path:
    """A persistent XLA cache shared by the codec's launch/train.py runs.

    The trained codec's run and the no-data-argument run compile the same smoke step,
    evaluation and initialisation (same shapes, one device): the second run reads them from the
    cache instead of compiling again (most of the codec tests' time on 2 CPU cores is XLA).
    """
    return built_once(tmp_path_factory, "xla_cache", lambda d: None)


@pytest.fixture(scope="session")
def trained_codec(codec_dataset, codec_xla_cache, tmp_path_factory) -> pathlib.Path:
    """The workdir of ``configs/codec.py:smoke`` trained CODEC_TRAIN_STEPS steps on
    ``codec_dataset`` by ``launch/train.py`` (evaluated and checkpointed at the last step)."""

    def build(root):
        codec_train_cli(
            root / "run",
            codec_xla_cache,
            f"--config.data.dataset_dir={codec_dataset}",
            "--config.data.train_splits=train,cathy",
            f"--config.total_steps={CODEC_TRAIN_STEPS}",
            f"--config.eval_every={CODEC_TRAIN_STEPS}",
            f"--config.checkpoint_every={CODEC_TRAIN_STEPS}",
            "--config.async_checkpoints=False",
        )

    return built_once(tmp_path_factory, "codec_run", build) / "run"


# ------------------------------------------------------------------------------ NS2
@pytest.fixture(scope="session")
def ns2_codes_dataset(tmp_path_factory) -> str:
    """``tests.helpers.fake_codes_dataset``: a small codes dataset for a fake codec."""
    return fake_codes_dataset(tmp_path_factory.mktemp("ns2_codes"))


# ------------------------------------------------------------------------------ inference
@pytest.fixture(scope="session")
def synth(smoke_pipeline):
    """The Synthesizer of the quickstart's smoke NS2 run (``smoke_pipeline``)."""
    from naturalspeech2_jax.inference import Synthesizer

    return Synthesizer.from_checkpoint(smoke_pipeline / "ns2")


@pytest.fixture(scope="session")
def prompt(smoke_pipeline) -> str:
    """A prompt wav (another utterance of a held-out speaker) from the quickstart's samples."""
    prompts = sorted((smoke_pipeline / "samples").glob("*_prompt.wav"))
    assert prompts, "the quickstart's samples stage wrote no prompt"
    return str(prompts[0])
