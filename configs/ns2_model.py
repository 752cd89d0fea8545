"""NaturalSpeech 2 model sizes: the ``model`` sub-dict of ``configs/diffusion.py``, per preset.

smoke (tests, seconds), tiny (CPU, minutes), base (one GPU), bench44m (the speed reference of
EVALUATION.md, 42.9M), paper (the paper's sizes: 404.6M without the codec; per-module counts in
``naturalspeech2_jax/models/ns2.py``). Check any of them without memory:

    python launch/train.py --config=configs/diffusion.py:paper --dry_run
"""

from __future__ import annotations

import ml_collections

SIZES = {
    # Seconds on CPU (unit tests).
    "smoke": dict(
        dim=32, heads=2, enc_layers=1, enc_filter=64, prompt_layers=1, prompt_filter=64,
        pred_layers=3, wn_layers=3, wn_dim=32, num_queries=4, pitch_bins=32, scan_layers=False,
    ),
    # Minutes on CPU (demo training).
    "tiny": dict(
        dim=128, heads=4, enc_layers=2, enc_filter=512, prompt_layers=2, prompt_filter=512,
        pred_layers=6, wn_layers=9, wn_dim=128, num_queries=16, scan_layers=False,
    ),
    # One GPU.
    "base": dict(
        dim=384, heads=6, enc_layers=4, enc_filter=1536, prompt_layers=4, prompt_filter=1536,
        pred_layers=15, wn_layers=24, wn_dim=384,
    ),
    # EVALUATION.md speed reference, first row (PyTorch: 44.6M params).
    "bench44m": dict(
        dim=256, heads=8, enc_layers=4, enc_filter=1024, prompt_layers=4, prompt_filter=1024,
        pred_layers=12, wn_layers=12, wn_dim=256,
    ),
    # The paper's sizes (408M without the codec; see the module docstring).
    "paper": dict(
        dim=512, heads=8, enc_layers=6, enc_filter=2048, prompt_layers=6, prompt_filter=2048,
        pred_layers=30, wn_layers=40, wn_dim=512, wn_cond_kernel=3,
    ),
}  # fmt: skip


def model_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    """The ``model`` sub-dict for a preset: smoke, tiny, base, bench44m or paper."""
    if preset not in SIZES:
        raise ValueError(f"unknown NS2 model preset {preset!r}; choose one of {sorted(SIZES)}.")
    c = dict(
        vocab_size=256,  # phoneme vocabulary (text/ sets the real one)
        dim=512,  # encoders, predictors, prompt, queries
        heads=8,
        enc_layers=6,
        enc_filter=2048,
        enc_kernels=(9, 1),
        enc_dropout=0.1,
        prompt_layers=6,
        prompt_filter=2048,
        pred_layers=30,
        pred_attn_every=3,
        dur_kernel=3,
        pitch_kernel=5,
        pred_dropout=0.5,
        pitch_bins=256,
        f0_min=40.0,
        f0_max=1100.0,
        num_queries=32,
        wn_layers=40,
        wn_dim=512,
        wn_kernel=3,
        wn_dilation_cycle=2,
        wn_cond_kernel=1,
        wn_film_every=3,
        wn_dropout=0.2,
        # Diffusion and loss.
        beta_min=0.05,
        beta_max=20.0,
        t_min=1e-3,
        score_weight_cap=1.0,
        w_data=1.0,
        w_score=1.0,
        w_ce_rvq=0.1,
        # CE-RVQ on at most this many random valid frames per utterance (0 = all frames). Its
        # logits cost B x T x 16 x 1024 x 256 MACs, more than the whole tiny model on a CPU; a
        # random subset is an unbiased estimate of the same mean.
        ce_rvq_frames=0,
        w_duration=1.0,
        w_pitch=1.0,
        # Training prompt: a segment of whole phonemes, in codec frames (80 per second).
        prompt_min_frames=40,
        prompt_max_frames=240,
        prompt_max_ratio=0.5,
        prompt_drop_prob=0.0,  # > 0 trains the unconditional model for classifier-free guidance
        # > 0 also drops the frame-level condition (phonemes + pitch) with the prompt, so guidance
        # extrapolates away from "any speech" towards these phonemes in this voice (VoiceBox,
        # F5-TTS): what a small model needs when its samples drift off the text.
        cond_drop_prob=0.0,
        # Layer stacks scanned (one compiled block per stack: compile time independent of depth)
        # or looped, and the per-block rematerialisation "none", "dots_saveable" or "full". The
        # small presets loop: at their sizes the looped step is the faster one on CPU.
        # docs/experiments/speed.md has the measurements.
        scan_layers=True,
        remat="none",
    )
    c.update(SIZES[preset])
    if preset == "smoke":
        c.update(prompt_min_frames=4, prompt_max_frames=16, enc_dropout=0.0, ce_rvq_frames=32)
    if preset == "tiny":
        c.update(ce_rvq_frames=64)
    return ml_collections.ConfigDict(c)
