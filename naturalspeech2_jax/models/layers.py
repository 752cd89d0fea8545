"""Small shared building blocks: 1-D/2-D convolutions (plain or weight-normed) with logical axes.

The layout is channels-last everywhere (``[B, T, C]`` for 1-D, ``[B, H, W, C]`` for 2-D), the
layout XLA prefers on CPU/GPU/TPU. Kernels are stored as ``[k, in, out]`` (``[kh, kw, in, out]``)
with logical axes ``("kernel", "conv_in", "channels")`` so the mesh rules in ``parallel.py`` can
shard the output channels over the model axis.

Weight normalisation (``w = g * v / ||v||``, norm over all but the output axis) is what GAN audio
models use to keep generator and discriminator gradients well scaled; ``weight_norm=False`` gives a
plain kernel. Padding is explicit so frame counts are exact: a strided conv with kernel ``2s`` and
stride ``s`` maps ``T`` samples to ``T / s`` frames, and its transposed twin maps them back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from naturalspeech2_jax.models import conv as conv_lib
from naturalspeech2_jax.parallel import ACT_CHANNELS, constrain

KERNEL_AXES_1D = ("kernel", "conv_in", "channels")
KERNEL_AXES_2D = ("kernel", None, "conv_in", "channels")


def fast_key(key: jax.Array) -> jax.Array:
    """An RBG key derived from a (threefry) key, for initialisation only.

    XLA compiles threefry's unrolled rounds once per random tensor: a codec has dozens of kernels
    of distinct shapes, and initialising them with threefry took 30 s of compile time on 2 CPU
    cores; RngBitGenerator compiles in a fraction of that. Values are deterministic for a seed
    (on one platform and sharding), which is all an initialiser needs.
    """
    data = jax.random.key_data(key).reshape(-1)[:2].astype(jnp.uint32)
    return jax.random.wrap_key_data(
        jnp.concatenate([data, data ^ jnp.uint32(0x9E3779B9)]), impl="rbg"
    )


def _kernel_params(
    shape: tuple[int, ...], axes: tuple, weight_norm: bool, rngs: nnx.Rngs
) -> tuple[nnx.Param, nnx.Param | None]:
    """(v, g): the raw kernel and, when weight-normed, the per-output-channel gain g = ||v||."""
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "uniform")
    v = init(fast_key(rngs.params()), shape, jnp.float32)
    kernel = nnx.Param(v, out_sharding=axes)
    if not weight_norm:
        return kernel, None
    # Start with g = ||v|| so the effective kernel equals v at initialisation.
    norm = jnp.sqrt(jnp.sum(v**2, axis=tuple(range(len(shape) - 1))) + 1e-12)
    return kernel, nnx.Param(norm, out_sharding=(axes[-1],))


def _effective_kernel(v: jax.Array, g: jax.Array | None) -> jax.Array:
    if g is None:
        return v
    norm = jnp.sqrt(jnp.sum(v.astype(jnp.float32) ** 2, axis=tuple(range(v.ndim - 1))) + 1e-12)
    return (v * (g / norm).astype(v.dtype)).astype(v.dtype)


class _Conv(nnx.Module):
    """What the convolutions share: parameters ``kernel``, ``gain`` (weight norm) and ``bias``."""

    def _init_params(
        self, shape: tuple[int, ...], axes: tuple, weight_norm: bool, rngs: nnx.Rngs
    ) -> None:
        """Kernel of ``shape`` (output channels last), its gain when weight-normed, zero bias."""
        self.kernel, self.gain = _kernel_params(shape, axes, weight_norm, rngs)
        self.bias = nnx.Param(jnp.zeros((shape[-1],), jnp.float32), out_sharding=("channels",))

    def _conv(self, x: jax.Array, act_axes: tuple, **conv_args) -> jax.Array:
        """``lax.conv_general_dilated(x, kernel, **conv_args)`` + bias, sharded as ``act_axes``."""
        g = self.gain[...] if self.gain is not None else None
        w = _effective_kernel(self.kernel[...], g)
        y = conv_lib.conv_general_dilated(x, w.astype(x.dtype), **conv_args)
        return constrain(y + self.bias[...].astype(y.dtype), act_axes)

    @property
    def dtype(self):
        """The compute dtype: that of the (possibly bf16-cast) kernel. Models cast their inputs
        to it, since a float32 input would promote a bf16 kernel back to float32."""
        return self.kernel[...].dtype


class Conv1d(_Conv):
    """1-D convolution ``[B, T, Cin] -> [B, T', Cout]`` with "same"-style explicit padding.

    ``padding=None`` pads so that ``T' = ceil(T / stride)`` for any kernel, stride and dilation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        padding: tuple[int, int] | None = None,
        weight_norm: bool = True,
        rngs: nnx.Rngs,
    ):
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels}->{out_channels} not divisible by {groups}.")
        self.stride, self.dilation, self.groups = stride, dilation, groups
        if padding is None:
            total = dilation * (kernel_size - 1) + 1 - stride
            total = max(total, 0)
            padding = (total - total // 2, total // 2)
        self.padding = tuple(padding)
        shape = (kernel_size, in_channels // groups, out_channels)
        self._init_params(shape, KERNEL_AXES_1D, weight_norm, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._conv(
            x,
            ACT_CHANNELS,
            window_strides=(self.stride,),
            padding=(self.padding,),
            rhs_dilation=(self.dilation,),
            dimension_numbers=("NWC", "WIO", "NWC"),
            feature_group_count=self.groups,
        )


class ConvTranspose1d(_Conv):
    """Transposed 1-D convolution with kernel ``2 * stride``: ``[B, T, Cin] -> [B, T * s, Cout]``.

    Written as a convolution of the input dilated by ``stride`` (what a transposed conv is), with
    padding ``3s - 2`` split so the output has exactly ``T * stride`` samples.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        *,
        weight_norm: bool = True,
        rngs: nnx.Rngs,
    ):
        self.stride = stride
        self.kernel_size = 2 * stride
        total = 3 * stride - 2
        self.padding = (total - total // 2, total // 2)
        shape = (self.kernel_size, in_channels, out_channels)
        self._init_params(shape, KERNEL_AXES_1D, weight_norm, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._conv(
            x,
            ACT_CHANNELS,
            window_strides=(1,),
            padding=(self.padding,),
            lhs_dilation=(self.stride,),
            dimension_numbers=("NWC", "WIO", "NWC"),
        )


class Conv2d(_Conv):
    """2-D convolution ``[B, H, W, Cin] -> [B, H', W', Cout]`` with "same"-style padding."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        *,
        stride: tuple[int, int] = (1, 1),
        dilation: tuple[int, int] = (1, 1),
        weight_norm: bool = True,
        rngs: nnx.Rngs,
    ):
        self.stride, self.dilation = tuple(stride), tuple(dilation)
        pads = []
        for k, s, d in zip(kernel_size, stride, dilation, strict=True):
            total = max(d * (k - 1) + 1 - s, 0)
            pads.append((total - total // 2, total // 2))
        self.padding = tuple(pads)
        shape = (*kernel_size, in_channels, out_channels)
        self._init_params(shape, KERNEL_AXES_2D, weight_norm, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._conv(
            x,
            ("batch", None, None, "channels"),
            window_strides=self.stride,
            padding=self.padding,
            rhs_dilation=self.dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
