"""NS2 training throughput without a trained codec (random codec, realistic shapes).

    python launch/ns2_throughput.py PRESET STEPS [WORKDIR]

Builds (once, under WORKDIR, default /tmp/ns2_throughput) a codes dataset from the embedded smoke
dataset with random codes for a 16 x 1024 x 256 codec, replaces ``ns2_task.load_codec_assets`` by
a random codec and trains ``configs/diffusion.py:PRESET`` for STEPS steps through the generic loop,
printing the logged metrics (``steps_per_sec`` every 5 steps; the first window holds compilation).
Latent frames/s = steps_per_sec x batch_size x bucket frames (``model/target_frames`` and
``model/prompt_frames`` are the real frames per utterance).
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

SHAPE = (16, 1024, 256)
KEYS = ("step", "steps_per_sec", "model/loss", "model/data", "model/ce_rvq", "model/duration_l1",
        "model/pitch_l1", "model/target_frames", "model/prompt_frames")  # fmt: skip


def random_codes_dataset(root: pathlib.Path) -> pathlib.Path:
    import numpy as np

    from naturalspeech2_jax.data import embedded, pipeline, tfds_builder

    out = root / "embedded_codes" / "1.0.0"
    if (out / "features.json").exists():
        return out
    src = embedded.embedded_dataset_dir("smoke")
    rng = np.random.default_rng(0)
    dtype = tfds_builder.features(SHAPE[0])["codes"].np_dtype

    def split(name):
        def gen():
            s = pipeline.open_split(src, name)
            for i in range(len(s)):
                ex = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in s[i].items()}
                ex["codes"] = rng.integers(0, SHAPE[1], (len(ex["log_f0"]), SHAPE[0])).astype(dtype)
                yield ex

        return gen

    splits = {"train": split("train"), "heldout": split("heldout")}
    out = tfds_builder.write_dataset(root, "embedded_codes", splits, num_quantizers=SHAPE[0])
    (out / "codec.json").write_text(json.dumps({"codec_checkpoint": "/random/codec"}))
    with (out / "latent_stats.npz").open("wb") as f:
        np.savez(f, mean=np.zeros(SHAPE[2], np.float32), std=np.full(SHAPE[2], 4.0, np.float32))
    return out


def main(preset: str, steps: int, base: pathlib.Path) -> None:
    import numpy as np

    import configs.diffusion as diffusion
    from naturalspeech2_jax.models import ns2_task
    from naturalspeech2_jax.train import loop
    from naturalspeech2_jax.train.metrics import read_metrics

    def random_codec(checkpoint, dataset_dir=None):
        cb = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
        stats = {"mean": np.zeros(SHAPE[2], np.float32), "std": np.full(SHAPE[2], 4.0, np.float32)}
        silence = lambda z: np.zeros((z.shape[0], z.shape[1] * 200), np.float32)
        return ns2_task.CodecAssets(cb, stats, silence, checkpoint)

    ns2_task.load_codec_assets = random_codec
    c = diffusion.get_config(preset)
    c.data.dataset_dir = str(random_codes_dataset(base / "data"))
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
