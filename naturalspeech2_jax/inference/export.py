"""Export a trained NS2 model and its codec as ONE folder that inference loads directly.

    from naturalspeech2_jax.inference.export import export_model
    result = export_model("runs/ns2", "pretrained/ns2_tiny", dtype="bfloat16")
    result.total_bytes                    # the whole folder, model.json included
    Synthesizer.from_checkpoint("pretrained/ns2_tiny")     # and every --checkpoint command
    Codec.from_checkpoint("pretrained/ns2_tiny")           # or .../ns2_tiny/codec

Why: a training run is two directories (the NS2 run names its codec run by path) of Orbax
checkpoints that also hold the optimizer moments, the data-iterator position and the RNG. What a
user needs is the weights: the EMA weights when the run kept them (what evaluation used), in
float32 or, halving the bytes, bfloat16, with the configs that build the models, the phoneme
vocabulary and the latent statistics. The folder's layout and loader are in ``exported.py``.

The model is loaded the way inference loads it (``Synthesizer.from_checkpoint``), so what is
exported is exactly what the run synthesises with; an exported folder may itself be exported
again (e.g. to bfloat16), keeping the record of the runs it came from. The folder is written
under a temporary name beside ``out_dir`` and renamed into place at the end: an export that is
killed leaves no folder at ``out_dir`` that could load half-written.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import uuid
from typing import Any

import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from naturalspeech2_jax.data.codes import LATENT_STATS_FILE
from naturalspeech2_jax.inference import exported
from naturalspeech2_jax.inference.synthesizer import Synthesizer
from naturalspeech2_jax.models.ns2 import param_count_groups
from naturalspeech2_jax.train.restore import absolute, checkpoints_dir

# Non-Param variables that only training reads, left out of the folder and restored as zeros
# (recorded as "zeros" in model.json): the codec quantizer's EMA accumulators
# (models/quantizer.py). embed_sum is as large as the codebooks (16 MB at 16 x 1024 x 256, a
# quarter of a small model's folder); encoding and decoding read the codebooks alone.
TRAINING_ONLY = {"codec": ("quantizer/embed_sum", "quantizer/cluster_size")}


class ExportError(ValueError):
    """Export arguments that cannot work (an unknown dtype, an existing --out): one sentence."""


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote."""

    out_dir: str
    dtype: str
    total_bytes: int  # the whole folder, model.json included
    files: dict[str, int]  # path inside the folder -> bytes
    parameters: dict[str, int]  # part ("ns2", "codec") -> number of parameters
    steps: dict[str, int]  # part -> the training step its weights come from

    def summary(self) -> str:
        """One line: the folder, its size, what it holds."""
        parts = ", ".join(
            f"{p} {self.parameters[p] / 1e6:.2f} M parameters (step {self.steps[p]})"
            for p in exported.PARTS
        )
        return f"{self.out_dir}: {self.total_bytes / 1e6:.1f} MB, {self.dtype}; {parts}"


def check_paths(
    ns2_dir: str | os.PathLike, out_dir: str | os.PathLike, dtype: str, overwrite: bool
) -> None:
    """ExportError / FileNotFoundError (one sentence) for arguments that cannot work, before
    anything loads. ``--overwrite`` replaces only an earlier export (or an empty folder): never
    a training run or any other folder by mistake."""
    if dtype not in exported.DTYPES:
        raise ExportError(f"dtype must be one of {', '.join(exported.DTYPES)}, got {dtype!r}.")
    ns2, out = epath.Path(ns2_dir), epath.Path(out_dir)
    if not ns2.is_dir():
        what = "is a file, not a folder" if ns2.exists() else "does not exist"
        raise FileNotFoundError(f"NS2 checkpoint {ns2} {what}; pass the --workdir of an NS2 run "
                                "(launch/train.py --config=configs/diffusion.py).")  # fmt: skip
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportError(f"--out {out} is a file; pass a new folder path.")
    if not overwrite:
        raise ExportError(f"--out {out} already exists; pass --overwrite to replace it, or "
                          "another --out.")  # fmt: skip
    if not exported.is_exported(out) and any(out.iterdir()):
        raise ExportError(f"--out {out} is a folder that is not an exported model, so "
                          "--overwrite will not replace it; pass a new folder path.")  # fmt: skip


