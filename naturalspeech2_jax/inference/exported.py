"""The exported model folder: its layout, and loading it back without Orbax.

``launch/export.py`` (``inference/export.py``) writes a trained NS2 model and its codec as ONE
folder that ``Synthesizer.from_checkpoint`` and ``Codec.from_checkpoint`` (so every command that
takes ``--checkpoint``) load directly::

    NAME/model.json            format + version, the runs and steps exported, dtype, sha256 and
                               bytes of every file, parameter counts, the folder's total bytes
    NAME/vocab.json            the phoneme vocabulary (``PhonemeVocab.save`` format)
    NAME/ns2/config.json       the NS2 run's config (builds the model the weights fit)
    NAME/ns2/params.npz        its nnx.Param leaves (EMA weights when the run kept them)
    NAME/ns2/latent_stats.npz  the latent mean/std the NS2 model was trained with
    NAME/codec/config.json     the codec run's config
    NAME/codec/params.npz      the codec generator's nnx.Param leaves
    NAME/codec/rest.npz        its non-Param variables (the EMA codebooks), always float32;
                               training-only ones left out are listed as "zeros" in model.json
    NAME/codec/latent_stats.npz  the codec run's latent statistics, when it had them

Why not the run directories: a training checkpoint also holds the optimizer moments (twice the
weights for Adam), the data-iterator position and RNG, spread over Orbax's per-array files and
two runs; a shipped model needs the weights alone, in one place, readable with numpy.

Arrays are ``.npz`` files (numpy alone, no safetensors) of flat ``"a/b/0/c"`` keys, the paths of
the variables in the model that the folder's ``config.json`` builds. bfloat16 weights are stored
as their uint16 bits (``np.savez`` does not round-trip ml_dtypes' bfloat16) and the file's dtype
is recorded in ``model.json``; loading casts every weight back to the model's parameter dtype
(float32), so inference runs the same code whatever the export dtype. Every array file is
checked against its sha256 before it is read: a truncated copy fails with one sentence, never
with wrong weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import ml_dtypes
import numpy as np
from etils import epath
from flax import nnx

from naturalspeech2_jax.data.codes import LATENT_STATS_FILE

FORMAT = "naturalspeech2_jax.model"
FORMAT_VERSION = 1
MANIFEST = "model.json"
VOCAB = "vocab.json"
CONFIG = "config.json"
PARAMS = "params.npz"
REST = "rest.npz"
PARTS = ("ns2", "codec")
DTYPES = ("float32", "bfloat16")
_REEXPORT = "re-export it with python launch/export.py --checkpoint NS2_RUN --out FOLDER"


class ExportedModelError(FileNotFoundError):
    """An exported model folder that is incomplete, corrupted or of another format version."""


# ------------------------------------------------------------------------------- the folder
def is_exported(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an exported model folder (it holds ``model.json``)."""
    return (epath.Path(path) / MANIFEST).exists()


def locate(path: str | os.PathLike, part: str) -> epath.Path | None:
    """The ``part`` folder ("ns2" or "codec") when ``path`` is an exported model folder or one
    of its part folders; None when it is neither (a training run: the caller restores it)."""
    path = epath.Path(path)
    if is_exported(path):
        root = path
    elif path.name in PARTS and is_exported(path.parent):
        root = path.parent
    else:
        return None
    manifest = read_manifest(root)
    if path != root and path.name != part:
        raise ExportedModelError(
            f"{path} is the {path.name} part of the exported model {root}, not its {part}; pass "
            f"{root} (or {root / part})."
        )
    if part not in manifest.get("parts", {}):
        raise ExportedModelError(f"{root / MANIFEST} lists no {part} part; {_REEXPORT}.")
    return root / part


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """``<root>/model.json``, checked: ExportedModelError (one sentence) for another format or
    a format version this code cannot read."""
    path = epath.Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:  # missing, unreadable or not JSON
        raise ExportedModelError(f"cannot read {path} ({e}), so {root} is no usable exported "
                                 f"model; {_REEXPORT}.") from None  # fmt: skip
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ExportedModelError(f"{path} is not an exported naturalspeech2_jax model (format "
                                 f"{FORMAT!r} expected); {_REEXPORT}.")  # fmt: skip
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ExportedModelError(
            f"{path} has format version {version!r} but this code reads version {FORMAT_VERSION}; "
            "use the naturalspeech2_jax version that exported it, or re-export the model."
        )
    return manifest


def part_info(part_dir: epath.Path) -> dict[str, Any]:
    """What ``model.json`` records of one part: source run, step, weights, dtype, counts."""
    return read_manifest(part_dir.parent)["parts"][part_dir.name]


