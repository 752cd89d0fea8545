"""Matmul and convolution FLOPs of a traced program, scanned loops counted once per iteration.

XLA's cost analysis (``train/compiled.py``) counts the body of a ``while`` loop once, so for a
step whose layer stacks are scanned (``models/scan.py``) it reports a fraction of the real work:
the NS2 paper step reads 65 TFLOP scanned against 299 TFLOP looped. This counts the FLOPs of
every ``dot_general`` and ``conv_general_dilated`` in the jaxpr instead, descending into every
sub-jaxpr (jit, remat, custom derivatives, ``cond`` branches) and multiplying a ``scan`` body
by its length. Which branch of a ``cond`` runs is not known when tracing: ``branches="min"``
counts the cheapest (a lower bound: the codec step's GAN branch, 118 of its 152 GFLOP, does not
run before ``disc_start``), ``"max"`` the most expensive. The backward pass is in the jaxpr of
a step that calls ``jax.grad``, and so is a rematerialised forward (counted: it is work the chip
does).
Elementwise ops are left out: on the models here they are a few percent of the FLOPs and none
of the peak a chip's FLOP utilisation is quoted against. A ``while`` loop with an unknown trip
count is counted once, like XLA.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax


def _dot_flops(eqn: Any) -> int:
    lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
    contract = math.prod(lhs[d] for d in lhs_contract)
    batch = math.prod(lhs[d] for d in lhs_batch)
    lhs_free = math.prod(s for d, s in enumerate(lhs) if d not in (*lhs_contract, *lhs_batch))
    rhs_free = math.prod(s for d, s in enumerate(rhs) if d not in (*rhs_contract, *rhs_batch))
    return 2 * batch * contract * lhs_free * rhs_free


def _conv_flops(eqn: Any) -> int:
    """2 x output elements x (input features per group x kernel taps)."""
    out = eqn.outvars[0].aval.shape
    rhs = eqn.invars[1].aval.shape
    dn = eqn.params["dimension_numbers"]
    rhs_spec = dn.rhs_spec  # (out feature dim, in feature dim, spatial dims...)
    in_per_group = rhs[rhs_spec[1]]
    taps = math.prod(rhs[d] for d in rhs_spec[2:])
    return 2 * math.prod(out) * in_per_group * taps


def sub_jaxprs(value: Any) -> list[Any]:
    """The jaxprs inside an equation's parameter (a jaxpr, a closed jaxpr, or a list of them)."""
    items = value if isinstance(value, list | tuple) else [value]
    out = []
    for item in items:
        inner = getattr(item, "jaxpr", item)
        if hasattr(inner, "eqns"):
            out.append(inner)
    return out


def jaxpr_flops(jaxpr: Any, branches: str = "min") -> int:
    """Matmul + convolution FLOPs of a (closed) jaxpr; see the module docstring."""
    if branches not in ("min", "max"):
        raise ValueError(f"branches must be 'min' or 'max', got {branches!r}.")
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "cond":
            pick = min if branches == "min" else max
            total += pick((jaxpr_flops(b, branches) for b in eqn.params["branches"]), default=0)
        else:
            inner = sum(
                jaxpr_flops(j, branches) for v in eqn.params.values() for j in sub_jaxprs(v)
            )
            total += inner * (int(eqn.params["length"]) if name == "scan" else 1)
    return total


def traced_flops(fn: Callable[..., Any], *args: Any, branches: str = "min") -> int:
    """Matmul + convolution FLOPs of one call of ``fn(*args)`` (arrays or ShapeDtypeStructs;
    nothing is allocated or compiled)."""
    return jaxpr_flops(jax.make_jaxpr(fn)(*args), branches)