def export_model(
    ns2_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    codec_checkpoint: str | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
) -> ExportResult:
    """Write the NS2 run ``ns2_dir`` (latest checkpoint) and its codec (the run it records, or
    ``codec_checkpoint``) as the model folder ``out_dir``; weights in ``dtype`` ("float32" or
    "bfloat16"; codebooks and statistics stay float32). ``overwrite`` replaces an earlier
    export at ``out_dir``."""
    check_paths(ns2_dir, out_dir, dtype, overwrite)
    synth = Synthesizer.from_checkpoint(ns2_dir, codec_checkpoint=codec_checkpoint)
    out = epath.Path(absolute(out_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.export-{uuid.uuid4().hex[:8]}"
    try:
        manifest = _write_folder(synth, ns2_dir, tmp, dtype)
        _replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.rmtree()
    return ExportResult(
        out_dir=str(out), dtype=dtype, total_bytes=manifest["size_bytes"],
        files={k: v["bytes"] for k, v in manifest["files"].items()}
        | {exported.MANIFEST: (out / exported.MANIFEST).stat().length},
        parameters={p: manifest["parts"][p]["parameters"]["total"] for p in exported.PARTS},
        steps={p: manifest["parts"][p]["step"] for p in exported.PARTS},
    )  # fmt: skip


# ------------------------------------------------------------------------------- writing
def _write_folder(synth: Synthesizer, ns2_dir: Any, tmp: epath.Path, dtype: str) -> dict:
    """Every file of the folder into ``tmp``, ``model.json`` last; returns the manifest."""
    codec = synth.codec
    for part in exported.PARTS:
        (tmp / part).mkdir(parents=True)
    files: dict[str, dict[str, Any]] = {}

    def write_json(rel: str, data: Any) -> None:
        (tmp / rel).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        files[rel] = {}

    def write_npz(rel: str, arrays: dict[str, np.ndarray], file_dtype: str = "float32",
                  zeros: tuple[str, ...] = ()) -> None:  # fmt: skip
        exported.write_arrays(tmp / rel, arrays, file_dtype)
        files[rel] = {"dtype": file_dtype} | ({"zeros": list(zeros)} if zeros else {})

    write_json(exported.VOCAB, synth.vocab.to_json())
    parts = {}
    for part, model, config, step, source in (
        ("ns2", synth.model, synth.config, synth.step, ns2_dir),
        ("codec", codec.model, codec.config, codec.step, codec.workdir),
    ):
        _, params, rest = nnx.split(model, nnx.Param, ...)
        write_json(f"{part}/{exported.CONFIG}", config.to_dict())
        weights = exported.flat_arrays(nnx.to_pure_dict(params))
        write_npz(f"{part}/{exported.PARAMS}", weights, dtype)
        rest_arrays = exported.flat_arrays(nnx.to_pure_dict(rest))
        zeros = tuple(k for k in TRAINING_ONLY.get(part, ()) if k in rest_arrays)
        rest_arrays = {k: v for k, v in rest_arrays.items() if k not in zeros}
        if rest_arrays:  # the codec's EMA codebooks: kept float32 whatever the weights' dtype
            write_npz(f"{part}/{exported.REST}", rest_arrays, zeros=zeros)
        count = sum(int(a.size) for a in weights.values())
        parts[part] = {"step": int(step), **_origin(source, part, int(step)),
                       "parameters": {"total": count}}  # fmt: skip
    parts["ns2"]["parameters"] |= param_count_groups(synth.model)
    write_npz(f"ns2/{LATENT_STATS_FILE}", synth.latent_stats)
    if codec.latent_stats is not None:
        write_npz(f"codec/{LATENT_STATS_FILE}", {k: np.asarray(v) for k, v in
                                                 codec.latent_stats.items()})  # fmt: skip
    for rel, record in files.items():
        record |= {"bytes": (tmp / rel).stat().length, "sha256": exported.sha256(tmp / rel)}
    manifest = {
        "format": exported.FORMAT,
        "format_version": exported.FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "dtype": dtype,
        "parts": parts,
        "files": dict(sorted(files.items())),
    }
    text = _with_total_size(manifest, sum(r["bytes"] for r in files.values()))
    (tmp / exported.MANIFEST).write_text(text)
    return manifest


def _origin(source: Any, part: str, step: int) -> dict[str, Any]:
    """Where a part's weights come from: the training run, step and weights (EMA or raw
    parameters); for an exported folder exported again, what that folder recorded."""
    found = exported.locate(source, part)
    if found is not None:
        info = exported.part_info(found)
        return {k: info[k] for k in ("source", "weights") if k in info}
    path = checkpoints_dir(source) / str(step) / "state"
    saved = ocp.PyTreeCheckpointer().metadata(path).item_metadata.tree
    # restore_params ships the EMA weights when the run kept them, as this export did.
    return {"source": str(absolute(source)), "weights": "ema" if saved.get("ema") else "params"}


def _with_total_size(manifest: dict, files_bytes: int) -> str:
    """``model.json``'s text with ``size_bytes`` = the folder's bytes, model.json included (its
    own length depends on the number written, so iterate to the fixed point: 2-3 rounds)."""
    size = files_bytes
    while True:
        manifest["size_bytes"] = size
        text = json.dumps(manifest, indent=1) + "\n"
        if files_bytes + len(text.encode()) == size:
            return text
        size = files_bytes + len(text.encode())


def _replace(tmp: epath.Path, out: epath.Path) -> None:
    """``tmp`` renamed to ``out``; an earlier export at ``out`` is moved aside first and deleted
    after, so ``out`` is at every moment absent, the old model or the new one."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    out.rename(old)
    tmp.rename(out)
    old.rmtree()
