"""A random codec and a codes dataset made with it: NS2 speed measurements without a trained codec.

Training speed, memory and FLOPs of NaturalSpeech 2 do not depend on the codec's weights, only on
its shapes (16 quantizers x 1024 codes x 256 dims). ``launch/benchmark.py`` and
``launch/ns2_throughput.py`` therefore name the codec checkpoint ``"random"``
(``RANDOM_CODEC``): ``tasks.ns2.codec_assets`` then returns seeded random codebooks, unit
latent statistics scaled like a real codec's, and a silent decoder; the codes dataset is the
embedded smoke dataset with random code ids. Never use it to judge quality.
"""

from __future__ import annotations

import json

import numpy as np
from etils import epath

from naturalspeech2_jax import HOP_LENGTH
from naturalspeech2_jax.data import embedded, pipeline
from naturalspeech2_jax.data.codes import CODEC_FILE, LATENT_STATS_FILE
from naturalspeech2_jax.inference.codec import CodecAssets

RANDOM_CODEC = "random"  # the codec checkpoint name that selects this codec
SHAPE = (16, 1024, 256)  # quantizers, codebook size, latent dimension (the paper's codec)
LATENT_STD = 4.0  # about the per-channel std of a trained codec's latent


def random_codec_assets(shape: tuple[int, int, int] = SHAPE, seed: int = 1):
    """``inference.codec.CodecAssets`` with random codebooks and a decoder that returns silence."""
    codebooks = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    stats = {
        "mean": np.zeros(shape[2], np.float32),
        "std": np.full(shape[2], LATENT_STD, np.float32),
    }

    def silence(z: np.ndarray) -> np.ndarray:
        return np.zeros((z.shape[0], z.shape[1] * HOP_LENGTH), np.float32)

    return CodecAssets(codebooks, stats, silence, RANDOM_CODEC)


def random_codes_dataset(
    root: str | epath.Path, source_dir: str | None = None, shape: tuple[int, int, int] = SHAPE
) -> epath.Path:
    """``root/random_codes/1.0.0``: ``source_dir`` (default: the embedded smoke dataset) with
    random ``codes``; built once, then reused."""
    # TFDS takes seconds to import: only the benchmarks that build this dataset pay for it.
    import tensorflow_datasets as tfds

    from naturalspeech2_jax.data import tfds_builder

    root = epath.Path(root)
    out = root / "random_codes" / tfds_builder.VERSION
    if (out / CODEC_FILE).exists():
        return out
    src = source_dir or embedded.embedded_dataset_dir("smoke")
    rng = np.random.default_rng(0)
    dtype = tfds_builder.features(shape[0])["codes"].np_dtype

    def split(name: str):
        def gen():
            source = pipeline.open_split(src, name)
            for i in range(len(source)):
                ex = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in source[i].items()}
                n = len(ex["log_f0"])
                ex["codes"] = rng.integers(0, shape[1], (n, shape[0])).astype(dtype)
                yield ex

        return gen

    names = list(tfds.builder_from_directory(str(src)).info.splits.keys())
    out = tfds_builder.write_dataset(
        root, "random_codes", {s: split(s) for s in names}, num_quantizers=shape[0]
    )
    with (out / LATENT_STATS_FILE).open("wb") as f:
        stats = random_codec_assets(shape).latent_stats
        np.savez(f, mean=stats["mean"], std=stats["std"])
    (out / CODEC_FILE).write_text(json.dumps({"codec_checkpoint": RANDOM_CODEC}))
    return out
