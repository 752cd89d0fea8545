"""Generic-loop test config: a small convolutional regressor on synthetic data.

It exercises everything the real models rely on (sharded state, resume, EMA, accumulation,
mixed precision, multi-host) in seconds, and is what the foundation tests train.

    python launch/train.py --config=configs/loop_test.py:smoke --workdir=/tmp/loop

Hardware: any (1 CPU core is enough). Expected: `model/loss` (MSE) falls from about 1.5 to
below 0.5 within the smoke preset's 40 steps; `tiny` (400 steps, ~1 min on 2 cores) below 0.15.
Presets: smoke, tiny, base, paper (base/paper only widen the model; they exist so every config
offers the same preset names).
"""

from __future__ import annotations

import ml_collections

from configs.common import base_config, select_preset

PRESETS = {
    # name: (hidden, total_steps, batch)
    "smoke": (32, 40, 16),
    "tiny": (64, 400, 32),
    "base": (256, 2000, 64),
    "paper": (1024, 10000, 256),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = select_preset(PRESETS, arg, __name__)
    hidden, steps, batch = PRESETS[preset]
    c = base_config()
    c.preset = preset
    c.task = "loop_test"
    c.total_steps = steps
    c.batch_size = batch
    c.model = ml_collections.ConfigDict(dict(features=8, hidden=hidden, length=16, dropout=0.1))
    c.data = ml_collections.ConfigDict(dict(num_examples=256))
    c.optim.lr = 3e-3
    c.optim.warmup_steps = 10
    c.log_every = 10
    c.checkpoint_every = 20
    return c
