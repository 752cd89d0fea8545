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
from collections.abc import Callable, Iterable, Mapping, Sequence
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

    builder = _builder(
        data_dir, name, description, features(num_quantizers),
        lambda self, dl_manager: {s: examples(s) for s in splits},
    )  # fmt: skip
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


def _builder(data_dir, name: str, description: str, spec, split_generators):
    """A one-off TFDS builder of ``name`` whose ``_split_generators`` is ``split_generators``
    (written to ArrayRecord)."""
    builder_cls = type(
        "".join(p.capitalize() for p in name.split("_")),
        (tfds.core.GeneratorBasedBuilder,),
        {
            "VERSION": tfds.core.Version(VERSION),
            "name": name,
            "_info": lambda self: tfds.core.DatasetInfo(
                builder=self, description=description, features=spec
            ),
            "_split_generators": split_generators,
            "_generate_examples": lambda self, **kw: iter(()),
        },
        skip_registration=True,  # one builder class per call; names may repeat in a process
    )
    return builder_cls(data_dir=str(data_dir), file_format="array_record")


def write_dataset_with_beam(
    data_dir: str | epath.Path,
    name: str,
    splits: Sequence[str],
    build: Callable[[Any, Sequence[str]], Mapping[str, Any]],
    beam_options: Any,
    *,
    frames_of: Callable[[str], Mapping[str, int]],
    description: str = "",
    nothing_survived: Callable[[], Exception] | None = None,
) -> epath.Path:
    """``write_dataset`` on Apache Beam: ``build(pipeline, splits)`` returns {split:
    PCollection of (id, example)} (examples already checked); TFDS's Beam writer shards them
    as ArrayRecord.

    ``frames_<split>.npy`` is written in record order from ``frames_of(split)`` ({id: frames},
    which the pipeline wrote), not by reading every record back (terabytes at the paper's
    scale): both TFDS writers order records by a salted hash of their key, so sorting the ids
    by that hash gives the order, checked against records read back at a few positions.

    TFDS's Beam writer refuses a split with no examples, which only the run can tell: the
    run is repeated without the splits it names (every utterance of them rejected), and when
    none is left ``nothing_survived()`` is raised.
    """
    splits = list(splits)
    while True:
        remove_incomplete(epath.Path(data_dir) / name)
        builder = _builder(
            data_dir, name, description, features(),
            lambda self, dl_manager, pipeline, s=tuple(splits): dict(build(pipeline, s)),
        )  # fmt: skip
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(
                    download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS,
                    beam_options=beam_options,
                )
            )
            break
        except Exception as err:  # noqa: BLE001 - Beam wraps the writer's error in its own
            empty = [s for s in splits if _EMPTY_SPLIT.format(s) in str(err)]
            if not empty:
                raise
            log.warning("no example of split(s) %s survived; writing the others", empty)
            splits = [s for s in splits if s not in empty]
            if not splits:
                remove_incomplete(epath.Path(data_dir) / name)
                error = nothing_survived() if nothing_survived else ValueError(f"{name}: empty")
                raise error from None
    out = epath.Path(builder.data_dir)
    source = builder.as_data_source()
    for split in splits:
        _write_frames_in_record_order(out, split, frames_of(split), source[split])
    return out


# TFDS's writer (writer.py, _check_num_examples) on a split without examples.
_EMPTY_SPLIT = "The total number of generated examples is 0 for split {}."


def _write_frames_in_record_order(out: epath.Path, split: str, frames: Mapping[str, int], ds):
    """``frames_<split>.npy`` from {id: frames}: ids sorted by TFDS's salted key hash (the
    record order), checked against the records at three positions; read back whole if not."""
    from tensorflow_datasets.core import hashing

    ids = sorted(frames, key=hashing.Hasher(salt=split).hash_key)
    lengths = np.array([frames[i] for i in ids], np.int32)
    if len(ds) != len(lengths):
        raise RuntimeError(f"{out} split {split}: {len(ds)} records but {len(lengths)} lengths.")
    for i in sorted({0, len(ds) // 2, len(ds) - 1}):
        record = ds[i]
        got = (record["id"].decode(), len(record["log_f0"]))
        if got != (ids[i], lengths[i]):  # TFDS ordered its records otherwise: read them all
            log.warning("%s split %s: records are not in key-hash order; reading them back "
                        "for frames_%s.npy", out, split, split)  # fmt: skip
            lengths = np.array([len(ds[k]["log_f0"]) for k in range(len(ds))], np.int32)
            break
    with (out / f"frames_{split}.npy").open("wb") as f:
        np.save(f, lengths)


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
