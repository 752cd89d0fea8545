"""1-D convolution whose weight gradient is a matmul: the backend switch for the backward pass.

Every 1-D convolution of the models goes through ``conv_general_dilated`` here (a drop-in for
``jax.lax.conv_general_dilated``, and the ``conv_general_dilated`` hook of ``nnx.Conv``). Its
forward pass and input gradient are XLA's convolution; its weight gradient depends on the
*weight-gradient mode*:

- ``"xla"``: XLA's own transpose of the convolution (a convolution over batch x time).
- ``"matmul"``: ``dw[i] = sum_{b,t} x[b, t + i * dilation]^T . dy[b, t]``, one ``dot_general`` per
  kernel tap over the padded input (no im2col copy), accumulated in float32.

Why: on XLA:CPU the weight-gradient convolution that ``jax.grad`` emits is lowered to a slow
generic loop when it sits inside a ``while`` loop (``lax.scan``): a 12-layer stack of
``[8, 400, 256]`` kernel-3 convolutions measured 27-33 s per forward+backward scanned against
0.35-0.66 s looped, and 16-31 s of compile (``benchmarks/conv_grad.py``). With the matmul
weight gradient the scanned stack runs at 0.45 s and compiles in under 2 s. Outside a scan XLA's
own form is the faster one on CPU (0.35 s against 0.42 s looped), and accelerators have fast
weight-gradient convolutions of their own (cuDNN, the TPU's MXU lowering), so the default
``"auto"`` takes ``"matmul"`` only for convolutions traced inside a scanned stack (``scanned()``,
entered by ``models/scan.py``) on CPU, and ``"xla"`` everywhere else. ``set_weight_grad`` (the
training config's ``precision.conv_weight_grad``) fixes either form in one place.

Only what the models use takes the matmul path: 1-D, channels-last (NWC/WIO/NWC), stride 1, no
input dilation, one feature group. Anything else (strided codec convs, transposed convs, 2-D
discriminator convs) is XLA's convolution unchanged.

Depthwise 1-D convolutions (one feature group per channel: the spectral codec's ConvNeXt
kernel-7 convs) are, on CPU, a sum of shifted inputs times each tap's weights: elementwise work
XLA fuses into one loop, with a gradient of the same kind. XLA:CPU runs a grouped convolution
as a generic loop: on ``[8, 80, 256]`` with kernel 7, forward + backward took 39 ms against
3.2 ms as taps, and the 12 such convolutions were 27% of the ``tiny_spectral`` codec's step.
The same mode decides: ``"auto"`` takes the taps on CPU (anywhere) and XLA's convolution on
accelerators, ``"matmul"`` always the taps, ``"xla"`` never.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp

WEIGHT_GRAD_MODES = ("auto", "xla", "matmul")
_mode = "auto"
_platform: str | None = None
_in_scan: contextvars.ContextVar[bool] = contextvars.ContextVar("conv_in_scan", default=False)


def platform_default(platform: str, in_scan: bool) -> str:
    """The faster weight gradient measured for ``platform`` ("cpu", "gpu", "tpu"), inside a
    scanned stack or not."""
    return "matmul" if platform == "cpu" and in_scan else "xla"


def set_weight_grad(mode: str, platform: str | None = None) -> None:
    """Choose the weight-gradient form for every convolution traced from now on; ``"auto"``
    resolves per convolution for ``platform`` (default: JAX's default backend at trace time)."""
    global _mode, _platform
    if mode not in WEIGHT_GRAD_MODES:
        raise ValueError(
            f"precision.conv_weight_grad={mode!r} is not a weight-gradient mode; set it to one "
            f"of {', '.join(WEIGHT_GRAD_MODES)}."
        )
    _mode, _platform = mode, platform


@contextlib.contextmanager
def scanned() -> Iterator[None]:
    """Convolutions traced in this context are in a ``lax.scan`` body (``models/scan.py``)."""
    token = _in_scan.set(True)
    try:
        yield
    finally:
        _in_scan.reset(token)


def weight_grad_mode() -> str:
    """The form in force for a convolution traced now: ``"xla"`` or ``"matmul"``."""
    if _mode != "auto":
        return _mode
    return platform_default(_platform or jax.default_backend(), _in_scan.get())


def depthwise_as_taps() -> bool:
    """Whether a depthwise convolution traced now is written as shifted taps (see above)."""
    if _mode != "auto":
        return _mode == "matmul"
    return (_platform or jax.default_backend()) == "cpu"


def depthwise_conv1d(x: jax.Array, w: jax.Array, pads: tuple[int, int], dilation: int):
    """``[B, T, C]`` (*) ``[K, 1, C]`` per channel: ``sum_i x_padded[:, t + i * dilation] w[i]``."""
    xp = jnp.pad(x, ((0, 0), pads, (0, 0)))
    k = w.shape[0]
    t_out = xp.shape[1] - dilation * (k - 1)
    out = xp[:, :t_out] * w[0, 0]
    for i in range(1, k):
        out = out + xp[:, i * dilation : i * dilation + t_out] * w[i, 0]
    return out


def _xla_conv(x, w, pads, dilation, precision):
    return jax.lax.conv_general_dilated(
        x,
        w,
        (1,),
        (pads,),
        rhs_dilation=(dilation,),
        dimension_numbers=("NWC", "WIO", "NWC"),
        precision=precision,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv1d_matmul_grad(x, w, pads: tuple[int, int], dilation: int, precision=None):
    """``[B, T, Cin] * [k, Cin, Cout] -> [B, T', Cout]`` (stride 1), weight gradient as matmuls."""
    return _xla_conv(x, w, pads, dilation, precision)


def _fwd(x, w, pads, dilation, precision):
    return _xla_conv(x, w, pads, dilation, precision), (x, w)


def _bwd(pads, dilation, precision, residuals, dy):
    x, w = residuals
    k, t_in, t_out = w.shape[0], x.shape[1], dy.shape[1]
    lo, hi = pads
    # dx: the correlation of dy with the flipped, transposed kernel. Output length t_in needs
    # left pad (k-1)d - lo and right pad t_in - t_out + lo (may be negative: lax crops then).
    span = dilation * (k - 1)
    dx = _xla_conv(
        dy,
        jnp.flip(w, 0).transpose(0, 2, 1),
        (span - lo, t_in - t_out + lo),
        dilation,
        precision,
    )
    # dw[i] = x_padded[:, i*d : i*d + t_out]^T . dy, accumulated in float32.
    xp = jnp.pad(x, ((0, 0), (max(lo, 0), max(hi, 0)), (0, 0)))
    xp = xp[:, max(-lo, 0) : xp.shape[1] - max(-hi, 0)]
    taps = [
        jax.lax.dot_general(
            xp[:, i * dilation : i * dilation + t_out],
            dy,
            (((0, 1), (0, 1)), ((), ())),
            precision=precision,
            preferred_element_type=jnp.float32,
        )
        for i in range(k)
    ]
    return dx.astype(x.dtype), jnp.stack(taps).astype(w.dtype)


conv1d_matmul_grad.defvjp(_fwd, _bwd)


def _is_nwc(dimension_numbers) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, tuple) and all(isinstance(s, str) for s in dimension_numbers):
        return tuple(dimension_numbers) == ("NWC", "WIO", "NWC")
    dn = dimension_numbers
    return (
        tuple(dn.lhs_spec) == (0, 2, 1)
        and tuple(dn.rhs_spec) == (2, 1, 0)
        and tuple(dn.out_spec) == (0, 2, 1)
    )


def _explicit_pads(padding, length: int, kernel: int, dilation: int) -> tuple[int, int] | None:
    """``padding`` ("SAME", "VALID" or one (lo, hi) pair) as (lo, hi), as lax resolves it."""
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            return None
        span = dilation * (kernel - 1) + 1
        ((lo, hi),) = jax.lax.padtype_to_pads((length,), (span,), (1,), padding.upper())
        return int(lo), int(hi)
    (pad,) = padding
    return int(pad[0]), int(pad[1])


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    precision=None,
    **kwargs,
) -> jax.Array:
    """``jax.lax.conv_general_dilated`` with the weight gradient of ``weight_grad_mode()``."""
    plain_1d = (  # what both of our own forms cover
        lhs.ndim == 3
        and tuple(window_strides) == (1,)
        and tuple(lhs_dilation or (1,)) == (1,)
        and not kwargs.get("preferred_element_type")
        and kwargs.get("out_sharding") is None
        and _is_nwc(dimension_numbers)
    )
    if plain_1d:
        dilation = int((rhs_dilation or (1,))[0])
        pads = _explicit_pads(padding, lhs.shape[1], rhs.shape[0], dilation)
        depthwise = 1 < feature_group_count == lhs.shape[-1] == rhs.shape[-1] and rhs.shape[1] == 1
        if pads is not None and feature_group_count == 1 and weight_grad_mode() == "matmul":
            return conv1d_matmul_grad(lhs, rhs, pads, dilation, precision)
        if pads is not None and depthwise and depthwise_as_taps():
            return depthwise_conv1d(lhs, rhs, pads, dilation)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return jax.lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        precision=precision,
        **kwargs,
    )
