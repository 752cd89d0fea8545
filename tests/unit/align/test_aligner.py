"""The built-in aligner's pieces: exact Viterbi, the forward-sum/CTC losses and priors, the gates,
and the text-conditioned (attention) model."""

from __future__ import annotations

import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from naturalspeech2_jax.align import ctc
from naturalspeech2_jax.align.viterbi import (
    AlignmentError,
    beta_binomial_log_prior,
    boundary_errors_ms,
    viterbi_align,
)


def _emissions_from_durations(durations, noise=0.0, seed=0):
    """[T, N] log-probs: 0 on each token's true frames, -4 elsewhere (+ optional noise)."""
    labels = np.repeat(np.arange(len(durations)), durations)
    e = np.where(labels[:, None] == np.arange(len(durations))[None, :], 0.0, -4.0)
    return e + noise * np.random.default_rng(seed).normal(size=e.shape)


def _path_score(e, durations):
    ends = np.cumsum(durations)
    return sum(
        e[end - d : end, n].sum() for n, (d, end) in enumerate(zip(durations, ends, strict=True))
    )


# ---------------------------------------------------------------------------------- Viterbi
def test_viterbi_recovers_known_durations_exactly():
    durations = np.array([3, 1, 7, 2, 5, 1, 4])
    out = viterbi_align(_emissions_from_durations(durations, noise=0.5))
    np.testing.assert_array_equal(out.durations, durations)
    assert out.durations.dtype == np.int32 and out.durations.sum() == durations.sum()
    assert out.token_logprob.shape == (7,) and -1.0 < out.confidence <= 0.5


def test_viterbi_is_optimal_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(150):
        t = int(rng.integers(3, 9))
        n = int(rng.integers(1, min(t, 4) + 1))
        e = rng.normal(size=(t, n))
        m = rng.integers(0, 3, n)
        if m.sum() > t:
            continue
        best = max(
            _path_score(e, np.diff((0, *c, t)))
            for c in itertools.combinations_with_replacement(range(t + 1), n - 1)
            if np.all(np.diff((0, *c, t)) >= m)
        )
        out = viterbi_align(e, m)
        assert out.durations.sum() == t and np.all(out.durations >= m)
        assert _path_score(e, out.durations) == pytest.approx(best, abs=1e-9)


def test_min_frames_zero_lets_optional_tokens_vanish_or_take_a_pause():
    # sil a [wb] b sil: the word boundary has no frames of its own -> 0 frames when allowed.
    durations = np.array([2, 4, 0, 3, 2])
    e = _emissions_from_durations(durations)
    min_frames = np.array([1, 1, 0, 1, 1])
    np.testing.assert_array_equal(viterbi_align(e, min_frames).durations, durations)
    forced = viterbi_align(e, 1).durations  # with the default minimum it must take a frame
    assert forced[2] == 1 and forced.sum() == e.shape[0]
    # An optional pause token that does match frames takes them.
    durations = np.array([3, 2, 3])
    np.testing.assert_array_equal(viterbi_align(_emissions_from_durations(durations), 0).durations,
                                  durations)  # fmt: skip


def test_viterbi_rejects_impossible_or_untrustworthy_alignments():
    with pytest.raises(AlignmentError, match="cannot hold"):
        viterbi_align(np.zeros((3, 5)))
    with pytest.raises(AlignmentError, match="cannot hold"):
        viterbi_align(np.zeros((5, 3)), min_frames=np.array([2, 2, 2]))
    bad = np.full((10, 3), np.log(1e-4))
    with pytest.raises(AlignmentError, match="confidence"):
        viterbi_align(bad, min_confidence=-3.0)
    assert viterbi_align(bad, min_confidence=-10.0).durations.sum() == 10


def test_viterbi_is_fast_on_long_utterances():
    # 1500 frames (18.75 s) x 200 tokens: the worst case the data pipeline sends.
    e = np.log(np.random.default_rng(0).dirichlet(np.ones(200), size=1500))
    times = []
    for _ in range(5):
        start = time.perf_counter()
        out = viterbi_align(e)
        times.append(time.perf_counter() - start)
    assert out.durations.sum() == 1500 and np.all(out.durations >= 1)
    # The best of 5 (robust to other processes sharing the CPU); typically 5-10 ms.
    assert min(times) < 0.05, f"Viterbi took {min(times) * 1e3:.1f} ms per utterance"


