"""NaturalSpeech 2 modules and composite model at smoke sizes: shapes, masks, training, sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs.ns2_model import model_config
from naturalspeech2_jax.diffusion import losses as L
from naturalspeech2_jax.models.ns2 import (
    PARAM_GROUPS,
    NaturalSpeech2,
    abstract_model,
    abstract_param_counts,
    param_count_groups,
)
from naturalspeech2_jax.models.prior import (
    ConvAttnPredictor,
    PitchEmbedding,
    length_regulate,
    length_regulate_reference,
)
from naturalspeech2_jax.models.prompt import PromptEncoder, QueryAttention
from naturalspeech2_jax.models.transformer import MultiHeadAttention, TransformerEncoder
from naturalspeech2_jax.models.wavenet import WaveNetDenoiser
from naturalspeech2_jax.train import loop
from tests.helpers import CB_SHAPE, load_config


def test_length_regulator_matches_numpy():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, 7, 5)).astype(np.float32)
    d = rng.integers(0, 5, (3, 7)).astype(np.int32)
    d[2, 5:] = 0  # padding tokens
    for max_frames in (int(d.sum(1).max()), 10):  # exact fit and truncation
        out, mask = jax.jit(length_regulate, static_argnums=2)(h, d, max_frames)
        np.testing.assert_allclose(out, length_regulate_reference(h, d, max_frames))
        np.testing.assert_array_equal(mask.sum(1), np.minimum(d.sum(1), max_frames))


def _padding_invariant(fn, x, mask, *, atol=1e-5):
    """fn(x, mask) on valid positions must not change when padded positions change."""
    y1 = fn(x, mask)
    x2 = jnp.where(mask[..., None] > 0, x, 100.0)
    y2 = fn(x2, mask)
    m = np.asarray(mask, bool)
    np.testing.assert_allclose(np.asarray(y1)[m], np.asarray(y2)[m], atol=atol)
    return y1


def test_module_shapes_masks_and_finiteness():
    rngs = nnx.Rngs(0)
    b, n, p, d = 2, 9, 6, 16
    x = jax.random.normal(jax.random.key(0), (b, n, d))
    mask = jnp.array([[1.0] * 9, [1.0] * 5 + [0.0] * 4])
    prompt = jax.random.normal(jax.random.key(1), (b, p, d))
    pmask = jnp.array([[1.0] * 6, [1.0] * 3 + [0.0] * 3])

    enc = TransformerEncoder(d, 2, 32, 2, (9, 1), rngs=rngs)
    y = _padding_invariant(lambda a, m: enc(a, m), x, mask)
    assert y.shape == (b, n, d) and not np.asarray(y)[1, 5:].any()

    pred = ConvAttnPredictor(d, 6, 3, heads=2, attn_every=3, dropout=0.5, rngs=rngs)
    assert pred.n_blocks == 2 and pred.blocks.attn.q.kernel.shape[0] == 2  # scanned
    out = _padding_invariant(lambda a, m: pred(a, m, prompt, pmask), x, mask)
    assert out.shape == (b, n) and np.all(np.isfinite(out))
    # Dropout is active only with rngs, and then differs from the deterministic output.
    noisy = pred(x, mask, prompt, pmask, rngs=nnx.Rngs(dropout=1))
    assert not np.allclose(noisy, out)

    pe = PitchEmbedding(d, 32, rngs=rngs)
    bins = pe.quantize(jnp.log(jnp.array([10.0, 40.0, 200.0, 5000.0])))
    assert list(np.asarray(bins)[[0, 1, 3]]) == [0, 0, 31] and 0 < int(bins[2]) < 31
    assert pe(jnp.full((b, n), 5.0)).shape == (b, n, d)

    penc = PromptEncoder(8, d, 2, 32, 1, rngs=rngs)
    enc_p = penc(jax.random.normal(jax.random.key(2), (b, p, 8)), pmask)
    qa = QueryAttention(4, d, 2, rngs=rngs)
    q = qa(enc_p, pmask)
    assert q.shape == (b, 4, d)
    # An empty prompt (prompt dropout) gives finite, prompt-independent query outputs.
    q0 = qa(enc_p, jnp.zeros_like(pmask))
    q1 = qa(enc_p * 3.0, jnp.zeros_like(pmask))
    assert np.all(np.isfinite(q0)) and np.allclose(q0, q1)
    att = MultiHeadAttention(d, 2, rngs=rngs)
    assert not np.asarray(att(x, prompt, jnp.zeros_like(pmask))).any()

    wn = WaveNetDenoiser(8, d, 6, d, cond_kernel=3, film_every=3, heads=2, rngs=rngs)
    assert wn.n_blocks == 1 and len(wn.blocks.films) == 2  # one scanned block of lcm(2, 3)
    z = jax.random.normal(jax.random.key(3), (b, n, 8))
    t = jnp.array([0.1, 0.9])
    full = wn(z, t, mask, x, q)
    cache = wn.prepare(x, mask, q)
    np.testing.assert_allclose(wn.denoise(z, t, mask, cache), full, atol=1e-6)
    _padding_invariant(lambda a, m: wn(a, t, m, x, q), z, mask)
    assert full.shape == (b, n, 8) and np.all(np.isfinite(full))


def _batch(seed=0, b=2, n=10, t=48, r=4, k=16):
    rng = np.random.default_rng(seed)
    dur = np.zeros((b, n), np.int32)
    tm = np.zeros((b, n), np.float32)
    fm = np.zeros((b, t), np.float32)
    for i, nt in enumerate([n, n - 3][:b]):
        d = rng.integers(2, 7, nt)
        dur[i, :nt], tm[i, :nt], fm[i, : d.sum()] = d, 1, 1
    return {
        "phonemes": jnp.asarray(rng.integers(1, 50, (b, n)) * tm, jnp.int32),
        "durations": jnp.asarray(dur),
        "token_mask": jnp.asarray(tm),
        "frame_mask": jnp.asarray(fm),
        "codes": jnp.asarray(rng.integers(0, k, (b, t, r)), jnp.int16),
        "log_f0": jnp.asarray((5.0 + 0.3 * rng.normal(size=(b, t))) * fm, jnp.float32),
    }


def _codebooks(seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=CB_SHAPE).astype(np.float32))


def _train(model, batch, codebooks, stats, steps, lr, rng):
    """Plain jitted Adam steps (dropout off); returns the metrics of every step."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(lr)

    @jax.jit
    def step(params, opt_state, key):
        def loss_fn(p):
            m = nnx.merge(graphdef, p, rest)
            return m.training_loss(batch, key, codebooks, stats, deterministic=True)

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    opt_state = tx.init(params)
    history = []
    for i in range(steps):
        params, opt_state, m = step(params, opt_state, jax.random.fold_in(rng, i))
        history.append(m)
    nnx.update(model, params)
    return [{k: float(v) for k, v in m.items()} for m in history]


