"""The Synthesizer's checks that need no checkpoint (the rest: tests/integration)."""

from __future__ import annotations

import numpy as np
import pytest

from configs.ns2_model import model_config
from naturalspeech2_jax.inference import SynthesisError, Synthesizer


def test_guidance_needs_a_model_trained_with_condition_dropout():
    """guidance_scale != 1 on a model without an unconditional branch fails in one sentence."""
    import ml_collections

    cfg = ml_collections.ConfigDict({"model": model_config("smoke")})
    stats = {"mean": np.zeros(4), "std": np.ones(4)}
    synth = Synthesizer(None, None, None, stats, cfg, checkpoint="runs/plain")
    synth.check_guidance(1.0)
    with pytest.raises(SynthesisError, match=r"runs/plain was trained with neither"):
        synth.check_guidance(2.0)
    with pytest.raises(SynthesisError, match="cond_drop_prob"):  # before any model call
        synth.synthesize("hello", np.zeros(16000, np.float32), guidance_scale=2.0)
    cfg.model.cond_drop_prob = 0.2
    synth.check_guidance(2.0)
    cfg.model.cond_drop_prob, cfg.model.prompt_drop_prob = 0.0, 0.1
    synth.check_guidance(3.0)