def test_boundary_errors_ms():
    err = boundary_errors_ms([2, 3, 5], [3, 3, 4])  # boundaries 2,5 vs 3,6; same end
    np.testing.assert_allclose(err, [12.5, 12.5])
    np.testing.assert_allclose(boundary_errors_ms([2, 3], [2, 4]), [0.0, 12.5])


# ----------------------------------------------------------------------------------- losses
def test_forward_sum_loss_equals_brute_force_sum_over_segmentations():
    rng = np.random.default_rng(1)
    lp = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(2, 7, 5)), jnp.float32), -1)
    labels = jnp.array([[1, 3, 2], [4, 0, 0]])
    label_mask = jnp.array([[1, 1, 1], [1, 0, 0]], jnp.float32)
    frame_mask = jnp.array([[1] * 7, [1] * 5 + [0] * 2], jnp.float32)
    got = np.asarray(ctc.forward_sum_loss(lp, frame_mask, labels, label_mask))

    def brute(x, lab, t):
        scores = [
            _path_score(x[:t, lab], np.diff((0, *c, t)))
            for c in itertools.combinations(range(1, t), len(lab) - 1)
        ]
        return -np.logaddexp.reduce(scores)

    x = np.asarray(lp, np.float64)
    np.testing.assert_allclose(got, [brute(x[0], [1, 3, 2], 7), brute(x[1], [4], 5)], rtol=1e-5)


def test_forward_sum_with_optional_tokens_and_prior_equals_brute_force():
    """Zero frames allowed for optional tokens (at most two in a row), prior on the emissions."""
    rng = np.random.default_rng(2)
    t_len, labels_0 = 6, [0, 1, 2, 3, 4]  # tokens 0, 2, 3 and 4 optional (0 leading, 3-4 trailing)
    lp = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(1, t_len, 5)), jnp.float32), -1)
    labels = jnp.asarray([labels_0])
    label_mask = jnp.ones((1, 5), jnp.float32)
    frame_mask = jnp.ones((1, t_len), jnp.float32)
    optional = jnp.asarray([[1, 0, 1, 1, 1]], jnp.float32)
    prior = ctc.log_beta_binomial_prior(frame_mask, label_mask, 1.0)
    got = ctc.forward_sum_loss(
        lp, frame_mask, labels, label_mask, log_prior=prior, optional=optional
    )

    e = np.asarray(lp, np.float64)[0][:, labels_0] + np.asarray(prior, np.float64)[0]
    opt = [1, 0, 1, 1, 1]
    scores = []
    for durs in itertools.product(range(t_len + 1), repeat=5):
        if sum(durs) != t_len or any(d == 0 and not o for d, o in zip(durs, opt, strict=True)):
            continue
        if any(durs[i : i + 3] == (0, 0, 0) for i in range(3)):  # at most two skipped in a row
            continue
        scores.append(_path_score(e, durs))
    np.testing.assert_allclose(float(got[0]), -np.logaddexp.reduce(scores), rtol=1e-5)


def test_ctc_targets_leave_out_optional_tokens():
    labels = jnp.asarray([[0, 5, 6, 0, 7, 0], [0, 3, 0, 0, 0, 0]])
    label_mask = jnp.asarray([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], jnp.float32)
    optional = labels == 0
    got, mask = ctc.spoken_labels(labels, label_mask, optional)
    assert np.asarray(got)[0, :3].tolist() == [5, 6, 7] and np.asarray(got)[1, 0] == 3
    assert np.asarray(mask).tolist() == [[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]]


