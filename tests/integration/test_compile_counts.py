"""Compile counts: a second sentence of the same bucket and a warmed-up bucket compile nothing
(the quickstart's smoke checkpoint)."""

from __future__ import annotations

import contextlib

import jax
import numpy as np
import pytest

from naturalspeech2_jax.inference.synthesizer import FRAME_BUCKETS, TOKEN_BUCKETS, bucket
from tests.helpers import SYNTH_STEPS as STEPS

pytestmark = pytest.mark.slow  # the session's quickstart (smoke_pipeline): minutes


@contextlib.contextmanager
def count_compiles():
    """A list that receives one entry per XLA backend compilation inside the block."""
    compiles = []

    def listener(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _buckets(out) -> tuple[int, int]:
    """(token bucket, frame bucket) a synthesis result was computed in."""
    tokens = bucket(len(out.phonemes), TOKEN_BUCKETS, "phonemes")
    return tokens, bucket(int(out.durations.sum()), FRAME_BUCKETS, "frames")


def test_same_bucket_does_not_recompile(synth, prompt):
    """Another sentence, speed and pitch shift (traced values) in the same buckets: nothing new is
    compiled. The speeds are high so that both sentences surely land in the first frame bucket
    (the smoke model predicts durations of ~10 frames per phoneme at speed 1, one or two
    buckets up, so the test does not depend on which buckets earlier tests compiled)."""
    first = synth.synthesize("First sentence here.", prompt, steps=STEPS, speed=2.5)
    with count_compiles() as compiles:
        second = synth.synthesize("A second one.", prompt, steps=STEPS, speed=3.0, pitch_shift=2.0)
    assert _buckets(first) == _buckets(second) == (TOKEN_BUCKETS[0], FRAME_BUCKETS[0]), (
        "precondition: both sentences in the first buckets",
        _buckets(first),
        _buckets(second),
    )
    assert first.phonemes != second.phonemes
    assert not compiles, "a second sentence of the same bucket recompiled"


def test_warmup_compiles_the_bucket_ahead(synth, prompt):
    tokens = synth.phonemize("Hi there.")
    durations = np.full(len(tokens), 100 // len(tokens))
    assert synth.warmup(tokens=(32,), frames=(128,), steps=STEPS) > 0
    with count_compiles() as compiles:
        out = synth.synthesize(phonemes=tokens, prompt_audio=prompt, durations=durations,
                               steps=STEPS)  # fmt: skip
    assert not compiles and len(out.wav) == durations.sum() * 200
