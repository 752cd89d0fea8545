"""models/conv.py: the matmul weight gradient equals XLA's, looped and scanned, and only the
convolutions it supports take it."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from naturalspeech2_jax.benchmarks import conv_grad
from naturalspeech2_jax.models import conv as conv_lib
from naturalspeech2_jax.models import transformer

NWC = ("NWC", "WIO", "NWC")


@pytest.fixture(autouse=True)
def _restore_mode():
    yield
    conv_lib.set_weight_grad("auto")


def _grads(mode: str, x, w, padding, dilation):
    conv_lib.set_weight_grad(mode)

    def loss(x, w):
        y = conv_lib.conv_general_dilated(
            x, w, (1,), padding, rhs_dilation=(dilation,), dimension_numbers=NWC
        )
        return jnp.sum(jnp.sin(y) * jnp.arange(y.shape[1])[None, :, None])

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, w)


@pytest.mark.parametrize(
    "kernel,dilation,padding",
    [
        (3, 1, "SAME"),
        (4, 1, "SAME"),  # even kernel: lax puts the extra pad on the right
        (5, 2, "SAME"),
        (9, 1, "SAME"),
        (1, 1, "VALID"),
        (3, 2, "VALID"),
        (3, 1, ((2, 0),)),  # causal
        (7, 3, ((1, 5),)),
        (3, 1, ((-1, 2),)),  # negative padding crops
    ],
)
def test_matmul_weight_gradient_equals_xla(kernel, dilation, padding):
    x = jax.random.normal(jax.random.key(0), (2, 23, 5))
    w = jax.random.normal(jax.random.key(1), (kernel, 5, 6))
    (va, (dxa, dwa)), (vb, (dxb, dwb)) = (
        _grads("matmul", x, w, padding, dilation),
        _grads("xla", x, w, padding, dilation),
    )
    np.testing.assert_allclose(va, vb, rtol=1e-6)
    np.testing.assert_allclose(dxa, dxb, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dwa, dwb, rtol=1e-5, atol=1e-4)
    assert dwa.shape == w.shape and dxa.shape == x.shape


def test_the_matmul_form_is_what_runs():
    """The weight gradient's jaxpr has dot_generals and no convolution in matmul mode, and the
    transpose convolution in xla mode."""
    x = jnp.ones((2, 16, 4))
    w = jnp.ones((3, 4, 4))

    def dw(mode):
        conv_lib.set_weight_grad(mode)
        f = lambda w: jnp.sum(  # noqa: E731
            conv_lib.conv_general_dilated(x, w, (1,), "SAME", dimension_numbers=NWC) ** 2
        )
        return str(jax.make_jaxpr(jax.grad(f))(w))

    matmul, xla = dw("matmul"), dw("xla")
    assert matmul.count("dot_general") == 3  # one per tap
    assert xla.count("conv_general_dilated") == 2 and "dot_general" not in xla


@pytest.mark.parametrize(
    "kernel,dilation,padding", [(7, 1, "SAME"), (4, 2, "SAME"), (3, 1, ((2, 0),)), (5, 1, "VALID")]
)
def test_depthwise_taps_equal_xlas_grouped_convolution(kernel, dilation, padding):
    """A depthwise convolution (a group per channel) as shifted taps: the same output and
    gradients as XLA's grouped convolution, and no convolution left in its jaxpr."""
    x = jax.random.normal(jax.random.key(0), (2, 23, 6))
    w = jax.random.normal(jax.random.key(1), (kernel, 1, 6))

    def run(mode):
        conv_lib.set_weight_grad(mode)

        def loss(x, w):
            y = conv_lib.conv_general_dilated(
                x,
                w,
                (1,),
                padding,
                rhs_dilation=(dilation,),
                dimension_numbers=NWC,
                feature_group_count=6,
            )
            return jnp.sum(jnp.sin(y) * jnp.arange(y.shape[1])[None, :, None])  # fmt: skip

        jaxpr = str(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(x, w))
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, w), jaxpr

    (va, (dxa, dwa)), taps = run("matmul")
    (vb, (dxb, dwb)), xla = run("xla")
    np.testing.assert_allclose(va, vb, rtol=1e-5)
    np.testing.assert_allclose(dxa, dxb, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dwa, dwb, rtol=1e-5, atol=1e-4)
    assert "conv_general_dilated" not in taps and "conv_general_dilated" in xla
    conv_lib.set_weight_grad("auto")
    assert conv_lib.depthwise_as_taps() == (jax.default_backend() == "cpu")
    conv_lib.set_weight_grad("auto", platform="tpu")
    assert not conv_lib.depthwise_as_taps()


def test_unsupported_convolutions_are_xlas():
    """Strided, grouped, input-dilated and 2-D convolutions keep XLA's gradient (still right)."""
    conv_lib.set_weight_grad("matmul")
    x = jax.random.normal(jax.random.key(0), (2, 16, 4))
    cases = [
        (jnp.ones((4, 4, 6)), dict(window_strides=(2,), padding=((1, 1),))),
        (jnp.ones((3, 2, 6)), dict(window_strides=(1,), padding="SAME", feature_group_count=2)),
        (jnp.ones((4, 4, 6)), dict(window_strides=(1,), padding=((2, 2),), lhs_dilation=(2,))),
    ]
    for w, kw in cases:
        f = lambda w, kw=kw: jnp.sum(  # noqa: E731
            conv_lib.conv_general_dilated(x, w, dimension_numbers=NWC, **kw) ** 2
        )
        g = lambda w, kw=kw: jnp.sum(  # noqa: E731
            jax.lax.conv_general_dilated(x, w, dimension_numbers=NWC, **kw) ** 2
        )
        assert "dot_general" not in str(jax.make_jaxpr(jax.grad(f))(w))
        np.testing.assert_allclose(jax.grad(f)(w), jax.grad(g)(w), rtol=1e-6)
    x2 = jnp.ones((1, 8, 8, 3))
    w2 = jnp.ones((3, 3, 3, 2))
    dims = ("NHWC", "HWIO", "NHWC")
    y = conv_lib.conv_general_dilated(x2, w2, (1, 1), "SAME", dimension_numbers=dims)
    assert y.shape == (1, 8, 8, 2)


