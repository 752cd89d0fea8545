"""TFDS builder that writes prepared utterances as ArrayRecord, with no TensorFlow needed.

Audio is stored as an int16 Tensor feature (``tfds.features.Audio`` would need TensorFlow); every
other feature is a plain Tensor or Text. The result opens with
``tfds.builder_from_directory(DIR/<name>/<version>)`` and is read through
``as_data_source(split)`` + grain. Beside the records, ``frames_<split>.npy`` holds each example's
frame count (for length bucketing without reading every record).

Features: ``id``, ``text``, ``speaker`` (text); ``speaker_id`` (int32 index into the dataset's
speaker list); ``audio`` (int16 [samples]); ``phonemes`` and ``durations`` (int32 [tokens]);
``log_f0`` (float32 [frames]); ``voiced`` (int8 [frames]); optionally ``codes`` (int32
[frames, n_q]) once the codec has encoded the dataset (``launch/codec.py encode-dataset``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from naturalspeech2_jax.data.pipeline import check_example

VERSION = "1.0.0"

log = logging.getLogger(__name__)


def features(num_quantizers: int = 0) -> tfds.features.FeaturesDict:
    spec = {
        "id": tfds.features.Text(),
        "text": tfds.features.Text(),
        "speaker": tfds.features.Text(),
        "speaker_id": tfds.features.Scalar(dtype=np.int32),
        "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
        "phonemes": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "durations": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "log_f0": tfds.features.Tensor(shape=(None,), dtype=np.float32),
        "voiced": tfds.features.Tensor(shape=(None,), dtype=np.int8),
    }
    if num_quantizers:
        spec["codes"] = tfds.features.Tensor(shape=(None, num_quantizers), dtype=np.int32)
    return tfds.features.FeaturesDict(spec)


def write_dataset(
    data_dir: str | epath.Path,
    name: str,
    splits: Mapping[str, Callable[[], Iterable[dict[str, Any]]]],
    *,
    description: str = "",
    num_quantizers: int = 0,
) -> epath.Path:
    """Write ``splits`` (name -> function yielding example dicts) and return the version dir.

    Every example is checked against the frame invariants while it is written. The
    ``incomplete.*`` folders that a killed run left in ``data_dir/<name>`` (TFDS writes there
    and renames the folder when done) are removed first, with one INFO line.
    """
    remove_incomplete(epath.Path(data_dir) / name)

    def examples(split: str):
        for ex in splits[split]():
            check_example(ex, where=str(ex.get("id", "?")))
            yield str(ex["id"]), ex

    builder_cls = type(
        "".join(p.capitalize() for p in name.split("_")),
        (tfds.core.GeneratorBasedBuilder,),
        {
            "VERSION": tfds.core.Version(VERSION),
            "name": name,
            "_info": lambda self: tfds.core.DatasetInfo(
                builder=self, description=description, features=features(num_quantizers)
            ),
            "_split_generators": lambda self, dl_manager: {s: examples(s) for s in splits},
            "_generate_examples": lambda self, **kw: iter(()),
        },
        skip_registration=True,  # one builder class per call; names may repeat in a process
    )
    builder = builder_cls(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
        )
    )
    out = epath.Path(builder.data_dir)
    # TFDS shuffles records by key hash while writing: store frame counts in the record order.
    source = builder.as_data_source()
    for split in splits:
        ds = source[split]
        lengths = np.array([len(ds[i]["log_f0"]) for i in range(len(ds))], np.int32)
        with (out / f"frames_{split}.npy").open("wb") as f:
            np.save(f, lengths)
    return out


def remove_incomplete(name_dir: epath.Path) -> list[str]:
    """Remove TFDS's ``incomplete.*`` folders (left by a killed run) from ``name_dir``; returns
    their paths."""
    left = (
        sorted(p for p in name_dir.glob("incomplete.*") if p.is_dir()) if name_dir.exists() else []
    )
    if left:
        log.info(
            "removing %d unfinished dataset folder(s) left by an interrupted run: %s",
            len(left), ", ".join(map(str, left)),
        )  # fmt: skip
        for p in left:
            shutil.rmtree(str(p), ignore_errors=True)
    return [str(p) for p in left]
