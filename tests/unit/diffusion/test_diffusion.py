"""VP SDE, losses, cut_prompt and samplers (pure functions; analytic and NumPy references)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from naturalspeech2_jax.diffusion import losses as L
from naturalspeech2_jax.diffusion.samplers import SAMPLERS, get_sampler, guided
from naturalspeech2_jax.diffusion.sde import VPSDE

SDE = VPSDE(0.05, 20.0)


def test_sde_marginal_and_score():
    t = jnp.array([0.0, 1e-3, 0.3, 1.0])
    alpha, sigma = SDE.alpha_sigma(t)
    np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, rtol=1e-6)
    assert float(sigma[0]) == 0.0 and float(alpha[-1]) < 0.01
    # log alpha is the integral of -beta/2: compare with a numerical integral at t = 0.3.
    grid = np.linspace(0, 0.3, 10001)
    integral = np.trapezoid(0.05 + grid * 19.95, grid)
    np.testing.assert_allclose(float(alpha[2]), np.exp(-0.5 * integral), rtol=1e-5)
    # The score from the true x0 is -noise / sigma.
    z0 = jax.random.normal(jax.random.key(0), (3, 5, 2))
    noise = jax.random.normal(jax.random.key(1), z0.shape)
    tt = jnp.array([0.1, 0.5, 0.9])
    zt = SDE.perturb(z0, tt, noise)
    _, s = SDE.alpha_sigma(tt)
    np.testing.assert_allclose(
        SDE.score_from_x0(zt, z0, tt), -noise / s[:, None, None], rtol=1e-4, atol=1e-4
    )


def test_score_term_weight_is_capped_and_matches_paper_term_for_large_t():
    t = jnp.array([0.0, 1e-4, 0.05, 0.6, 0.9])
    w = L.score_weight(SDE, t, cap=1.0)
    assert np.all(np.isfinite(w)) and float(jnp.max(w)) <= 1.0
    np.testing.assert_allclose(w[:3], 1.0)
    # For large t the capped weight is the paper's ||score(z0_hat) - score_true||^2 weight.
    z0 = jax.random.normal(jax.random.key(0), (5, 4, 3))
    z0_hat = z0 + 0.1 * jax.random.normal(jax.random.key(1), z0.shape)
    zt = SDE.perturb(z0, t, jax.random.normal(jax.random.key(2), z0.shape))
    direct = jnp.mean(
        (SDE.score_from_x0(zt, z0_hat, t) - SDE.score_from_x0(zt, z0, t)) ** 2, (1, 2)
    )
    mask = jnp.ones((5, 4))
    for i in (3, 4):
        _, score = L.diffusion_terms(z0_hat[i : i + 1], z0[i : i + 1], t[i : i + 1], mask[:1], SDE)
        np.testing.assert_allclose(float(score), float(direct[i]), rtol=1e-4)
    data, score = L.diffusion_terms(z0_hat, z0, t, mask, SDE)
    np.testing.assert_allclose(float(data), float(jnp.mean((z0_hat - z0) ** 2)), rtol=1e-5)
    assert float(score) <= float(data) + 1e-6


def _ce_rvq_numpy(z0_hat, codes, codebooks, mask):
    """Direct reference: logits_j = -||r_j - c_jk||^2 with r_j = z0_hat - sum_{i<j} e_i."""
    z0_hat, codebooks = np.float64(z0_hat), np.float64(codebooks)
    b, t, r = codes.shape
    total, count = 0.0, 0
    for bi in range(b):
        for ti in range(t):
            if mask[bi, ti] == 0:
                continue
            prefix = np.zeros(z0_hat.shape[-1])
            for j in range(r):
                resid = z0_hat[bi, ti] - prefix
                logits = -np.sum((resid[None] - codebooks[j]) ** 2, axis=-1)
                logits -= logits.max()
                logp = logits - np.log(np.sum(np.exp(logits)))
                total += -logp[codes[bi, ti, j]]
                count += 1
                prefix = prefix + codebooks[j, codes[bi, ti, j]]
    return total / count


def test_ce_rvq_matches_numpy_reference():
    rng = np.random.default_rng(0)
    r, k, d, b, t = 3, 8, 5, 2, 6
    codebooks = rng.normal(size=(r, k, d)).astype(np.float32)
    codes = rng.integers(0, k, (b, t, r))
    z = np.asarray(L.latents_from_codes(jnp.asarray(codes), jnp.asarray(codebooks)))
    np.testing.assert_allclose(z[0, 0], codebooks[np.arange(r), codes[0, 0]].sum(0), rtol=1e-5)
    z0_hat = z + 0.7 * rng.normal(size=z.shape).astype(np.float32)
    mask = np.ones((b, t), np.float32)
    mask[1, 4:] = 0
    got = L.ce_rvq_loss(jnp.asarray(z0_hat), jnp.asarray(codes), jnp.asarray(codebooks), mask)
    np.testing.assert_allclose(float(got), _ce_rvq_numpy(z0_hat, codes, codebooks, mask), rtol=1e-4)
    # The exact latent is classified far better than a noisy one.
    exact = L.ce_rvq_loss(jnp.asarray(z), jnp.asarray(codes), jnp.asarray(codebooks), mask)
    assert float(exact) < float(got)


def test_ce_rvq_gradient_matches_the_direct_formula():
    """The fast form (log-sum-exp in [R, BT, K], true logits from the embeddings) has the
    gradient of -log softmax(-||r_j - c_jk||^2)[code_j] written out directly."""
    rng = np.random.default_rng(1)
    r, k, d, b, t = 4, 16, 6, 2, 5
    codebooks = jnp.asarray(rng.normal(size=(r, k, d)), jnp.float32)
    codes = jnp.asarray(rng.integers(0, k, (b, t, r)))
    z0_hat = jnp.asarray(rng.normal(size=(b, t, d)), jnp.float32)
    mask = jnp.asarray(rng.random((b, t)) > 0.3, jnp.float32)

    def direct(z):
        emb = jnp.stack([codebooks[j][codes[..., j]] for j in range(r)], axis=-2)
        resid = z[..., None, :] - (jnp.cumsum(emb, axis=-2) - emb)
        logits = -jnp.sum((resid[..., None, :] - codebooks[None, None]) ** 2, axis=-1)
        logp = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.take_along_axis(logp, codes[..., None], axis=-1)[..., 0]
        return L.masked_mean(nll, mask)

    fast = lambda z: L.ce_rvq_loss(z, codes, codebooks, mask)  # noqa: E731
    np.testing.assert_allclose(fast(z0_hat), direct(z0_hat), rtol=1e-5)
    np.testing.assert_allclose(
        jax.grad(fast)(z0_hat), jax.grad(direct)(z0_hat), rtol=1e-4, atol=1e-6
    )


def _utterances(seed=0, b=6, n=24, t=160):
    rng = np.random.default_rng(seed)
    dur = np.zeros((b, n), np.int32)
    tm = np.zeros((b, n), np.float32)
    fm = np.zeros((b, t), np.float32)
    for i in range(b):
        nt = int(rng.integers(8, n + 1))
        d = rng.integers(0, 12, nt)  # zero-length tokens included
        d[0] = max(d[0], 1)
        while d.sum() > t:
            d = d // 2 + (d > 0)
            d = np.minimum(d, t // nt)
        dur[i, :nt], tm[i, :nt], fm[i, : d.sum()] = d, 1, 1
    lat = rng.normal(size=(b, t, 3)).astype(np.float32) * fm[..., None]
    return {
        "durations": dur,
        "token_mask": tm,
        "frame_mask": fm,
        "phonemes": (rng.integers(1, 60, (b, n)) * tm).astype(np.int32),
        "latent": lat,
        "log_f0": (5.0 + rng.normal(size=(b, t)) * fm).astype(np.float32),
    }


def test_cut_prompt_keeps_durations_and_frames_consistent():
    batch = _utterances()
    min_f, max_f = 10, 40
    cut_fn = jax.jit(lambda b, k: L.cut_prompt(b, k, min_f, max_f, frame_keys=("latent", "log_f0")))
    for seed in range(3):
        out = jax.tree.map(np.asarray, cut_fn(batch, jax.random.key(seed)))
        for i in range(len(batch["durations"])):
            n = int(batch["frame_mask"][i].sum())
            u, cut, ct = int(out["prompt_start"][i]), int(out["prompt_frames"][i]), 0
            kept = int(out["frame_mask"][i].sum())
            # Invariant: target durations sum to target frames; frames are removed exactly.
            assert int((out["durations"][i] * out["token_mask"][i]).sum()) == kept
            assert kept == n - cut and kept > 0
            ct = int(out["prompt_tokens"][i])
            assert int(out["token_mask"][i].sum()) == int(batch["token_mask"][i].sum()) - ct
            # Cut at a token boundary: u and u + cut are cumulative sums of the durations.
            cum = np.concatenate([[0], np.cumsum(batch["durations"][i])])
            assert u in cum and (u + cut) in cum
            assert cut >= min(min_f, n // 2) or cut >= n // 2
            # Target = frames [0, u) ++ [u + cut, n); prompt = frames [u, u + cut) (<= max_f).
            lat = batch["latent"][i]
            want = np.concatenate([lat[:u], lat[u + cut : n]])
            np.testing.assert_array_equal(out["latent"][i, :kept], want)
            assert not out["latent"][i, kept:].any()
            p = min(cut, max_f)
            assert int(out["prompt_mask"][i].sum()) == p
            np.testing.assert_array_equal(out["prompt_latent"][i, :p], lat[u : u + p])
            np.testing.assert_array_equal(
                out["prompt_log_f0"][i, :p], batch["log_f0"][i, u : u + p]
            )
            # Tokens: the kept phonemes in order.
            a = int(np.searchsorted(cum, u, side="right")) - 1
            a = min(a, len(cum) - 2)
            ph = batch["phonemes"][i, : int(batch["token_mask"][i].sum())]
            assert ph.size - ct == int(out["token_mask"][i].sum())
    # Prompt dropout empties the prompt mask for (about) the requested fraction.
    out = L.cut_prompt(batch, jax.random.key(5), min_f, max_f, drop_prob=1.0)
    assert float(jnp.sum(out["prompt_mask"])) == 0.0


GAUSS_MU = np.array([1.5, -0.5, 0.0, 3.0], np.float32)
GAUSS_S = np.array([0.5, 1.0, 2.0, 0.25], np.float32)


def _gaussian_x0_fn(z, t):
    """Exact posterior mean E[z0 | z_t] for z0 ~ N(mu, s^2):
    mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (z - alpha mu)."""
    alpha, sigma = SDE.alpha_sigma(t)
    a, sg = alpha[:, None, None], sigma[:, None, None]
    return GAUSS_MU + a * GAUSS_S**2 / (a**2 * GAUSS_S**2 + sg**2) * (z - a * GAUSS_MU)


@pytest.mark.parametrize(
    "name,steps,tol",
    [("euler", 150, 0.05), ("heun", 20, 0.06), ("dpm++2m", 20, 0.05), ("sde", 300, 0.06)],
)
def test_samplers_recover_gaussian(name, steps, tol):
    shape = (4096, 1, 4)
    run = jax.jit(
        lambda k: get_sampler(name)(_gaussian_x0_fn, shape, k, SDE, steps, temperature=1.0)
    )
    z = np.asarray(run(jax.random.key(0))).reshape(-1, 4)
    assert np.all(np.isfinite(z))
    assert np.all(np.abs(z.mean(0) - GAUSS_MU) < tol * np.maximum(GAUSS_S, 0.5))
    assert np.all(np.abs(z.std(0) / GAUSS_S - 1) < tol)


def test_temperature_shrinks_and_guidance_extrapolates():
    shape = (2048, 1, 4)
    cold = get_sampler("dpm++2m")(_gaussian_x0_fn, shape, jax.random.key(1), SDE, 15, 0.5)
    assert np.all(np.asarray(cold).reshape(-1, 4).std(0) < 0.7 * GAUSS_S)
    assert set(SAMPLERS) == {"euler", "heun", "dpm++2m", "sde"}
    with pytest.raises(ValueError, match="unknown sampler"):
        get_sampler("nope")
    c = lambda z, t: z + 1.0
    u = lambda z, t: z
    assert guided(c, u, 1.0) is c
    np.testing.assert_allclose(guided(c, u, 3.0)(jnp.zeros(2), None), 3.0)


def test_dpmpp_2m_trajectory_is_the_sampler_with_its_x0s():
    """The probe's trajectory ends where dpm++2m ends; its x0s are the denoiser's at each t."""
    from naturalspeech2_jax.diffusion.samplers import dpmpp_2m_trajectory

    shape, key = (64, 3, 4), jax.random.key(2)
    z_ref = get_sampler("dpm++2m")(_gaussian_x0_fn, shape, key, SDE, 12, 0.8)
    z, x0s, ts = dpmpp_2m_trajectory(_gaussian_x0_fn, shape, key, SDE, 12, 0.8)
    np.testing.assert_allclose(np.asarray(z), np.asarray(z_ref), rtol=1e-5, atol=1e-6)
    assert x0s.shape == (12, *shape) and ts.shape == (12,) and float(ts[0]) == 1.0
    assert np.all(np.diff(np.asarray(ts)) < 0)
    z1 = SDE.prior_sample(key, shape, 0.8)
    t1 = jnp.ones((shape[0],))
    np.testing.assert_allclose(x0s[0], _gaussian_x0_fn(z1, t1), rtol=1e-5, atol=1e-6)
    # Exact posterior means converge on the sample as t -> 0.
    err = [float(jnp.mean((x0s[i] - z) ** 2)) for i in range(12)]
    assert err[-1] < 1e-3 * err[0]


def test_sample_frames_picks_distinct_valid_frames():
    b, t = 3, 20
    mask = np.zeros((b, t), np.float32)
    mask[0, :20], mask[1, :7], mask[2, :12] = 1, 1, 1
    z = np.arange(b * t, dtype=np.float32).reshape(b, t, 1) + 1.0
    codes = np.arange(b * t).reshape(b, t, 1)
    zs, cs, ms = jax.jit(lambda k: L.sample_frames(k, 10, z, codes, mask))(jax.random.key(0))
    zs, cs, ms = np.asarray(zs), np.asarray(cs), np.asarray(ms)
    assert zs.shape == (b, 10, 1) and ms.sum(1).tolist() == [10, 7, 10]
    for i in range(b):
        picked = cs[i, ms[i] > 0, 0]
        assert len(set(picked)) == len(picked)  # without replacement
        assert np.all(mask.reshape(-1)[picked] > 0)  # only valid frames
        np.testing.assert_array_equal(zs[i, ms[i] > 0, 0], z.reshape(-1)[picked])
    # Unbiased: over many draws each valid frame of row 0 is picked about half the time.
    draw = jax.jit(jax.vmap(lambda k: L.sample_frames(k, 10, z, codes, mask)[1]))
    picked = np.asarray(draw(jax.random.split(jax.random.key(1), 200)))[:, 0, :, 0]
    counts = np.bincount(picked.reshape(-1), minlength=t)
    assert np.all(np.abs(counts / 200 - 0.5) < 0.15)
    assert L.sample_frames(jax.random.key(0), 0, z, codes, mask)[0] is z