def test_training_loss_with_cut_prompt_and_param_groups():
    cfg = model_config("smoke")
    model = NaturalSpeech2(cfg, CB_SHAPE, rngs=nnx.Rngs(0))
    counts = param_count_groups(model)
    assert tuple(counts) == PARAM_GROUPS and all(v > 0 for v in counts.values())
    assert sum(counts.values()) == sum(
        int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param))
    )
    batch, codebooks = _batch(), _codebooks()
    stats = {"mean": jnp.full((16,), 0.1), "std": jnp.full((16,), 2.0)}
    loss_fn = nnx.jit(lambda m, b, k: m(b, k, codebooks, stats))
    loss, m = loss_fn(model, batch, jax.random.key(7))
    assert all(np.isfinite(float(v)) for v in m.values())
    total = float(batch["frame_mask"].sum()) / 2
    assert float(m["prompt_frames"]) >= 4 and float(m["target_frames"]) < total
    w = model.weights
    parts = w[0] * m["data"] + w[1] * m["score"] + w[2] * m["ce_rvq"]
    parts += w[3] * m["duration_l1"] + w[4] * m["pitch_l1"]
    np.testing.assert_allclose(float(loss), float(parts), rtol=1e-5)


def test_overfit_one_utterance_and_reproduce_it_through_the_sampler():
    """Tiny model, one 32-frame utterance (latent dim 16). The total loss falls within 25 Adam
    steps; after 300 the sampler (DPM-Solver++ 20 steps, ground-truth durations and pitch)
    reproduces the latent within 25% relative RMS error (untrained: > 50%)."""
    cfg = model_config("smoke")
    cfg.wn_dropout = cfg.pred_dropout = 0.0
    model = NaturalSpeech2(cfg, CB_SHAPE, rngs=nnx.Rngs(1))
    batch = _batch(seed=3, b=1, n=8, t=32)
    n = int(batch["frame_mask"].sum())
    codebooks = _codebooks(1)
    z_true = L.latents_from_codes(batch["codes"], codebooks) * batch["frame_mask"][..., None]
    stats = {"mean": jnp.mean(z_true[0, :n], 0), "std": jnp.std(z_true[0, :n], 0) + 1e-3}
    prompt = jnp.asarray(np.random.default_rng(9).normal(size=(1, 12, 16)), jnp.float32)
    batch = dict(batch, prompt_latent=prompt, prompt_mask=jnp.ones((1, 12)))

    def run_sampler():
        out = model.synthesize(
            batch["phonemes"], batch["token_mask"], prompt, batch["prompt_mask"],
            jax.random.key(0), sampler="dpm++2m", steps=20, temperature=1 / 1.2,
            durations=batch["durations"], log_f0=batch["log_f0"], latent_stats=stats,
            max_frames=32,
        )  # fmt: skip
        z = np.asarray(out["latent"][0, :n])
        ref = np.asarray(z_true[0, :n])
        return np.sqrt(np.mean((z - ref) ** 2) / np.mean((ref - ref.mean(0)) ** 2)), out

    before, _ = run_sampler()
    hist = _train(model, batch, codebooks, stats, 300, 3e-3, jax.random.key(4))
    after, out = run_sampler()
    losses = [h["loss"] for h in hist]
    assert all(np.isfinite(losses)) and np.mean(losses[20:25]) < 0.6 * losses[0], losses[:25]
    assert hist[-1]["data"] < 0.1 * hist[0]["data"]
    assert before > 0.5 and after < 0.25, (before, after, hist[-1])
    np.testing.assert_array_equal(out["durations"], batch["durations"])
    np.testing.assert_array_equal(out["frame_mask"][0], np.asarray(batch["frame_mask"][0]))

    # Predicted durations and pitch, classifier-free guidance, another sampler: shapes only.
    out = model.synthesize(
        batch["phonemes"], batch["token_mask"], prompt, batch["prompt_mask"], jax.random.key(1),
        sampler="euler", steps=4, latent_stats=stats, guidance_scale=2.0, speed=1.5,
    )  # fmt: skip
    frames = out["latent"].shape[1]
    assert frames % 32 == 0 and frames >= int(out["durations"].sum())
    assert np.all(np.isfinite(out["latent"])) and np.all(np.isfinite(out["log_f0"]))
    assert np.all(np.asarray(out["durations"])[batch["token_mask"] > 0] >= 1)


