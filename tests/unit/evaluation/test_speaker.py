"""Speaker similarity (resemblyzer by default)."""

from __future__ import annotations

import pytest

from naturalspeech2_jax.evaluation import corpus
from tests.helpers import needs, speechlike


def test_identical_audio_has_similarity_one():
    needs("resemblyzer", "torch")
    from naturalspeech2_jax.evaluation.speaker import speaker_similarity

    wav = speechlike()
    assert speaker_similarity(wav, wav) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.shared_data
def test_same_voice_scores_higher_than_different_voices(shared_data):
    needs("resemblyzer", "torch")
    from naturalspeech2_jax.evaluation.speaker import cosine_similarity, get_speaker_encoder

    encoder = get_speaker_encoder()
    cathy_a = encoder.embed(corpus.load_audio(shared_data / "cathy" / "arctic_a0010.flac"))
    cathy_b = encoder.embed(corpus.load_audio(shared_data / "cathy" / "arctic_a0020.flac"))
    dev = shared_data / "speechocean762_adult" / "dev"
    other = encoder.embed(corpus.load_audio(sorted((dev / "0157").glob("*.flac"))[0]))
    same = cosine_similarity(cathy_a, cathy_b)
    different = cosine_similarity(cathy_a, other)
    assert same > different + 0.1, (same, different)