def test_scanned_stack_gradients_match_looped_and_xla():
    """The case the switch exists for: a scanned stack with the matmul gradient equals the looped
    stack with XLA's (inputs, kernels and biases)."""
    x = jax.random.normal(jax.random.key(0), (2, 20, 8))
    ws = 0.1 * jax.random.normal(jax.random.key(1), (4, 3, 8, 8))
    bs = 0.1 * jax.random.normal(jax.random.key(2), (4, 8))

    def grads(mode, scanned):
        conv_lib.set_weight_grad(mode)
        f = conv_grad.stack_fn(scanned, dilation=2)
        return jax.jit(jax.grad(lambda *a: jnp.sum(f(*a) ** 2), argnums=(0, 1, 2)))(x, ws, bs)

    ref = grads("xla", scanned=False)
    for got in (grads("matmul", scanned=True), grads("matmul", scanned=False)):
        for a, b in zip(got, ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_nnx_conv_uses_it_and_bf16_keeps_dtypes():
    """The models' nnx.Conv goes through the hook; a bf16 kernel gets a bf16 gradient whose
    float32 accumulation matches XLA's within bf16 precision."""
    conv = transformer.conv1d(8, 8, 3, nnx.Rngs(0), dilation=2)
    assert conv.conv_general_dilated is conv_lib.conv_general_dilated
    x = jax.random.normal(jax.random.key(0), (2, 12, 8), jnp.bfloat16)
    w = conv.kernel[...].astype(jnp.bfloat16)

    def dw(mode):
        conv_lib.set_weight_grad(mode)
        f = lambda w: jnp.sum(  # noqa: E731
            conv_lib.conv_general_dilated(
                x, w, (1,), "SAME", rhs_dilation=(2,), dimension_numbers=NWC
            ).astype(jnp.float32)
        )
        return jax.grad(f)(w)

    a, b = dw("matmul"), dw("xla")
    assert a.dtype == jnp.bfloat16
    np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=2e-2, atol=5e-2)


def test_modes_and_platform_defaults():
    assert conv_lib.platform_default("cpu", in_scan=True) == "matmul"
    assert conv_lib.platform_default("cpu", in_scan=False) == "xla"
    assert conv_lib.platform_default("tpu", True) == conv_lib.platform_default("gpu", True) == "xla"
    conv_lib.set_weight_grad("auto", platform="tpu")
    with conv_lib.scanned():
        assert conv_lib.weight_grad_mode() == "xla"
    conv_lib.set_weight_grad("auto", platform="cpu")
    assert conv_lib.weight_grad_mode() == "xla"
    with conv_lib.scanned():
        assert conv_lib.weight_grad_mode() == "matmul"
    assert conv_lib.weight_grad_mode() == "xla"  # the context is left
    conv_lib.set_weight_grad("xla")
    with conv_lib.scanned():
        assert conv_lib.weight_grad_mode() == "xla"  # a fixed mode wins
    with pytest.raises(ValueError, match="precision.conv_weight_grad='fast'.*auto, xla, matmul"):
        conv_lib.set_weight_grad("fast")


def test_auto_takes_the_matmul_form_in_scanned_stacks_only():
    """On CPU, "auto" gives a scanned stack's convolutions the matmul weight gradient and a
    looped stack's XLA's (the faster form for each, benchmarks/conv_grad.py)."""
    conv_lib.set_weight_grad("auto", platform="cpu")
    x = jnp.ones((2, 12, 4))
    ws = jnp.ones((3, 3, 4, 4)) * 0.1
    bs = jnp.zeros((3, 4))

    def jaxpr(scanned):
        f = conv_grad.stack_fn(scanned, dilation=1)
        return str(jax.make_jaxpr(jax.grad(lambda ws: jnp.sum(f(x, ws, bs) ** 2)))(ws))

    scanned, looped = jaxpr(True), jaxpr(False)
    assert "custom_vjp" in scanned or "dot_general" in scanned
    assert scanned.count("conv_general_dilated") < looped.count("conv_general_dilated")
    # forward (3), weight gradients (3), input gradients of layers 2 and 3 (x is a constant)
    assert looped.count("conv_general_dilated") == 3 + 3 + 2


def test_benchmark_runs_and_reports(tmp_path):
    out = tmp_path / "conv.json"
    argv = ["--batch", "1", "--time", "16", "--channels", "8", "--layers", "2", "--steps", "1"]
    assert conv_grad.main([*argv, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("looped/matmul", "scanned/matmul", "looped/xla", "scanned/xla"):
        assert result[key]["step_s"] > 0 and result[key]["gflops_per_s"] > 0
    assert result["matmul_peak_gflops_per_s"] > 0