def _model_with_live_output(cond_drop_prob: float) -> NaturalSpeech2:
    """Smoke model whose denoiser output layer is random (its zero init hides every input)."""
    cfg = model_config("smoke")
    cfg.cond_drop_prob = cond_drop_prob
    model = NaturalSpeech2(cfg, CB_SHAPE, rngs=nnx.Rngs(0))
    kernel = model.denoiser.out.kernel
    kernel[...] = jax.random.normal(jax.random.key(3), kernel[...].shape) * 0.3
    return model


@pytest.mark.parametrize("cond_drop_prob", [0.0, 1.0])
def test_condition_dropout_gives_guidance_a_text_free_branch(cond_drop_prob):
    """cond_drop_prob drops phonemes, pitch and prompt together, in training and in guidance's
    unconditional branch; without it only the prompt is dropped and the phonemes still count."""
    model = _model_with_live_output(cond_drop_prob)
    batch, codebooks = _batch(), _codebooks()
    stats = {"mean": jnp.zeros((16,)), "std": jnp.ones((16,))}
    prompt = jnp.asarray(np.random.default_rng(9).normal(size=(2, 12, 16)), jnp.float32)
    other = dict(batch, phonemes=(batch["phonemes"] + 7) % 50 * (batch["token_mask"] > 0),
                 log_f0=batch["log_f0"] * 0.9, prompt_latent=-prompt)  # fmt: skip
    batch = dict(batch, prompt_latent=prompt, prompt_mask=jnp.ones((2, 12)))
    other["prompt_mask"] = batch["prompt_mask"]

    def data_loss(b):
        _, m = model.training_loss(b, jax.random.key(5), codebooks, stats, deterministic=True)
        return float(m["data"]), float(m["duration_l1"])

    (d1, dur1), (d2, dur2) = data_loss(batch), data_loss(other)
    assert dur1 != dur2  # the prior always sees its inputs
    if cond_drop_prob == 1.0:
        assert d1 == pytest.approx(d2, rel=1e-6)  # the diffusion saw none of them
    else:
        assert abs(d1 - d2) > 1e-3 * d1

    def x0(b, unconditional):
        cache, cache_u, _, fm = model.prepare_denoiser(
            b["phonemes"], b["token_mask"], b["prompt_latent"], b["prompt_mask"],
            b["durations"], b["log_f0"], 48,
        )  # fmt: skip
        z = jax.random.normal(jax.random.key(1), (2, 48, 16))
        t = jnp.full((2,), 0.5)
        return np.asarray(model.denoiser.denoise(z, t, fm, cache_u if unconditional else cache))

    assert np.abs(x0(batch, False) - x0(other, False)).max() > 1e-3
    u1, u2 = x0(batch, True), x0(other, True)
    if cond_drop_prob == 1.0:
        np.testing.assert_allclose(u1, u2, atol=1e-6)
    else:  # prompt-only dropout: the unconditional branch still reads the phonemes
        assert np.abs(u1 - u2).max() > 1e-3
    # Guided synthesis runs both branches and stays finite.
    out = model.synthesize(
        batch["phonemes"], batch["token_mask"], prompt, batch["prompt_mask"], jax.random.key(2),
        sampler="dpm++2m", steps=3, latent_stats=stats, guidance_scale=2.5,
        durations=batch["durations"], max_frames=48,
    )  # fmt: skip
    assert np.all(np.isfinite(out["latent"]))


