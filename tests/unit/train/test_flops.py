"""``train/flops.py``: matmul and convolution FLOPs of a traced program, scans times their
length (XLA's cost analysis counts a loop body once)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from naturalspeech2_jax.train.flops import traced_flops

B, T, C, K = 4, 20, 8, 3


def test_matmuls_count_two_flops_per_multiply_add():
    a, w = jnp.ones((B, T, C)), jnp.ones((C, 5))
    assert traced_flops(lambda a, w: a @ w, a, w) == 2 * B * T * C * 5
    v = jnp.ones((B, C, 6))  # a batched contraction: batch dims counted once
    assert traced_flops(lambda a, v: jnp.einsum("btc,bcd->btd", a, v), a, v) == 2 * B * T * C * 6


def test_a_scan_counts_its_body_once_per_iteration_and_xla_does_not():
    w = jnp.ones((C, C))

    def f(x, w):
        return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=7)[0]

    x = jnp.ones((B, T, C))
    one = 2 * B * T * C * C
    assert traced_flops(f, x, w) == 7 * one
    # Forward, input gradient and weight gradient: three matmuls per iteration.
    assert traced_flops(jax.grad(lambda x, w: f(x, w).sum(), argnums=(0, 1)), x, w) == 3 * 7 * one
    xla = jax.jit(f).lower(x, w).compile().cost_analysis()
    xla = xla[0] if isinstance(xla, list) else xla
    assert xla["flops"] < 2 * one  # the body once (plus its tanh)


def test_convolutions_and_their_gradients():
    x, w = jnp.ones((B, T, C)), jnp.ones((K, C, 2 * C))

    def conv(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (1,), "SAME", rhs_dilation=(2,), dimension_numbers=("NWC", "WIO", "NWC")
        )

    one = 2 * B * T * 2 * C * C * K
    assert traced_flops(conv, x, w) == one
    grads = jax.grad(lambda x, w: conv(x, w).sum(), argnums=(0, 1))
    assert traced_flops(grads, x, w) == 3 * one  # input and kernel gradients: one conv each


def test_cond_counts_its_cheapest_or_its_most_expensive_branch():
    a, w = jnp.ones((B, C)), jnp.ones((C, C))

    def f(p, a, w):
        return jax.lax.cond(p, lambda: (a @ w) @ w, lambda: a @ w)

    assert traced_flops(f, True, a, w) == 2 * B * C * C
    assert traced_flops(f, True, a, w, branches="max") == 2 * (2 * B * C * C)
