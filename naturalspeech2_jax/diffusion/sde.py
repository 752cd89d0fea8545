"""The variance-preserving SDE of NaturalSpeech 2 (Song et al. 2021, score_sde's VPSDE).

    dz = -1/2 beta_t z dt + sqrt(beta_t) dw,  t in [0, 1],
    beta_t = beta_min + t (beta_max - beta_min)

Its marginal is z_t = alpha_t z_0 + sigma_t eps with
    log alpha_t = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min,   sigma_t^2 = 1 - alpha_t^2.
The network predicts z0; every score below is expressed through an x0 prediction:
    score(z_t) = -(z_t - alpha_t x0) / sigma_t^2.
Pure functions of arrays; no files, flags or devices.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class VPSDE:
    """Linear-beta VP SDE. Hashable, so it can be a static argument of jit."""

    beta_min: float = 0.05
    beta_max: float = 20.0

    def beta(self, t: jax.Array) -> jax.Array:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t: jax.Array) -> jax.Array:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Marginal mean coefficient alpha_t and std sigma_t (float32)."""
        la = self.log_alpha(jnp.asarray(t, jnp.float32))
        alpha = jnp.exp(la)
        # -expm1(2 log alpha) is exact for small t where 1 - alpha^2 would cancel.
        sigma = jnp.sqrt(-jnp.expm1(2.0 * la))
        return alpha, sigma

    def marginal(self, z0: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean [B, ...] and std [B] of p(z_t | z_0); t is [B]."""
        alpha, sigma = self.alpha_sigma(t)
        return expand_like(alpha, z0) * z0, sigma

    def perturb(self, z0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
        """z_t = alpha_t z0 + sigma_t noise."""
        alpha, sigma = self.alpha_sigma(t)
        return expand_like(alpha, z0) * z0 + expand_like(sigma, z0) * noise

    def score_from_x0(self, z_t: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
        """Score of p(z_t) implied by an x0 prediction: -(z_t - alpha x0) / sigma^2."""
        alpha, sigma = self.alpha_sigma(t)
        return -(z_t - expand_like(alpha, z_t) * x0) / expand_like(sigma**2, z_t)

    def drift_diffusion(self, z: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Forward SDE drift f(z, t) = -1/2 beta z and diffusion g(t) = sqrt(beta)."""
        beta = self.beta(jnp.asarray(t, jnp.float32))
        return -0.5 * expand_like(beta, z) * z, jnp.sqrt(beta)

    def ode_velocity(self, z: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
        """Probability-flow ODE dz/dt = -1/2 beta (z + score)."""
        beta = expand_like(self.beta(jnp.asarray(t, jnp.float32)), z)
        return -0.5 * beta * (z + self.score_from_x0(z, x0, t))

    def prior_sample(self, rng: jax.Array, shape: tuple[int, ...], std: float = 1.0) -> jax.Array:
        """z_1 ~ N(0, std^2) (std < 1 is the paper's temperature, 1/1.2)."""
        return std * jax.random.normal(rng, shape, jnp.float32)


def expand_like(v: jax.Array, like: jax.Array) -> jax.Array:
    """Broadcast a per-example [B] (or scalar) array against [B, ...]."""
    v = jnp.asarray(v)
    if v.ndim == 0:
        return v
    return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))
