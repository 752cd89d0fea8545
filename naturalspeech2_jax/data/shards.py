"""A TFDS ArrayRecord dataset whose shards are written by several writers (hosts), then described.

``tfds_builder.write_dataset`` writes a whole dataset from one process. When every host of a
pod writes its own part (``launch/codec.py encode-dataset --distributed``), each writes the shard
files it owns with a :class:`ShardWriter` (TFDS's file names and ArrayRecord options; records
serialized by the dataset's ``features().serialize_example``, as TFDS serializes them), and the
main process then describes them all with :func:`write_metadata` (``dataset_info.json`` and
``features.json``, through ``tfds.folder_dataset.write_metadata``), after which
``tfds.builder_from_directory`` and ``data.pipeline.open_split`` read the shards as one dataset:
shard 0 first, in shard order. Empty shards are allowed (more hosts than examples).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from etils import epath

FILE_FORMAT = "array_record"
# What TFDS accepts as a dataset name in its file names (tensorflow_datasets/core/naming.py).
_NAME = re.compile(r"^[a-zA-Z]\w*$")


def check_name(name: str, out_dir: str | epath.Path) -> None:
    """ValueError (one sentence) unless ``name`` can name TFDS shard files."""
    if not _NAME.match(name):
        raise ValueError(
            f"{out_dir}: the dataset folder name {name!r} must start with a letter and hold only "
            "letters, digits and _ (TFDS names the record files after it); e.g. "
            "DATA/libritts_codes/1.0.0."
        )


def _template(out_dir: str | epath.Path, name: str, split: str):
    from tensorflow_datasets.core import naming  # TFDS: slow to import

    return naming.ShardedFileTemplate(
        data_dir=epath.Path(out_dir),
        template=naming.DEFAULT_FILENAME_TEMPLATE,
        dataset_name=name,
        split=split,
        filetype_suffix=FILE_FORMAT,
    )


def shard_path(out_dir: str | epath.Path, name: str, split: str, index: int, count: int):
    """``OUT/<name>-<split>.array_record-<index>-of-<count>``: TFDS's name for a shard."""
    return epath.Path(
        _template(out_dir, name, split).sharded_filepath(shard_index=index, num_shards=count)
    )


def remove_shards(out_dir: str | epath.Path, name: str) -> list[str]:
    """Remove every record file of dataset ``name`` in ``out_dir`` (an interrupted run's)."""
    out_dir = epath.Path(out_dir)
    if not out_dir.exists():
        return []
    stale = sorted(p for p in out_dir.glob(f"{name}-*.{FILE_FORMAT}-*") if p.is_file())
    for p in stale:
        p.unlink()
    return [str(p) for p in stale]


class ShardWriter:
    """Serialized examples into consecutive shard files of known lengths, streamed.

    ``lengths[k]`` records go to ``paths[k]``; a shard file is open while its records arrive and
    closed with its last one (so nothing but the file writer's buffer is held in memory).
    ``num_bytes``: the serialized bytes so far (what TFDS's split info records).
    """

    def __init__(self, paths: Sequence[str | epath.Path], lengths: Sequence[int]):
        if len(paths) != len(lengths):
            raise ValueError(f"{len(paths)} shard paths but {len(lengths)} shard lengths.")
        self.paths, self.lengths = list(paths), [int(n) for n in lengths]
        self.num_bytes, self._shard, self._count, self._file = 0, 0, 0, None
        self._next_shard()  # leading empty shards

    def write(self, serialized: bytes) -> None:
        if self._shard >= len(self.lengths):
            raise ValueError(f"more records than the {sum(self.lengths)} the shards hold.")
        if self._file is None:
            self._file = _open(self.paths[self._shard])
        self._file.write(serialized)
        self.num_bytes += len(serialized)
        self._count += 1
        self._next_shard()

    def close(self) -> None:
        """Check that every shard got its records (all of them are written by then)."""
        if self._shard != len(self.lengths):
            written = sum(self.lengths[: self._shard]) + self._count
            raise ValueError(f"{written} records written; the shards hold {sum(self.lengths)}.")

    def _next_shard(self) -> None:
        """Close the shard that is full and every empty one after it (written as empty files)."""
        while self._shard < len(self.lengths) and self._count == self.lengths[self._shard]:
            (self._file or _open(self.paths[self._shard])).close()
            self._shard, self._count, self._file = self._shard + 1, 0, None


def _open(path: str | epath.Path):
    from array_record.python import array_record_module

    # TFDS's own options for its ArrayRecord shards (file_adapters.ArrayRecordFileAdapter):
    # one record per chunk, so a random read decodes one record.
    return array_record_module.ArrayRecordWriter(str(path), "group_size:1")


def write_metadata(
    out_dir: str | epath.Path,
    name: str,
    features,
    splits: Mapping[str, tuple[Sequence[int], int]],
    description: str = "",
) -> None:
    """``dataset_info.json`` + ``features.json`` for shards already in ``out_dir``.

    ``splits``: split -> (records per shard in shard order, serialized bytes). Written last by
    the caller: a folder with ``dataset_info.json`` is a complete dataset.
    """
    import tensorflow_datasets as tfds  # TFDS: slow to import

    infos = [
        tfds.core.SplitInfo(
            name=split,
            shard_lengths=[int(n) for n in lengths],
            num_bytes=int(num_bytes),
            filename_template=_template(out_dir, name, split),
        )
        for split, (lengths, num_bytes) in splits.items()
    ]
    # check_data reads an example through tf.data, which needs TensorFlow: not installed here.
    tfds.folder_dataset.write_metadata(
        data_dir=epath.Path(out_dir),
        features=features,
        split_infos=infos,
        check_data=False,
        description=description,
    )
