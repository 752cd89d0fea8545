"""Every preset of every training config builds; the paper presets only abstractly (dry run).
So do the NS2 model sizes (``configs/ns2_model.py``). The dry run's CLI: tests/integration."""

from __future__ import annotations

import importlib
import json
import pathlib

import pytest

from configs.ns2_model import SIZES, model_config
from naturalspeech2_jax.train import loop
from tests.helpers import REPO

# The training configs: the modules of configs/ with a get_config (common.py and ns2_model.py
# hold what they share).
CONFIGS = sorted(
    p.stem
    for p in (REPO / "configs").glob("*.py")
    if hasattr(importlib.import_module(f"configs.{p.stem}"), "get_config")
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


def test_configs_are_plain_data():
    # Configs must be serialisable (they are stored in every checkpoint).
    for name in CONFIGS:
        json.loads(get(name, "smoke").to_json_best_effort())
    assert pathlib.Path(REPO / "configs" / "common.py").exists()


def test_training_configs_are_the_expected_modules():
    assert CONFIGS == ["aligner", "codec", "diffusion", "loop_test"]


def test_bench44m_matches_the_speed_reference_sizes():
    c = model_config("bench44m")
    assert (c.enc_layers, c.prompt_layers, c.dim, c.enc_filter, c.prompt_filter) == (
        4, 4, 256, 1024, 1024,
    )  # fmt: skip
    assert (c.pred_layers, c.pred_attn_every, c.wn_layers, c.wn_dim, c.num_queries) == (
        12, 3, 12, 256, 32,
    )  # fmt: skip
    assert c.heads == 8  # the PyTorch reference's
    with pytest.raises(ValueError, match="unknown NS2 model preset"):
        model_config("huge")


def test_ns2_model_sizes_are_the_diffusion_configs_models():
    """``configs/diffusion.py`` takes its ``model`` from ``configs/ns2_model.py`` unchanged."""
    assert set(SIZES) >= {"smoke", "tiny", "base", "bench44m", "paper"}
    for preset in PRESETS:
        assert get("diffusion", preset).model.to_dict() == model_config(preset).to_dict(), preset
