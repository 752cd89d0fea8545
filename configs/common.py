"""Settings shared by every training config: devices, precision, loop cadence, checkpoints.

Each model config starts from ``base_config()`` and sets its task, model, data and optimizer.
Override anything on the command line: ``--config.total_steps=100 --config.mesh.fsdp=2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections


def apply_overrides(config: Any, overrides: Mapping[str, Any], sep: str = ".") -> None:
    """Set dotted keys in place: ``{"mesh.data": 2}`` is ``--config.mesh.data=2`` in code
    (``sep="__"`` for keys that travel as Python keyword arguments, ``mesh__data=2``)."""
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split(sep)
        for p in parents:
            node = node[p]
        node[leaf] = value


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = ""
    c.seed = 0
    c.total_steps = 1000
    c.batch_size = 8  # global, over all devices and processes
    c.grad_accum = 1  # micro-batches per step (the batch is split, not repeated)

    # Devices: (data, fsdp, model) mesh; -1 = the rest of the devices.
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))
    c.num_devices = 0  # 0 = all devices; n = the first n (debugging, mesh tests)
    c.axis_rules = ()  # empty = parallel.DEFAULT_RULES; else [[logical, mesh axes], ...]
    c.distributed = False  # call jax.distributed.initialize() (or set NS2_DISTRIBUTED=1)

    # Mixed precision: master weights and optimizer state in param_dtype, forward/backward in
    # compute_dtype (bfloat16 for accelerator presets). conv_weight_grad: how 1-D convolutions
    # take their weight gradient, "xla" (XLA's transposed convolution), "matmul" (one matmul per
    # kernel tap) or "auto" (matmul inside scanned stacks on CPU, where XLA's form is slow; xla
    # elsewhere and on accelerators): models/conv.py.
    c.precision = ml_collections.ConfigDict(
        dict(param_dtype="float32", compute_dtype="float32", conv_weight_grad="auto")
    )

    c.optim = ml_collections.ConfigDict(
        dict(
            name="adamw",
            lr=1e-3,
            b1=0.9,
            b2=0.98,
            eps=1e-9,
            weight_decay=0.0,
            schedule="inverse_sqrt",
            warmup_steps=100,
            clip_norm=1.0,
            decay_steps=0,
            min_lr_ratio=0.0,
        )
    )
    c.ema_decay = 0.0  # parameter EMA (0 disables; 0.999 typical for long runs)

    c.log_every = 50
    c.eval_every = 0  # 0 disables periodic evaluation
    c.checkpoint_every = 1000
    c.keep_checkpoints = 3
    c.async_checkpoints = True
    c.max_nonfinite_steps = 20  # stop after this many consecutive NaN/Inf steps
    c.profile_steps = 0  # >0: write a profiler trace of this many steps to <workdir>/profile
    c.profile_start = 10
    c.init_from = ""  # workdir whose latest checkpoint initialises the weights of a fresh run
    return c


def select_preset(presets: dict, arg: str | None, module: str) -> str:
    """The preset named after the colon in ``--config=configs/X.py:preset`` (validated)."""
    name = arg or "tiny"
    if name not in presets:
        raise ValueError(f"{module}: unknown preset {name!r}; choose one of {sorted(presets)}.")
    return name
