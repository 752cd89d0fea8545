"""Residual vector quantizer: exact codebook hits, dead-code replacement, quantizer dropout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from naturalspeech2_jax.models.quantizer import ResidualVQ
from tests.helpers import jit_build


@nnx.jit(static_argnames="update")
def vq_call(vq, x, n_active=None, rng=None, update=False):
    return vq(x, n_active=n_active, rng=rng, update=update)


def _initialised_vq(x: jax.Array, **kw) -> ResidualVQ:
    nq, k = kw.pop("nq", 16), kw.pop("k", 64)
    vq = jit_build(lambda: ResidualVQ(nq, k, x.shape[-1], rngs=nnx.Rngs(0), **kw))
    vq_call(vq, x, rng=jax.random.key(1), update=True)  # first batch initialises codebooks
    assert int(vq.initialized[...]) == 1
    return vq


def test_codebook_vector_quantizes_to_itself_with_zero_residual():
    x = jax.random.normal(jax.random.key(0), (4, 64, 8))
    vq = _initialised_vq(x, kmeans_iters=2)
    idx = jnp.array([3, 17, 40, 63])
    entries = vq.codebook[0][idx][None]  # [1, 4, D]: latents equal to codebook-0 entries
    zq, codes, aux = vq_call(vq, entries, n_active=1)
    np.testing.assert_array_equal(codes[0, :, 0], idx)
    np.testing.assert_allclose(zq, entries, atol=1e-6)  # residual after quantizer 0 is zero
    assert float(aux["commit_loss"]) < 1e-10
    np.testing.assert_allclose(vq.decode_codes(codes[..., :1]), entries, atol=1e-6)


def test_decode_codes_sums_every_quantizers_vector():
    x = jax.random.normal(jax.random.key(1), (2, 16, 8))
    vq = _initialised_vq(x, nq=3, k=16)
    zq, codes, _ = vq_call(vq, x)
    np.testing.assert_allclose(vq.decode_codes(codes), zq, rtol=1e-5, atol=1e-5)
    assert vq.decode_codes(codes[..., :0]).shape == (2, 16, 8)
    assert not np.any(np.asarray(vq.decode_codes(codes[..., :0])))


def test_dead_code_is_replaced_by_a_batch_residual():
    x = jax.random.normal(jax.random.key(0), (2, 32, 8))
    vq = _initialised_vq(x, nq=2, k=16, decay=0.5, dead_code_threshold=0.5)
    far = jnp.full((8,), 1e3)  # a code no residual is ever near: its usage decays to 0
    vq.codebook[...] = vq.codebook[...].at[0, 5].set(far)
    vq.cluster_size[...] = vq.cluster_size[...].at[0, 5].set(0.0)
    _, _, aux = vq_call(vq, x, rng=jax.random.key(2), update=True)
    assert float(aux["dead_codes_replaced"]) >= 1
    new = np.asarray(vq.codebook[0, 5])
    rows = np.asarray(x).reshape(-1, 8)
    assert np.min(np.abs(rows - new).max(-1)) < 1e-5  # now one of the batch's residuals
    assert float(vq.cluster_size[0, 5]) >= 1.0


def test_quantizer_dropout_prefixes_decode_and_error_falls_with_k():
    x = jax.random.normal(jax.random.key(0), (8, 128, 8))
    vq = _initialised_vq(x, kmeans_iters=5)
    codes = nnx.jit(lambda vq, x: vq.encode(x))(vq, x)
    errors = []
    for k in range(1, 17):
        z = vq.decode_codes(codes[..., :k])
        assert z.shape == x.shape
        errors.append(float(jnp.mean((x - z) ** 2)))
        # The training path with k active quantizers decodes to the same latent.
        zq, _, _ = vq_call(vq, x, n_active=jnp.int32(k))
        np.testing.assert_allclose(zq, z, atol=1e-4)
    assert np.all(np.isfinite(errors))
    assert errors[15] < errors[7] < errors[3] < errors[0] < float(jnp.mean(x**2))
    assert sum(b < a for a, b in zip(errors, errors[1:], strict=False)) >= 13
