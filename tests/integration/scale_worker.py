"""One process of the multi-host tests in ``test_scale.py`` (run as a script, never collected).

    python tests/integration/scale_worker.py --dataset=DIR [--restore_dir=RUN --out=P.npz] \
        [--train_dir=RUN]

The parent sets ``NS2_DISTRIBUTED=1``, ``NS2_COORDINATOR=127.0.0.1:PORT``, ``NS2_NUM_PROCESSES``
and ``NS2_PROCESS_ID``; ``parallel.maybe_initialize_distributed`` then starts jax.distributed
with gloo CPU collectives, and this process contributes 4 CPU devices to the global mesh.
``--restore_dir``: restore RUN's latest checkpoint on a data=2 x fsdp=4 mesh over both processes
and write every parameter, gathered from all processes, to ``--out`` (process 0).
``--train_dir``: train the NS2 smoke preset there (same config as the single-process run).
"""

from __future__ import annotations

import argparse

NS2_SMOKE_STEPS = 3
CB_SHAPE = (4, 16, 16)  # the fake codes dataset of tests/helpers.py (fake_codes_dataset)


def ns2_smoke_config(dataset: str, **overrides):
    """``configs/diffusion.py:smoke`` on the fake codes dataset with a random codec."""
    from configs import diffusion
    from configs.common import apply_overrides

    c = diffusion.get_config("smoke")
    c.data.dataset_dir = dataset
    c.codec.checkpoint = "random"  # random codebooks of CB_SHAPE: the same in every process
    c.codec.num_quantizers, c.codec.codebook_size, c.codec.latent_dim = CB_SHAPE
    c.total_steps = NS2_SMOKE_STEPS
    c.checkpoint_every = NS2_SMOKE_STEPS
    c.async_checkpoints = False
    apply_overrides(c, overrides)
    return c


def flat_params(state) -> dict:
    """{"a|b|c": numpy array} of the parameters, gathered from every process."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    out = {}
    for path, v in jax.tree_util.tree_flatten_with_path(state.params)[0]:
        name = "|".join(str(getattr(k, "key", k)) for k in path)
        out[name] = np.asarray(multihost_utils.process_allgather(v, tiled=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--restore_dir", default="")
    parser.add_argument("--out", default="")
    parser.add_argument("--train_dir", default="")
    args = parser.parse_args()

    import jax
    import numpy as np

    jax.config.update("jax_num_cpu_devices", 4)
    from naturalspeech2_jax import parallel
    from naturalspeech2_jax.train import loop

    parallel.maybe_initialize_distributed(True)
    if jax.process_count() != 2 or jax.device_count() != 8:
        raise SystemExit(f"expected 2 processes x 4 devices, got {jax.process_count()} processes")
    if args.restore_dir:
        cfg = ns2_smoke_config(args.dataset, **{"mesh.data": 2, "mesh.fsdp": 4})
        trainer = loop.Trainer(cfg, args.restore_dir)
        state = trainer.restore_or_init(None)
        trainer.checkpointer.close()
        params = flat_params(state)
        if parallel.is_main_process():
            with open(args.out, "wb") as f:
                np.savez(f, step=int(state.step), **params)
    if args.train_dir:
        loop.train(ns2_smoke_config(args.dataset), args.train_dir)


if __name__ == "__main__":
    main()