def test_flat_start_gives_edge_silence_to_edge_tokens_and_speech_to_spoken_ones():
    # frames 0-1 and 8-9 quiet, 2-7 loud; row 1 has two padded frames and no leading pause token
    mel = np.full((2, 12, 4), -10.0, np.float32)
    mel[:, 2:8] = 0.0
    frame_mask = np.ones((2, 12), np.float32)
    frame_mask[1, 10:] = 0.0
    labels = jnp.asarray([[0, 5, 0, 6, 0], [7, 5, 0, 6, 0]])
    label_mask = jnp.ones((2, 5))
    optional = labels == 0
    span = ctc.speech_span(jnp.asarray(mel), jnp.asarray(frame_mask))
    assert np.asarray(span[0]).tolist() == [2, 2] and np.asarray(span[1]).tolist() == [7, 7]
    got = np.asarray(
        ctc.flat_start_targets(labels, label_mask, frame_mask, optional=optional, span=span)
    )
    # the word-boundary pause in the middle gets no frames; edges go to the edge silences
    assert got[0].tolist() == [0, 0, 5, 5, 5, 6, 6, 6, 0, 0, 0, 0]
    assert got[1, :10].tolist() == [7, 7, 7, 7, 5, 5, 6, 6, 0, 0]
    # without optional tokens: the classic uniform split over every token
    plain = np.asarray(ctc.flat_start_targets(labels, label_mask, frame_mask))
    assert plain[0].tolist() == [0, 0, 5, 5, 5, 0, 0, 6, 6, 6, 0, 0]


