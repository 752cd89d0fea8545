"""Layer stacks, scanned or looped, and the checkpoint layouts of both.

A deep stack is a repeated *block* (one Transformer layer; a predictor's convs and the attention
after them; a WaveNet super-block of lcm(dilation cycle, FiLM period) layers and its FiLM blocks).
With ``scan=True`` the blocks are one module whose variables carry a leading "layers" axis
(created by ``nnx.vmap``, so initialisation compiles once too) and ``run`` applies them with
``jax.lax.scan``: XLA compiles the block once, whatever the depth. With ``scan=False`` the stack
keeps the layout it always had (one module per layer, ``layers/0``, ``layers/1``, ...) and
``run`` loops over the same blocks in Python. Both go through the same block body, the same
per-block dropout keys and the same rematerialisation, so they compute the same function.

Remat (``jax.checkpoint`` around each block): ``"none"`` keeps every activation for the backward
pass, ``"dots_saveable"`` keeps matmul/conv outputs and recomputes the element-wise rest,
``"full"`` keeps only the block inputs and recomputes the whole block.

Checkpoints: a module with a stack describes its two layouts by ``layout()`` entries
``(stacked_prefix, unrolled_prefixes)`` (a list: the subtrees stacked along axis 0; a single path:
the same subtree, moved). ``to_stacked`` / ``to_unrolled`` convert a nested parameter dict (e.g.
``nnx.to_pure_dict``, or a checkpoint's tree) between them; ``checkpoint_layouts`` gives
``train/restore.py`` the conversion that loads a checkpoint written in the other layout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from naturalspeech2_jax.models import conv as conv_lib

REMAT_POLICIES = ("none", "dots_saveable", "full")
STACK_AXIS = "layers"  # logical name of the leading axis of stacked variables (parallel.py)

Path = tuple[Any, ...]
Entry = tuple[Path, "Path | list[Path]"]


def check_remat(policy: str) -> str:
    if policy not in REMAT_POLICIES:
        raise ValueError(f"remat={policy!r} is not a remat policy; use one of {REMAT_POLICIES}.")
    return policy


def _checkpoint(fn: Callable, policy: str, *, in_scan: bool) -> Callable:
    if policy == "none":
        return fn
    saveable = jax.checkpoint_policies.dots_saveable if policy == "dots_saveable" else None
    # Inside scan the loop already stops XLA from merging the recomputation with the forward pass.
    return jax.checkpoint(fn, policy=saveable, prevent_cse=not in_scan)


def stack(make: Callable[[nnx.Rngs], nnx.Module], n: int, rngs: nnx.Rngs) -> nnx.Module:
    """``n`` independently initialised ``make(rngs)`` as one module with a leading axis ``n``."""

    @nnx.split_rngs(splits=n)
    @nnx.vmap(
        in_axes=0, out_axes=0, axis_size=n, transform_metadata={nnx.PARTITION_NAME: STACK_AXIS}
    )
    def create(r: nnx.Rngs) -> nnx.Module:
        return make(r)

    return create(rngs)


def stack_size(stacked: nnx.Module) -> int:
    """The leading-axis size of a module made by ``stack``."""
    return int(jax.tree.leaves(nnx.state(stacked))[0].shape[0])


def dropout_keys(rngs: nnx.Rngs | None, n: int) -> jax.Array | None:
    """One dropout key per block, drawn once from ``rngs`` (None: deterministic)."""
    return None if rngs is None else jax.random.split(rngs.dropout(), n)


def run(
    body: Callable[[Any, Any, Any, nnx.Rngs | None], tuple[Any, Any]],
    carry: Any,
    blocks: nnx.Module | Sequence[nnx.Module],
    xs: Any = None,
    *,
    rngs: nnx.Rngs | None = None,
    remat: str = "none",
) -> tuple[Any, Any]:
    """``body(block, carry, x, rngs) -> (carry, y)`` over the blocks: (final carry, ys).

    ``blocks``: a module made by ``stack`` (scanned; ``xs`` and ``ys`` stacked along axis 0) or a
    sequence of block modules, e.g. an ``nnx.List`` (looped; ``xs`` and ``ys`` lists, one entry
    per block). Each block
    gets its own dropout stream (``rngs`` given) and is rematerialised per ``remat``.
    """
    scanned = not isinstance(blocks, Sequence)  # an nnx.List or a list: looped
    n = stack_size(blocks) if scanned else len(blocks)
    keys = dropout_keys(rngs, n)

    def step(graphdef, state, carry, x, key):
        r = None if key is None else nnx.Rngs(dropout=key)
        return body(nnx.merge(graphdef, state), carry, x, r)

    if scanned:
        graphdef, state = nnx.split(blocks)
        f = _checkpoint(functools.partial(step, graphdef), remat, in_scan=True)
        with conv_lib.scanned():  # the body is traced here: its convolutions know they are scanned
            return jax.lax.scan(lambda c, a: f(a[0], c, a[1], a[2]), carry, (state, xs, keys))
    ys = []
    for i, block in enumerate(blocks):
        graphdef, state = nnx.split(block)
        f = _checkpoint(functools.partial(step, graphdef), remat, in_scan=False)
        carry, y = f(state, carry, None if xs is None else xs[i], None if keys is None else keys[i])
        ys.append(y)
    return carry, ys


def zip_xs(*xs: Any) -> Any:
    """Several per-block inputs of ``run`` as one: per-block tuples when they are lists (looped),
    else a tuple of the stacked trees (scanned)."""
    if all(isinstance(x, list) for x in xs):
        return [tuple(t) for t in zip(*xs, strict=True)]
    return tuple(xs)


# ------------------------------------------------------------------------------- checkpoints
def _match(node: Any, k: Any) -> Any:
    """The key of ``node`` equal to ``k`` as a string (checkpoints name list items "0"), or None."""
    if not isinstance(node, dict):
        return None
    return next((key for key in node if str(key) == str(k)), None)


def _pop(tree: dict, path: Path) -> Any:
    """Remove and return the subtree at ``path`` (None if absent); drop emptied parents."""
    nodes = [tree]
    for k in path[:-1]:
        key = _match(nodes[-1], k)
        if key is None:
            return None
        nodes.append(nodes[-1][key])
    key = _match(nodes[-1], path[-1])
    if key is None:
        return None
    out = nodes[-1].pop(key)
    for depth in range(len(path) - 1, 0, -1):
        if nodes[depth]:
            break
        nodes[depth - 1].pop(_match(nodes[depth - 1], path[depth - 1]))
    return out


def _put(tree: dict, path: Path, value: Any) -> None:
    for k in path[:-1]:
        key = _match(tree, k)
        tree = tree[key] if key is not None else tree.setdefault(k, {})
    tree[path[-1]] = value


def _copy(tree: Any) -> Any:
    return {k: _copy(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


def _stack_leaves(*leaves: Any) -> Any:
    first = leaves[0]
    if isinstance(first, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct((len(leaves), *first.shape), first.dtype)
    if isinstance(first, np.ndarray):
        return np.stack(leaves)
    return jnp.stack(leaves)


def _unstack_leaf(leaf: Any, n: int) -> list[Any]:
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return [jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype) for _ in range(n)]
    return [leaf[i] for i in range(n)]


def to_stacked(tree: dict, entries: Sequence[Entry]) -> dict:
    """The nested dict ``tree`` (unrolled layout) in the stacked layout of ``entries``.

    Subtrees absent from ``tree`` are skipped, so a tree already stacked comes back unchanged.
    """
    out = _copy(tree)
    for new, old in entries:
        if isinstance(old, list):
            parts = [_pop(out, p) for p in old]
            if any(p is None for p in parts):
                continue
            _put(out, new, jax.tree.map(_stack_leaves, *parts))
        else:
            part = _pop(out, old)
            if part is not None:
                _put(out, new, part)
    return out


def to_unrolled(tree: dict, entries: Sequence[Entry]) -> dict:
    """``tree`` (stacked layout) in the unrolled layout: ``to_stacked``'s inverse."""
    out = _copy(tree)
    for new, old in entries:
        part = _pop(out, new)
        if part is None:
            continue
        if isinstance(old, list):
            leaves, treedef = jax.tree.flatten(part)
            split = [_unstack_leaf(x, len(old)) for x in leaves]
            for i, path in enumerate(old):
                _put(out, path, jax.tree.unflatten(treedef, [s[i] for s in split]))
        else:
            _put(out, old, part)
    return out


