"""Convolution weight gradients, looped and scanned: XLA's form against one matmul per tap.

A stack of ``--layers`` residual blocks ``x + gelu(conv(x) + b)`` (``[B, T, C]``, kernel ``k``,
dilation ``d``), differentiated with respect to the input, kernels and biases, timed four ways:
looped (a Python loop: one program per layer) or scanned (``lax.scan`` over stacked kernels),
with ``models/conv.py``'s weight gradient ``"xla"`` or ``"matmul"``. Prints one JSON object
(median step seconds, spread, compile seconds, achieved GFLOP/s) and the float32 matmul peak
measured in the same run, so the figures can be read against the machine.

    python -m naturalspeech2_jax.benchmarks.conv_grad                      # NS2 WaveNet-like
    python -m naturalspeech2_jax.benchmarks.conv_grad --time 60 --channels 1024 --kernel 9

Why it exists: on XLA:CPU the ``"xla"`` form inside ``lax.scan`` is lowered to a slow generic
loop (measured 16-33 s against 0.35-0.66 s looped for the default shapes), which is what made
scanned layer stacks slower than looped ones (issue 25). ``--modes auto`` times the default.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp

from naturalspeech2_jax.models import conv as conv_lib


def _block(x, w, b, dilation):
    y = conv_lib.conv_general_dilated(
        x, w, (1,), "SAME", rhs_dilation=(dilation,), dimension_numbers=("NWC", "WIO", "NWC")
    )
    return x + jax.nn.gelu(y + b)


def stack_fn(scanned: bool, dilation: int):
    """``f(x, ws, bs)``: the stack over ``ws`` [L, k, C, C] and ``bs`` [L, C]."""

    def looped(x, ws, bs):
        for i in range(ws.shape[0]):
            x = _block(x, ws[i], bs[i], dilation)
        return x

    def scan(x, ws, bs):
        with conv_lib.scanned():
            return jax.lax.scan(lambda c, p: (_block(c, *p, dilation), None), x, (ws, bs))[0]

    return scan if scanned else looped


def _time(fn, args, steps: int) -> tuple[list[float], float]:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times, compile_s


def matmul_peak(n: int = 2048, steps: int = 10) -> float:
    """Float32 GFLOP/s of an ``n x n`` matmul (best of ``steps``)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    times, _ = _time(jax.jit(lambda a: a @ a), (a,), steps)
    return 2 * n**3 / min(times) / 1e9


def measure(args: argparse.Namespace) -> dict[str, Any]:
    shape = (args.batch, args.time, args.channels)
    x = jax.random.normal(jax.random.key(0), shape, jnp.float32)
    ws = 0.03 * jax.random.normal(
        jax.random.key(1), (args.layers, args.kernel, args.channels, args.channels), jnp.float32
    )
    bs = jnp.zeros((args.layers, args.channels), jnp.float32)
    # Forward + input and weight gradients: 3 matmul-equivalents of the forward's FLOPs.
    flops = 3 * 2 * args.batch * args.time * args.channels**2 * args.kernel * args.layers
    out: dict[str, Any] = {"shape": list(shape), "kernel": args.kernel, "layers": args.layers}
    out["dilation"] = args.dilation
    out["platform"] = jax.default_backend()
    for mode in args.modes.split(","):
        conv_lib.set_weight_grad(mode)
        for layout in ("looped", "scanned"):
            f = stack_fn(layout == "scanned", args.dilation)
            loss = lambda x, ws, bs, f=f: jnp.sum(f(x, ws, bs) ** 2)  # noqa: E731
            grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
            times, compile_s = _time(grad, (x, ws, bs), args.steps)
            med = statistics.median(times)
            out[f"{layout}/{mode}"] = {
                "step_s": round(med, 6),
                "min_s": round(min(times), 6),
                "max_s": round(max(times), 6),
                "compile_s": round(compile_s, 2),
                "gflops_per_s": round(flops / med / 1e9, 3),
            }
            print(layout, mode, out[f"{layout}/{mode}"], flush=True)
    conv_lib.set_weight_grad("auto")
    out["matmul_peak_gflops_per_s"] = round(matmul_peak(), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--time", type=int, default=400)
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--kernel", type=int, default=3)
    p.add_argument("--dilation", type=int, default=1)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    p.add_argument("--modes", default="matmul,xla", help="weight-gradient modes to compare")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    result = measure(args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