def sha256(path: epath.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_file(path: epath.Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``model.json`` record of a file of a part (bytes, sha256, dtype) once the file is
    there and matches its sha256; ExportedModelError (one sentence) otherwise."""
    root = path.parent.parent
    rel = str(path.relative_to(root))
    record = manifest.get("files", {}).get(rel)
    if not path.exists():
        raise ExportedModelError(f"{path} is missing from the exported model {root}; copy the "
                                 f"whole folder again or {_REEXPORT}.")  # fmt: skip
    if record is None:
        raise ExportedModelError(f"{root / MANIFEST} does not list {rel}; {_REEXPORT}.")
    if sha256(path) != record["sha256"]:
        raise ExportedModelError(
            f"{path} does not match its sha256 in {root / MANIFEST} (corrupted or truncated); "
            f"copy the folder again or {_REEXPORT}."
        )
    return record


def read_latent_stats(part_dir: epath.Path) -> dict[str, np.ndarray] | None:
    """A part's ``latent_stats.npz`` ({"mean": [D], "std": [D][, "frames": n]}), checked; None
    when the part has none (a codec run exported before its statistics were computed)."""
    path = part_dir / LATENT_STATS_FILE
    manifest = read_manifest(part_dir.parent)
    if not path.exists() and str(path.relative_to(part_dir.parent)) not in manifest["files"]:
        return None
    check_file(path, manifest)
    with path.open("rb") as f, np.load(f, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


# ------------------------------------------------------------------------------- arrays
def _name(path: tuple) -> str:
    """A tree path as a flat key: ``("layers", 0, "w")`` -> ``"layers/0/w"``."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def flat_arrays(tree: Any) -> dict[str, np.ndarray]:
    """The leaves of a pure dict (``nnx.to_pure_dict``) as numpy arrays under flat keys."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_name(p): np.asarray(jax.device_get(leaf)) for p, leaf in leaves}


def write_arrays(path: epath.Path, arrays: dict[str, np.ndarray], dtype: str) -> None:
    """``arrays`` as an ``.npz``; with ``dtype="bfloat16"`` floating arrays are stored as the
    uint16 bits of their bfloat16 values (integers unchanged)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    out = {}
    for key, a in arrays.items():
        if dtype == "bfloat16" and np.issubdtype(a.dtype, np.floating):
            a = a.astype(ml_dtypes.bfloat16).view(np.uint16)
        out[key] = a
    with path.open("wb") as f:
        np.savez(f, **out)


def read_arrays(path: epath.Path, target: Any, manifest: dict[str, Any]) -> Any:
    """The ``.npz`` at ``path`` as a tree shaped like ``target`` (a pure dict of arrays or
    ShapeDtypeStructs), each leaf cast to the target's dtype. ExportedModelError (one sentence
    naming the file and the fix) for a missing or corrupted file or weights that do not fit."""
    record = check_file(path, manifest)
    bf16 = record.get("dtype") == "bfloat16"
    zeros = set(record.get("zeros", ()))  # training-only variables the export left out
    try:
        with path.open("rb") as f, np.load(f, allow_pickle=False) as data:
            stored = {k: data[k] for k in data.files}
    except Exception as e:  # a zip or npy error of a file that passed its checksum: a bad export
        raise ExportedModelError(f"cannot read {path} ({e}); {_REEXPORT}.") from None

    def leaf(p: tuple, want: Any) -> jax.Array:
        key = _name(p)
        if key not in stored and key not in zeros:
            raise ExportedModelError(f"{path} has no {key}, which the model built from "
                                     f"{path.parent / CONFIG} needs; {_REEXPORT}.")  # fmt: skip
        a = stored.pop(key) if key not in zeros else np.zeros(want.shape, want.dtype)
        if tuple(a.shape) != tuple(want.shape):
            raise ExportedModelError(
                f"{key} has shape {tuple(a.shape)} in {path} but {tuple(want.shape)} in the model "
                f"built from {path.parent / CONFIG}; {_REEXPORT}."
            )
        if bf16 and a.dtype == np.uint16 and np.issubdtype(want.dtype, np.floating):
            a = a.view(ml_dtypes.bfloat16)
        return jax.device_put(a.astype(want.dtype), jax.local_devices()[0])

    tree = jax.tree_util.tree_map_with_path(leaf, target)
    if stored:
        raise ExportedModelError(
            f"{path} holds {len(stored)} arrays the model built from {path.parent / CONFIG} does "
            f"not have (e.g. {sorted(stored)[0]}); {_REEXPORT}."
        )
    return tree


def load_weights(part_dir: epath.Path, model: nnx.Module) -> nnx.Module:
    """``model`` (may be abstract: ``nnx.eval_shape``) with the weights of an exported part:
    ``params.npz`` into its nnx.Param variables, ``rest.npz`` into the others."""
    manifest = read_manifest(part_dir.parent)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    for state, name in ((params, PARAMS), (rest, REST)):
        pure = nnx.to_pure_dict(state)
        if jax.tree_util.tree_leaves(pure):
            nnx.replace_by_pure_dict(state, read_arrays(part_dir / name, pure, manifest))
    return nnx.merge(graphdef, params, rest)
