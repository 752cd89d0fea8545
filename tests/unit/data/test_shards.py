"""Shards written by several writers, described afterwards: one TFDS dataset, in shard order."""

from __future__ import annotations

import numpy as np
import pytest

from naturalspeech2_jax.data import pipeline, shards
from naturalspeech2_jax.data.tfds_builder import features
from tests.helpers import make_example


def _example(i: int) -> dict:
    ex = make_example(10 + i, 4, i)
    ex.update(id=f"u{i}", text="hello", speaker="spk", speaker_id=0)
    return ex


def test_shards_of_two_writers_read_as_one_dataset(tmp_path):
    out = tmp_path / "unit_shards" / "1.0.0"
    out.mkdir(parents=True)
    feats = features()
    # Writer 0 owns shards 0-1 (3 + 0 records), writer 1 shard 2 (2 records): an empty shard too.
    lengths, total, i = [], 0, 0
    for first, owned in ((0, [3, 0]), (2, [2])):
        paths = [shards.shard_path(out, "unit_shards", "train", first + k, 3) for k in (0, 1)]
        writer = shards.ShardWriter(paths[: len(owned)], owned)
        for _ in range(sum(owned)):
            writer.write(feats.serialize_example(_example(i)))
            i += 1
        writer.close()
        lengths += owned
        total += writer.num_bytes
    shards.write_metadata(out, "unit_shards", feats, {"train": (lengths, total)}, "unit")
    source = pipeline.open_split(out, "train")
    assert [source[k]["id"] for k in range(len(source))] == [f"u{k}".encode() for k in range(5)]
    for k in range(5):
        np.testing.assert_array_equal(source[k]["audio"], _example(k)["audio"])
    # An interrupted run's record files are found by name and removed.
    assert len(shards.remove_shards(out, "unit_shards")) == 3
    assert not list(out.glob("unit_shards-*"))


def test_writer_counts_and_names_fail_in_one_sentence(tmp_path):
    paths = [tmp_path / "a", tmp_path / "b"]
    writer = shards.ShardWriter(paths, [1, 1])
    writer.write(b"x")
    with pytest.raises(ValueError, match="1 records written; the shards hold 2"):
        writer.close()
    writer.write(b"y")
    with pytest.raises(ValueError, match="more records than the 2"):
        writer.write(b"z")
    with pytest.raises(ValueError, match="2 shard paths but 1 shard lengths"):
        shards.ShardWriter(paths, [2])
    with pytest.raises(ValueError, match="must start with a letter"):
        shards.check_name("my-codes", tmp_path)
    shards.check_name("my_codes2", tmp_path)