def model_layout(model: nnx.Module) -> list[Entry]:
    """Every stack's ``layout()`` entries in ``model``, as paths from the model's root."""
    entries: list[Entry] = []
    for path, module in nnx.iter_modules(model):
        layout = getattr(type(module), "layout", None)
        if layout is None:
            continue
        prefix = tuple(path)
        for new, old in module.layout():
            where = [(*prefix, *p) for p in old] if isinstance(old, list) else (*prefix, *old)
            entries.append(((*prefix, *new), where))
    return entries


def is_scanned(model: nnx.Module) -> bool:
    """Whether the stacks of ``model`` are scanned (stacked layout)."""
    return any(
        getattr(m, "scan", False) for _, m in nnx.iter_modules(model) if hasattr(m, "layout")
    )


def checkpoint_layouts(model: nnx.Module) -> list[tuple[Callable, Callable]]:
    """``(to_saved, from_saved)`` for a checkpoint in the other layout than ``model``'s: what
    ``train/restore.py`` tries when the model's own paths are missing from a checkpoint."""
    entries = model_layout(model)
    if not entries:
        return []
    stacked = functools.partial(to_stacked, entries=entries)
    unrolled = functools.partial(to_unrolled, entries=entries)
    return [(unrolled, stacked)] if is_scanned(model) else [(stacked, unrolled)]
