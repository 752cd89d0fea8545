"""Optimizers and learning-rate schedules built from a config (pure optax, no state here).

Config (``config.optim``, or one per parameter group in GAN training)::

    name: adamw | adam        lr: peak learning rate        b1, b2, eps, weight_decay
    schedule: inverse_sqrt | cosine | constant                warmup_steps: linear warm-up
    clip_norm: global-norm gradient clipping (0 disables)     decay_steps (cosine; default total)
    min_lr_ratio: floor of cosine decay as a fraction of lr
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import optax


def make_schedule(cfg: Mapping[str, Any], total_steps: int) -> optax.Schedule:
    """Linear warm-up followed by inverse-sqrt (the paper's), cosine or constant decay."""
    lr = float(cfg["lr"])
    warmup = int(cfg.get("warmup_steps", 0))
    kind = cfg.get("schedule", "inverse_sqrt")

    def warm(step):
        if warmup <= 0:
            return jnp.ones_like(step, jnp.float32)
        return jnp.minimum(1.0, (step + 1.0) / warmup)

    if kind == "constant":
        return lambda step: lr * warm(jnp.asarray(step, jnp.float32))
    if kind == "inverse_sqrt":
        # lr * min((s+1)/w, sqrt(w/(s+1))): peaks at the end of warm-up, then decays as 1/sqrt(s).
        def schedule(step):
            s = jnp.asarray(step, jnp.float32)
            decay = jnp.sqrt(max(warmup, 1) / jnp.maximum(s + 1.0, max(warmup, 1)))
            return lr * warm(s) * decay

        return schedule
    if kind == "cosine":
        decay_steps = int(cfg.get("decay_steps") or total_steps)
        floor = float(cfg.get("min_lr_ratio", 0.0))

        def schedule(step):
            s = jnp.asarray(step, jnp.float32)
            frac = jnp.clip((s - warmup) / max(decay_steps - warmup, 1), 0.0, 1.0)
            cos = 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
            return lr * warm(s) * (floor + (1.0 - floor) * cos)

        return schedule
    raise ValueError(f"unknown schedule {kind!r}; use inverse_sqrt, cosine or constant.")


def make_optimizer(cfg: Mapping[str, Any], total_steps: int) -> optax.GradientTransformation:
    """Clip by global norm, then Adam(W) driven by the schedule."""
    schedule = make_schedule(cfg, total_steps)
    name = cfg.get("name", "adamw")
    b1, b2, eps = float(cfg.get("b1", 0.9)), float(cfg.get("b2", 0.98)), float(cfg.get("eps", 1e-9))
    if name == "adamw":
        opt = optax.adamw(
            schedule, b1=b1, b2=b2, eps=eps, weight_decay=float(cfg.get("weight_decay", 0.0))
        )
    elif name == "adam":
        opt = optax.adam(schedule, b1=b1, b2=b2, eps=eps)
    else:
        raise ValueError(f"unknown optimizer {name!r}; use adamw or adam.")
    clip = float(cfg.get("clip_norm", 0.0))
    return optax.chain(optax.clip_by_global_norm(clip), opt) if clip > 0 else opt
