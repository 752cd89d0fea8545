"""grain pipelines: invariants, crops, bounded bucket shapes, topology-independent order."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from naturalspeech2_jax.data import pipeline
from tests.helpers import make_example


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(1)
    return [
        make_example(int(rng.integers(20, 300)), int(rng.integers(5, 19)), i) for i in range(64)
    ]


def test_invariants_are_checked():
    ex = make_example(50, 10)
    assert pipeline.check_example(ex) == 50
    bad = dict(ex, durations=ex["durations"] + 1)
    with pytest.raises(pipeline.InvariantError, match="durations sum"):
        pipeline.check_example(bad)
    with pytest.raises(pipeline.InvariantError, match="multiple of 200"):
        pipeline.check_example(dict(ex, audio=ex["audio"][:-3]))
    with pytest.raises(pipeline.InvariantError, match="log_f0 has"):
        pipeline.check_example(dict(ex, log_f0=np.full(50, -np.inf, np.float32)))


def test_crop_keeps_audio_and_pitch_aligned():
    ex = make_example(100, 10)
    out = pipeline.crop_example(ex, 40, np.random.default_rng(0))
    assert out["audio"].shape == (40 * 200,) and out["log_f0"].shape == (40,)
    start = int(np.flatnonzero(np.isclose(ex["log_f0"], out["log_f0"][0]))[0])
    np.testing.assert_allclose(
        out["audio"][:200], ex["audio"][start * 200 : start * 200 + 200] / 32768
    )
    short = pipeline.crop_example(make_example(25, 5), 40, np.random.default_rng(0))
    assert short["frame_mask"].sum() == 25 and short["audio"][25 * 200 :].sum() == 0


def test_bucketed_batches_compile_a_bounded_number_of_programs(corpus):
    lengths = [len(e["log_f0"]) for e in corpus]
    tokens = [len(e["phonemes"]) for e in corpus]
    batches = pipeline.BucketBatches(
        lengths,
        global_batch=8,
        buckets=(64, 128, 320),
        seed=0,
        token_lengths=tokens,
        token_buckets=(20,),
    )
    it = pipeline.bucket_iterator(corpus, batches, local_batch_size=8)

    @jax.jit
    def f(b):
        return jnp.sum(b["audio"] * b["frame_mask"].repeat(200, -1)) + jnp.sum(b["durations"])

    shapes = set()
    for _ in range(40):  # 5 epochs
        b = next(it)
        assert b["durations"].sum(1).tolist() == b["frame_mask"].sum(1).astype(int).tolist()
        shapes.add(b["audio"].shape)
        f(b)
    assert len(shapes) <= 3 and f._cache_size() == len(shapes)
    waste = 1 - np.mean([m for m in [next(it)["frame_mask"].mean() for _ in range(8)]])
    assert waste < 0.5  # length-sorted windows keep padding modest


def test_bucket_order_is_topology_independent_and_resumable(corpus):
    lengths = [len(e["log_f0"]) for e in corpus]
    tokens = [len(e["phonemes"]) for e in corpus]
    kw = dict(
        global_batch=8, buckets=(64, 128, 320), seed=3, token_lengths=tokens, token_buckets=(20,)
    )
    one = pipeline.bucket_iterator(
        corpus, pipeline.BucketBatches(lengths, **kw), local_batch_size=8
    )
    two = [
        pipeline.bucket_iterator(
            corpus,
            pipeline.BucketBatches(lengths, **kw),
            local_batch_size=4,
            process_index=p,
            process_count=2,
        )
        for p in range(2)
    ]
    for _ in range(10):
        a = next(one)
        parts = [next(t) for t in two]
        np.testing.assert_array_equal(a["audio"], np.concatenate([p["audio"] for p in parts]))
    resumed = pipeline.bucket_iterator(
        corpus, pipeline.BucketBatches(lengths, **kw), local_batch_size=8
    )
    resumed.set_state(one.get_state())
    np.testing.assert_array_equal(next(resumed)["phonemes"], next(one)["phonemes"])


def test_too_long_examples_are_refused_with_a_fix():
    with pytest.raises(ValueError, match="largest bucket"):
        pipeline.BucketBatches([10, 500], global_batch=1, buckets=(100,), seed=0)