def test_paper_param_counts_within_10_percent():
    paper = {
        "phoneme_encoder": 72e6,
        "duration_predictor": 34e6,
        "pitch_predictor": 50e6,
        "prompt_encoder": 69e6,
        "diffusion": 183e6,
    }
    # Exactly what `launch/train.py --config=configs/diffusion.py:paper --dry_run` prints.
    counts = loop.param_counts(load_config("diffusion", "paper"))
    assert set(counts) == {*PARAM_GROUPS, "total"}
    assert abstract_param_counts(model_config("paper")) == counts
    for name, want in paper.items():
        assert abs(counts[name] / want - 1) < 0.10, (name, counts[name])
    assert abs(counts["total"] / 408e6 - 1) < 0.10


def test_abstract_model_allocates_nothing_and_has_the_real_shapes():
    cfg = model_config("smoke")
    abstract = abstract_model(cfg, CB_SHAPE)
    leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
    assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    real = NaturalSpeech2(cfg, CB_SHAPE, rngs=nnx.Rngs(0))
    shapes = lambda m: jax.tree.map(lambda x: (x.shape, x.dtype), nnx.state(m, nnx.Param))
    assert shapes(abstract) == shapes(real)
    counts = abstract_param_counts(cfg, CB_SHAPE)
    assert counts == {**param_count_groups(real), "total": sum(param_count_groups(real).values())}
