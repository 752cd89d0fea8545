"""Run with the PRE-restructure code (PYTHONPATH=/tmp/ns2_old, commit 724944b): train loop_test
smoke a few steps and dump the Trainer's evaluation (EMA) weights and raw weights as .npz."""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax
import numpy as np
from flax import nnx

import naturalspeech2_jax
from configs import loop_test
from configs.common import apply_overrides
from naturalspeech2_jax.train import loop
from naturalspeech2_jax.train import state as state_lib

assert naturalspeech2_jax.__file__.startswith("/tmp/ns2_old/"), naturalspeech2_jax.__file__


def arrays(model):
    pure = nnx.to_pure_dict(nnx.state(model))
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
        for path, v in jax.tree_util.tree_flatten_with_path(pure)[0]
    }


workdir = sys.argv[1]
cfg = loop_test.get_config("smoke")
apply_overrides(
    cfg,
    {
        "total_steps": 4,
        "checkpoint_every": 4,
        "log_every": 1,
        "async_checkpoints": False,
        "ema_decay": 0.5,
        "model.hidden": 8,
        "num_devices": 1,
        "keep_checkpoints": 1,
        "mesh": dict(data=1, fsdp=1, model=1),
        "data.num_examples": 32,
    },
)
trainer = loop.Trainer(cfg, workdir)
state = trainer.run()
# A fresh Trainer restores the checkpoint as the old code's inference did.
trainer2 = loop.Trainer(cfg, workdir)
restored = trainer2.restore_or_init(None)
trainer2.checkpointer.close()
ema = arrays(trainer2.eval_model(restored))
raw_model = state_lib.merge_model(
    trainer2.graphdef, trainer2.groups, restored.params, restored.rest
)
raw = arrays(raw_model)
for k, v in arrays(trainer.eval_model(state)).items():
    np.testing.assert_array_equal(v, ema[k])
np.savez(os.path.join(workdir, "eval_weights.npz"), **ema)
np.savez(os.path.join(workdir, "raw_weights.npz"), **raw)
print("step", int(restored.step), {k: v.shape for k, v in ema.items()})
