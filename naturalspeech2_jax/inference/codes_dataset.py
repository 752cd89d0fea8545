"""A prepared dataset encoded by a trained codec: the codes dataset NS2 trains on.

``encode_dataset(codec_workdir, DATA/<name>/1.0.0, OUT)`` writes a sibling TFDS dataset at ``OUT``
(the version dir, e.g. ``DATA/<name>_codes/1.0.0``) holding every original feature plus ``codes``
int32 [n_frames, 16], checked against the durations and pitch frame counts; beside the records:
``codec.json`` (the codec run, its step and config), ``latent_stats.npz`` (over the train splits),
``frames_<split>.npy`` and the source's ``vocab.json``, ``speakers.json`` and ``card.json``, so
``data.pipeline.open_split(OUT, split)`` reads it like the original. ``launch/codec.py
encode-dataset`` and ``stats`` call these functions.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from etils import epath

from naturalspeech2_jax import SAMPLE_RATE
from naturalspeech2_jax.data import pipeline
from naturalspeech2_jax.data.codes import CODEC_FILE
from naturalspeech2_jax.inference.codec import (
    Codec,
    LatentMoments,
    latent_statistics,
    load_latent_stats,
    save_latent_stats,
)

log = logging.getLogger(__name__)

# Files of a prepared dataset that describe it beyond its records (copied by encode_dataset).
SIDECARS = ("vocab.json", "speakers.json", "card.json", "card.md", "rejected.tsv")
HELD_OUT_SPLITS = {"dev", "heldout", "validation", "test"}  # not in the latent statistics


def dataset_info(dataset_dir: str | epath.Path) -> tuple[str, list[str]]:
    """(name, split names) of a prepared dataset; one clear sentence when it is not one."""
    # TFDS takes seconds to import: only the commands that read dataset metadata pay for it.
    import tensorflow_datasets as tfds

    if not (epath.Path(dataset_dir) / "dataset_info.json").exists():
        raise FileNotFoundError(
            f"{dataset_dir} is not a prepared dataset (no dataset_info.json); pass "
            "DATA/<name>/<version> written by launch/prepare_data.py."
        )
    builder = tfds.builder_from_directory(str(dataset_dir))
    return builder.info.name, list(builder.info.splits.keys())


def compute_latent_stats(
    codec: Codec,
    dataset_dir: str | epath.Path,
    split: str = "train",
    max_examples: int | None = None,
) -> dict[str, np.ndarray]:
    """Per-channel mean/std of z over (up to ``max_examples``) utterances of split(s)."""
    source = pipeline.open_splits(str(dataset_dir), split)
    n = len(source) if max_examples is None else min(max_examples, len(source))
    idx = pipeline.spread_indices(len(source), n)
    wavs = (np.asarray(source[i]["audio"], np.float32) / 32768.0 for i in idx)
    return latent_statistics(codec.model, wavs)


def encode_utterance(codec: Codec, audio_int16: np.ndarray) -> np.ndarray:
    """Codes int32 [n_frames, 16] of one prepared utterance (int16 audio, 200 * n_frames)."""
    return codec.encode(np.asarray(audio_int16, np.float32) / 32768.0).astype(np.int32)


def encode_dataset(
    codec_workdir: str | epath.Path,
    dataset_dir: str | epath.Path,
    out_dir: str | epath.Path,
    *,
    splits: Sequence[str] | None = None,
    stats_splits: Sequence[str] | None = None,
    bucket_frames: int = 50,
    codec: Codec | None = None,
) -> epath.Path:
    """Write ``out_dir`` (a version dir, e.g. DATA/x_codes/1.0.0): the dataset plus ``codes``.

    Every feature of every example is kept; ``codes`` int32 [n_frames, num_quantizers] is added
    and checked (by the writer) against the audio, durations and ``log_f0`` frame counts. The
    latent statistics of ``stats_splits`` (default: every split except dev/heldout/validation/test)
    are written as ``latent_stats.npz`` in ``out_dir`` (and in the codec workdir when it has none).
    """
    from naturalspeech2_jax.data.tfds_builder import write_dataset  # TFDS: slow to import

    dataset_dir, out_dir = epath.Path(dataset_dir), epath.Path(out_dir)
    name, all_splits = _check_destination(dataset_dir, out_dir)
    codec = codec or Codec.from_checkpoint(codec_workdir)
    codec.bucket_frames = bucket_frames
    splits = list(splits or all_splits)
    stats_splits = set(stats_splits or [s for s in splits if s not in HELD_OUT_SPLITS] or splits)
    moments = LatentMoments()

    def split_examples(split: str):
        return lambda: _encoded_examples(
            codec, dataset_dir, split, moments if split in stats_splits else None
        )

    # write_dataset writes DATA_DIR/<name>/<version>: DATA_DIR = out_dir/../..
    written = write_dataset(
        out_dir.parent.parent,
        out_dir.parent.name,
        {s: split_examples(s) for s in splits},
        description=f"{name} with codec codes from {codec_workdir}",
        num_quantizers=codec.num_quantizers,
    )
    if epath.Path(written) != out_dir:
        raise RuntimeError(f"dataset written to {written}, expected {out_dir}")
    _copy_sidecars(dataset_dir, out_dir)
    _check_frame_counts(dataset_dir, out_dir, splits)
    if moments.frames:
        stats = moments.stats()
        save_latent_stats(stats, out_dir)
        if load_latent_stats(codec_workdir) is None:
            save_latent_stats(stats, codec_workdir)
    _write_codec_info(codec, codec_workdir, dataset_dir, out_dir, splits, stats_splits)
    log.info("encoded %s -> %s (%s)", dataset_dir, out_dir, ", ".join(splits))
    return out_dir


def _check_destination(dataset_dir: epath.Path, out_dir: epath.Path) -> tuple[str, list[str]]:
    """(name, splits) of the source; the destination must be a new version dir."""
    from naturalspeech2_jax.data.tfds_builder import VERSION  # TFDS: slow to import

    info = dataset_info(dataset_dir)
    if out_dir.name != VERSION:
        raise ValueError(f"out_dir must be a version dir ending in /{VERSION}; got {out_dir}.")
    if (out_dir / "dataset_info.json").exists():
        raise FileExistsError(f"{out_dir} already holds a dataset; remove it or pick another OUT.")
    return info


def _encoded_examples(
    codec: Codec, dataset_dir: epath.Path, split: str, moments: LatentMoments | None
) -> Iterator[dict[str, Any]]:
    """Every example of ``split`` with its ``codes`` (and their latents added to ``moments``)."""
    source = pipeline.open_split(dataset_dir, split)
    for i in range(len(source)):
        ex = dict(source[i])
        n = pipeline.check_example(ex, where=f"{dataset_dir}[{split}][{i}]")
        codes = encode_utterance(codec, ex["audio"])
        if codes.shape != (n, codec.num_quantizers):
            raise pipeline.InvariantError(
                f"{dataset_dir}[{split}][{i}]: codes {codes.shape}, expected {n} frames."
            )
        if moments is not None:
            moments.add(codec.latent(codes))
        out = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in ex.items()}
        out["codes"] = codes
        yield out


def _copy_sidecars(dataset_dir: epath.Path, out_dir: epath.Path) -> None:
    for sidecar in SIDECARS:
        if (dataset_dir / sidecar).exists():
            shutil.copyfile(dataset_dir / sidecar, out_dir / sidecar)


def _check_frame_counts(dataset_dir: epath.Path, out_dir: epath.Path, splits: list[str]) -> None:
    """The writer's frame counts must equal the source's ``frames_<split>.npy``."""
    for split in splits:
        src = dataset_dir / f"frames_{split}.npy"
        if not src.exists():
            continue
        ours = pipeline.frame_lengths(out_dir, split)
        theirs = pipeline.frame_lengths(dataset_dir, split)
        if not np.array_equal(np.sort(ours), np.sort(theirs)):
            raise pipeline.InvariantError(
                f"{out_dir} split {split}: frame counts differ from {src}."
            )


def _write_codec_info(
    codec: Codec,
    codec_workdir: str | epath.Path,
    dataset_dir: epath.Path,
    out_dir: epath.Path,
    splits: list[str],
    stats_splits: set[str],
) -> None:
    """``codec.json``: which codec run (and step) wrote the codes, and its shapes."""
    info = {
        "codec_checkpoint": str(epath.Path(codec_workdir).resolve()),
        "codec_step": codec.step,
        "source_dataset": str(dataset_dir.resolve()),
        "num_quantizers": codec.num_quantizers,
        "codebook_size": codec.codebook_size,
        "latent_dim": codec.latent_dim,
        "hop_length": codec.hop,
        "sample_rate": SAMPLE_RATE,
        "codes_dtype": "int32",
        "splits": {s: int(len(pipeline.frame_lengths(out_dir, s))) for s in splits},
        "latent_stats_splits": sorted(stats_splits),
        "codec_config": codec.config.to_dict() if codec.config is not None else None,
    }
    (out_dir / CODEC_FILE).write_text(json.dumps(info, indent=1, default=str))
