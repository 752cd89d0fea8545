"""The TFDS ArrayRecord writer: readable without TensorFlow, invariants enforced on write."""

from __future__ import annotations

import numpy as np
import pytest

from naturalspeech2_jax.data import pipeline
from naturalspeech2_jax.data.tfds_builder import write_dataset
from tests.helpers import make_example


def _examples(n: int, offset: int = 0, corrupt: int | None = None):
    def gen():
        for i in range(n):
            ex = make_example(30 + i, 5, i)
            ex.update(id=f"u{offset + i}", text="hello", speaker="spk", speaker_id=0)
            if i == corrupt:
                ex["durations"] = ex["durations"] + 1
            yield ex

    return gen


def test_written_dataset_reads_back_through_grain_source(tmp_path):
    d = write_dataset(tmp_path, "unit_corpus", {"train": _examples(6), "heldout": _examples(2, 50)})
    src = pipeline.open_split(d, "train")
    assert len(src) == 6
    lengths = pipeline.frame_lengths(d, "train")
    for i in range(6):
        ex = src[i]
        assert ex["audio"].dtype == np.int16 and ex["phonemes"].dtype == np.int32
        assert pipeline.check_example(ex) == lengths[i]
    assert len(pipeline.open_split(d, "heldout")) == 2


def test_invariant_violation_fails_the_write(tmp_path):
    with pytest.raises(Exception, match="durations sum"):
        write_dataset(tmp_path, "bad_corpus", {"train": _examples(3, corrupt=1)})


def test_missing_dataset_error_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare_data.py"):
        pipeline.open_split(tmp_path, "train")
