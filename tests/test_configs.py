"""Every preset of every training config builds; the paper presets only abstractly (dry run)."""

from __future__ import annotations

import importlib
import json
import pathlib
import subprocess
import sys

import pytest
from conftest import REPO

from naturalspeech2_jax.train import loop

CONFIGS = sorted(
    p.stem for p in (REPO / "configs").glob("*.py") if p.stem not in ("__init__", "common")
)
PRESETS = ("smoke", "tiny", "base", "paper")


def get(name: str, preset: str):
    return importlib.import_module(f"configs.{name}").get_config(preset)


@pytest.mark.parametrize("name", CONFIGS)
def test_module_docstring_gives_command_and_expectation(name):
    doc = importlib.import_module(f"configs.{name}").__doc__ or ""
    assert "launch/train.py" in doc and "Expected" in doc, f"configs/{name}.py docstring"


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", CONFIGS)
def test_every_preset_builds_abstractly(name, preset):
    config = get(name, preset)
    assert config.total_steps > 0 and config.task
    counts = loop.param_counts(config)
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total") > 0


VARIANTS = [
    (name, preset)
    for name in CONFIGS
    for preset in getattr(importlib.import_module(f"configs.{name}"), "PRESETS", {})
    if preset not in PRESETS
]


@pytest.mark.parametrize(("name", "preset"), VARIANTS)
def test_variant_presets_build_abstractly(name, preset):
    counts = loop.param_counts(get(name, preset))
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total") > 0


def test_spectral_codec_preset_is_the_frame_rate_codec():
    config = get("codec", "tiny_spectral")
    assert config.model.kind == "spectral" and config.data.crop_frames == 80
    assert config.disc.start_step > config.total_steps  # no GAN: measured without it
    counts = loop.param_counts(config)
    # Width 256, depths (4, 8): encoder 2.37M + decoder 3.84M (the docstring's 6.2M).
    assert (counts["encoder"], counts["decoder"]) == (2_373_888, 3_842_594)


@pytest.mark.parametrize("name", CONFIGS)
def test_smoke_preset_initialises_real_state(name, tmp_path):
    trainer = loop.Trainer(get(name, "smoke"), tmp_path)
    state = trainer.restore_or_init(None)
    assert int(state.step) == 0


def test_unknown_preset_fails_with_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        get(CONFIGS[0], "huge")


def test_dry_run_prints_param_json_as_last_line():
    out = (
        subprocess.run(
            [
                sys.executable,
                str(REPO / "launch" / "train.py"),
                f"--config={REPO / 'configs' / 'loop_test.py'}:paper",
                "--dry_run",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    params = json.loads(out)["params"]
    assert params["total"] == sum(v for k, v in params.items() if k != "total")
    assert set(params) >= {"conv", "up", "down", "head", "total"}


def test_configs_are_plain_data():
    # Configs must be serialisable (they are stored in every checkpoint).
    for name in CONFIGS:
        json.loads(get(name, "smoke").to_json_best_effort())
    assert pathlib.Path(REPO / "configs" / "common.py").exists()
