"""NS2 training throughput without a trained codec (random codec, realistic shapes).

    python launch/ns2_throughput.py PRESET STEPS [WORKDIR]

Builds (once, under WORKDIR, default /tmp/ns2_throughput) a codes dataset from the embedded smoke
dataset with random codes for a 16 x 1024 x 256 codec, names the codec checkpoint "random"
(``naturalspeech2_jax.tasks.random_codec``: speed does not depend on the codec's weights) and
trains ``configs/diffusion.py:PRESET`` for STEPS steps through the generic loop, printing the
logged metrics (``steps_per_sec`` every 5 steps; the first window holds compilation).
Latent frames/s = steps_per_sec x batch_size x bucket frames (``model/target_frames`` and
``model/prompt_frames`` are the real frames per utterance).
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

KEYS = ("step", "steps_per_sec", "model/loss", "model/data", "model/ce_rvq", "model/duration_l1",
        "model/pitch_l1", "model/target_frames", "model/prompt_frames")  # fmt: skip


def main(preset: str, steps: int, base: pathlib.Path) -> None:
    import configs.diffusion as diffusion
    from naturalspeech2_jax.tasks import random_codec
    from naturalspeech2_jax.train import loop
    from naturalspeech2_jax.train.metrics import read_metrics

    c = diffusion.get_config(preset)
    c.data.dataset_dir = str(random_codec.random_codes_dataset(base / "data"))
    c.codec.checkpoint = random_codec.RANDOM_CODEC
    c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = steps, 5, 0, 10**9
    c.async_checkpoints = False
    workdir = base / f"run_{preset}_{time.time():.0f}"
    start = time.time()
    loop.train(c, workdir)
    for row in read_metrics(workdir):
        if "steps_per_sec" in row:
            print(json.dumps({k: round(float(row[k]), 4) for k in KEYS if k in row}))
    print(f"wall {time.time() - start:.1f} s")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit("usage: python launch/ns2_throughput.py PRESET STEPS [WORKDIR]")
    main(sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3] if len(sys.argv) > 3 else
                                                     "/tmp/ns2_throughput"))  # fmt: skip