def test_beta_binomial_prior_is_a_distribution_over_tokens_and_matches_numpy():
    frame_mask = jnp.asarray([[1.0] * 9 + [0.0] * 3, [1.0] * 12])
    label_mask = jnp.asarray([[1.0] * 4 + [0.0] * 2, [1.0] * 6])
    prior = np.asarray(ctc.log_beta_binomial_prior(frame_mask, label_mask, 1.0))
    np.testing.assert_allclose(np.exp(prior[0, :9, :4]).sum(-1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(np.exp(prior[1]).sum(-1), 1.0, rtol=1e-4)
    assert np.all(prior[0, 9:] == 0) and np.all(prior[0, :, 4:] == 0)
    np.testing.assert_allclose(prior[1], beta_binomial_log_prior(12, 6), atol=1e-4)
    # the band follows the diagonal: the most likely token moves from the first to the last
    best = prior[1].argmax(-1)
    assert best[0] == 0 and best[-1] == 5 and np.all(np.diff(best) >= 0)


def test_viterbi_prior_moves_the_path_but_not_the_scores():
    e = np.log(np.full((8, 2), 0.5))  # uninformative emissions: the prior alone decides
    plain = viterbi_align(e, 1)
    with_prior = viterbi_align(e, 1, log_prior=beta_binomial_log_prior(8, 2))
    assert list(with_prior.durations) == [4, 4]
    np.testing.assert_allclose(with_prior.token_logprob, np.log(0.5))
    assert with_prior.confidence == pytest.approx(plain.confidence)


def test_pause_gate_penalises_loud_frames_only():
    rng = np.random.default_rng(0)
    mel = np.full((1, 10, 8), -10.0, np.float32) + 0.01 * rng.normal(size=(1, 10, 8))
    mel[0, 3:7] = 0.0  # loud in the middle
    frame_mask = np.ones((1, 10), np.float32)
    got = np.asarray(ctc.pause_log_gate(jnp.asarray(mel), jnp.asarray(frame_mask), 0.3, 10.0))
    assert np.all(got[0, 3:7] == -10.0) and np.all(np.abs(got[0, [0, 1, 2, 7, 8, 9]]) < 1e-3)
    # in the forward-sum, a pause token over loud frames now costs the path its penalty
    labels = jnp.asarray([[1, 0, 2]])
    lp = jnp.zeros((1, 10, 4))  # uninformative emissions
    batch = {"mel": jnp.asarray(mel), "frame_mask": jnp.asarray(frame_mask)}
    gate = ctc.pause_log_gate(batch["mel"], batch["frame_mask"])[:, :, None]
    prior = gate * (labels == 0)[:, None, :].astype(jnp.float32)
    with_gate = ctc.forward_sum_loss(
        lp, batch["frame_mask"], labels, jnp.ones((1, 3)), log_prior=prior, optional=labels == 0
    )
    without = ctc.forward_sum_loss(
        lp, batch["frame_mask"], labels, jnp.ones((1, 3)), optional=labels == 0
    )
    assert float(with_gate[0]) > float(without[0])  # fewer likely paths: higher loss


def test_edge_gate_keeps_spoken_tokens_off_leading_and_trailing_silence():
    rng = np.random.default_rng(0)
    # 40 frames: noise floor (-6 +- 0.3), speech at 12-29 with a quiet closure at 20-21
    mel = -6.0 + 0.3 * rng.normal(size=(1, 40, 8)).astype(np.float32)
    mel[0, 12:30] = 0.0
    mel[0, 20:22] = -5.5
    frame_mask = np.ones((1, 40), np.float32)
    first, last = ctc.speech_span(jnp.asarray(mel), jnp.asarray(frame_mask), 0.5)
    assert (int(first[0]), int(last[0])) == (12, 29)
    gate = np.asarray(ctc.edge_log_gate(jnp.asarray(mel), jnp.asarray(frame_mask), 0.5, 10.0))
    assert np.all(gate[0, :9] == -10.0) and np.all(gate[0, 33:] == -10.0)
    assert np.all(gate[0, 9:33] == 0.0)  # margin of 3 frames; the closure is not an edge
    # Viterbi with uninformative emissions and the gate: sil takes the edges, p1 p2 the speech
    ids = jnp.asarray([[0, 1, 2, 0]])
    optional = ids == 0
    terms = ctc.EmissionPrior(edge_penalty=10.0, edge_level=0.5)
    prior = ctc.emission_log_prior(
        jnp.asarray(mel), jnp.asarray(frame_mask), jnp.ones((1, 4)), optional, terms
    )
    d = viterbi_align(np.zeros((40, 4)), np.array([0, 1, 1, 0]), log_prior=np.asarray(prior[0]))
    assert d.durations[0] >= 9 and d.durations[3] >= 7


# ---------------------------------------------------------------- text-conditioned model
def _attention_model(**kw):
    from naturalspeech2_jax.align.attention import AttentionAligner

    args = dict(n_mels=80, vocab_size=16, dim=32, conv_layers=2, text_layers=1, kernel=5)
    args.update(kw)

    # partitioning metadata only (no mesh here; the training loop shards the real thing)
    with nnx.use_eager_sharding(False):
        return AttentionAligner(dropout=0.0, rngs=nnx.Rngs(0), **args)


def test_attention_aligner_gives_a_distribution_over_the_transcript_only():
    model = _attention_model(ctc_head=True)
    mel = jax.random.normal(jax.random.key(0), (2, 40, 80))
    frame_mask = jnp.asarray(np.arange(40)[None] < np.array([[40], [25]]), jnp.float32)
    ids = jnp.asarray([[1, 5, 3, 0, 0, 0], [2, 2, 7, 9, 4, 0]])
    id_mask = jnp.asarray([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], jnp.float32)
    log_attn, ctc_lp = model(mel, frame_mask, ids, id_mask)
    assert log_attn.shape == (2, 40, 6) and ctc_lp.shape == (2, 40, 17)
    probs = np.exp(np.asarray(log_attn))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert probs[0, :, 3:].max() < 1e-6 and probs[1, :, 5].max() < 1e-6  # padded tokens: 0
    # the key of a token depends on its neighbours: the two 2s of row 1 get different keys
    assert not np.allclose(np.asarray(log_attn)[1, :, 0], np.asarray(log_attn)[1, :, 1])


def test_forward_sum_from_emissions_matches_the_gathered_form():
    rng = np.random.default_rng(0)
    lp = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(2, 12, 6)), jnp.float32), -1)
    labels = jnp.asarray([[1, 0, 3, 4], [2, 5, 0, 0]])
    label_mask = jnp.asarray([[1, 1, 1, 1], [1, 1, 0, 0]], jnp.float32)
    frame_mask = jnp.asarray(np.arange(12)[None] < np.array([[12], [7]]), jnp.float32)
    optional = labels == 0
    gathered = ctc.forward_sum_loss(lp, frame_mask, labels, label_mask, optional=optional)
    emis = jnp.take_along_axis(lp, labels[:, None, :], axis=-1)
    direct = ctc.forward_sum_from_emissions(emis, frame_mask, label_mask, optional)
    np.testing.assert_allclose(np.asarray(gathered), np.asarray(direct), rtol=1e-6)
