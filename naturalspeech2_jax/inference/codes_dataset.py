"""A prepared dataset encoded by a trained codec: the codes dataset NS2 trains on.

``encode_dataset(codec_workdir, DATA/<name>/1.0.0, OUT)`` writes a sibling TFDS dataset at ``OUT``
(the version dir, e.g. ``DATA/<name>_codes/1.0.0``) holding every original feature plus ``codes``
int32 [n_frames, 16], checked against the durations and pitch frame counts; beside the records:
``codec.json`` (the codec run, its step and config), ``latent_stats.npz`` (over the train splits),
``frames_<split>.npy`` and the source's ``vocab.json``, ``speakers.json`` and ``card.json``, so
``data.pipeline.open_split(OUT, split)`` reads it like the original. ``launch/codec.py
encode-dataset`` and ``stats`` call these functions.

How it encodes: the codec is replicated on a 1-D data mesh of this process's devices (all local
devices, or the first ``devices``); utterances are read a window at a time, grouped by their
length padded to ``bucket_frames`` (what ``Codec.encode`` pads one utterance to, so the codes of
every utterance are the ones ``Codec.encode`` gives it alone) and encoded ``batch_size`` per
device in one jitted program per (bucket, rows) shape, the rows split over the devices. The
records keep the source's order (TFDS's order by hashed id), written window after window.

Several hosts: started under ``jax.distributed`` (``launch/codec.py encode-dataset
--distributed``), process p of P encodes the p-th of P contiguous blocks of each split's examples
with its own devices and writes them as its own shard files (shards p*K .. p*K+K-1 of P*K) into
OUT, a shared filesystem every host writes (NFS, a gcsfuse mount), so the records keep the
source's order on any number of hosts; once all are done, the main process writes what describes
them (``dataset_info.json``, ``features.json``, ``frames_<split>.npy`` in record order, the merged
``latent_stats.npz``, ``codec.json``, the sidecars). A folder with ``dataset_info.json`` is a
complete dataset: a rerun into it is refused; a folder that an interrupted run left without one
is cleaned and written again.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from naturalspeech2_jax import SAMPLE_RATE, parallel
from naturalspeech2_jax.data import pipeline
from naturalspeech2_jax.data.codes import CODEC_FILE
from naturalspeech2_jax.inference.codec import (
    Codec,
    LatentMoments,
    latent_statistics,
    load_latent_stats,
    save_latent_stats,
)

log = logging.getLogger(__name__)

# Files of a prepared dataset that describe it beyond its records (copied by encode_dataset).
SIDECARS = ("vocab.json", "speakers.json", "card.json", "card.md", "rejected.tsv")
HELD_OUT_SPLITS = {"dev", "heldout", "validation", "test"}  # not in the latent statistics
BATCH_SIZE = 8  # utterances per device in one encoder call (the default of --batch_size)
# Utterances read, encoded and written together: the larger, the fewer part-filled batches (one
# per bucket and window), the more host memory (~200 KB per utterance, three windows in flight).
WINDOW_BATCHES, MIN_WINDOW = 32, 2048
SHARD_BYTES = 1 << 30  # records per shard file: at most ~1 GiB, TFDS's own upper bound
CODES_GROWTH = 1.2  # bytes of an encoded split / bytes of its source (codes: 64 B per frame)
PARTS = "_encode_parts"  # what each process tells the main one: shard lengths, frames, moments


def dataset_info(dataset_dir: str | epath.Path) -> tuple[str, list[str]]:
    """(name, split names) of a prepared dataset; one clear sentence when it is not one."""
    builder = _builder(dataset_dir)
    return builder.info.name, list(builder.info.splits.keys())


def _builder(dataset_dir: str | epath.Path):
    # TFDS takes seconds to import: only the commands that read dataset metadata pay for it.
    import tensorflow_datasets as tfds

    if not (epath.Path(dataset_dir) / "dataset_info.json").exists():
        raise FileNotFoundError(
            f"{dataset_dir} is not a prepared dataset (no dataset_info.json); pass "
            "DATA/<name>/<version> written by launch/prepare_data.py."
        )
    return tfds.builder_from_directory(str(dataset_dir))


def compute_latent_stats(
    codec: Codec,
    dataset_dir: str | epath.Path,
    split: str = "train",
    max_examples: int | None = None,
) -> dict[str, np.ndarray]:
    """Per-channel mean/std of z over (up to ``max_examples``) utterances of split(s)."""
    source = pipeline.open_splits(str(dataset_dir), split)
    n = len(source) if max_examples is None else min(max_examples, len(source))
    idx = pipeline.spread_indices(len(source), n)
    wavs = (np.asarray(source[i]["audio"], np.float32) / 32768.0 for i in idx)
    return latent_statistics(codec.model, wavs)


def encode_utterance(codec: Codec, audio_int16: np.ndarray) -> np.ndarray:
    """Codes int32 [n_frames, 16] of one prepared utterance (int16 audio, 200 * n_frames)."""
    return codec.encode(np.asarray(audio_int16, np.float32) / 32768.0).astype(np.int32)


# ---------------------------------------------------------------------- batched encoding
def _encode_rows(
    graphdef: nnx.GraphDef, state: nnx.State, wav: jax.Array, frames: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Pure: int16 waveforms [B, T * hop] holding ``frames`` [B] real frames each -> (codes int32
    [B, T, Q], per-row sums of z and z**2 over the real frames [B, D]) with z = latent(codes).

    Each row is encoded as ``Codec.encode`` encodes it alone (same padded length, same program
    per row). The sums feed the latent statistics without bringing z [B, T, D] to the host.
    """
    model = nnx.merge(graphdef, state)
    # x / 32768 is exact in float32, so converting here gives Codec.encode's input bit for bit
    # with half the bytes sent to the devices.
    codes = model.encode(wav.astype(jnp.float32) / 32768.0)
    z = model.latent(codes).astype(jnp.float32)
    real = jnp.arange(codes.shape[1])[None, :, None] < frames[:, None, None]
    z = jnp.where(real, z, 0.0)
    return codes.astype(jnp.int32), z.sum(1), (z * z).sum(1)


Encoded = tuple[np.ndarray, np.ndarray, np.ndarray]  # codes [n, Q], sum of z, sum of z**2 [D]

# One compiled program per (model, shapes, shardings): the graphdef is static.
_encode_rows_jit = jax.jit(_encode_rows, static_argnums=0)


def plan_batches(
    padded: Sequence[int], devices: int, per_device: int
) -> list[tuple[np.ndarray, int, int]]:
    """(indices, padded frames, rows) of every batch over utterances of ``padded`` lengths.

    A batch holds utterances of one padded length (sorted by it, ties in index order), at most
    ``devices * per_device`` of them; its rows are ``devices`` times the smallest power of two
    (at most ``per_device``) that holds them, so a part-filled batch wastes less than half its
    rows and each bucket compiles at most 1 + log2(per_device) shapes.
    """
    padded = np.asarray(padded, np.int64)
    order = np.argsort(padded, kind="stable")
    batches = []
    for length in np.unique(padded):
        idx = order[padded[order] == length]
        for start in range(0, len(idx), devices * per_device):
            chunk = idx[start : start + devices * per_device]
            per = min(per_device, 1 << (-(-len(chunk) // devices) - 1).bit_length())
            batches.append((chunk, int(length), devices * per))
    return batches


def local_devices(devices: int | None = None) -> list[jax.Device]:
    """This process's first ``devices`` devices (default all); one sentence when out of range."""
    local = jax.local_devices()
    n = len(local) if devices is None else int(devices)
    if not 1 <= n <= len(local):
        raise ValueError(f"--devices must be in 1..{len(local)} (this process's devices); got {n}.")
    return local[:n]


class BatchEncoder:
    """A codec replicated on a 1-D data mesh of this process's first ``devices`` devices (default
    all) that encodes utterances in batches of equal padded length, rows split over the mesh."""

    def __init__(self, codec: Codec, *, batch_size: int = BATCH_SIZE, devices: int | None = None):
        chosen = local_devices(devices)
        if batch_size < 1:
            raise ValueError(f"--batch_size must be an integer >= 1, got {batch_size}.")
        self.codec, self.devices, self.batch_size = codec, len(chosen), int(batch_size)
        self.mesh = parallel.make_mesh({"data": -1}, chosen)
        self._rows = (parallel.batch_sharding(self.mesh, 2), parallel.batch_sharding(self.mesh, 1))
        self.graphdef, state = nnx.split(codec.model)
        self.state = jax.device_put(state, parallel.replicated(self.mesh))

    def encode(self, audio: Sequence[np.ndarray]) -> list[Encoded]:
        """(codes int32 [n, Q], sum of z [D], sum of z**2 [D]) of each int16 waveform of 200 * n
        samples. The next batch is sent while the last one computes."""
        hop = self.codec.hop
        frames = [len(a) // hop for a in audio]
        # At least one bucket: an empty utterance still gets a (cut to nothing) row.
        padded = [max(self.codec.padded_frames(n), self.codec.padded_frames(1)) for n in frames]
        results: list[Any] = [None] * len(audio)
        pending = None
        for batch in [*plan_batches(padded, self.devices, self.batch_size), None]:
            launched = self._launch(audio, frames, batch) if batch is not None else None
            if pending is not None:
                idx, outputs = pending
                codes, total, squares = (np.asarray(x) for x in outputs)
                for row, j in enumerate(idx):
                    results[j] = (codes[row, : frames[j]], total[row], squares[row])
            pending = launched
        return results

    def _launch(self, audio, frames, batch) -> tuple[np.ndarray, Any]:
        idx, length, rows = batch
        wav = np.zeros((rows, length * self.codec.hop), np.int16)
        real = np.zeros(rows, np.int32)
        for row, j in enumerate(idx):
            wav[row, : len(audio[j])] = audio[j]
            real[row] = frames[j]
        wav_sharding, frames_sharding = self._rows
        outputs = _encode_rows_jit(
            self.graphdef,
            self.state,
            jax.device_put(wav, wav_sharding),
            jax.device_put(real, frames_sharding),
        )
        return idx, outputs


# ---------------------------------------------------------------------- the dataset
def encode_dataset(
    codec_workdir: str | epath.Path,
    dataset_dir: str | epath.Path,
    out_dir: str | epath.Path,
    *,
    splits: Sequence[str] | None = None,
    stats_splits: Sequence[str] | None = None,
    bucket_frames: int = 50,
    codec: Codec | None = None,
    batch_size: int = BATCH_SIZE,
    devices: int | None = None,
    window: int | None = None,
) -> epath.Path:
    """Write ``out_dir`` (a version dir, e.g. DATA/x_codes/1.0.0): the dataset plus ``codes``.

    Every feature of every example is kept, in the source's record order; ``codes`` int32
    [n_frames, num_quantizers] is added and checked against the audio, durations and ``log_f0``
    frame counts. The latent statistics of ``stats_splits`` (default: every split except
    dev/heldout/validation/test) are written as ``latent_stats.npz`` in ``out_dir`` (and in the
    codec workdir when it has none).

    ``batch_size``: utterances per device per encoder call; ``devices``: how many of this
    process's devices encode (default all); ``window``: utterances read and encoded together
    (default max(2048, 32 global batches)). Under ``jax.distributed`` every process calls this
    with the same arguments and encodes its share (module docstring); all return ``out_dir``
    once the dataset is complete.
    """
    from naturalspeech2_jax.data import shards  # TFDS: slow to import
    from naturalspeech2_jax.data.tfds_builder import features

    dataset_dir, out_dir = epath.Path(dataset_dir), epath.Path(out_dir)
    name, all_splits = _check_destination(dataset_dir, out_dir)
    splits = _check_splits(splits, all_splits, dataset_dir)
    if bucket_frames < 1:
        raise ValueError(f"--bucket_frames must be an integer >= 1, got {bucket_frames}.")
    if window is not None and window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window}.")
    if batch_size < 1:
        raise ValueError(f"--batch_size must be an integer >= 1, got {batch_size}.")
    local_devices(devices)  # fails before the codec loads
    codec = codec or Codec.from_checkpoint(codec_workdir)
    codec.bucket_frames = bucket_frames
    encoder = BatchEncoder(codec, batch_size=batch_size, devices=devices)
    window = window or max(MIN_WINDOW, WINDOW_BATCHES * encoder.devices * encoder.batch_size)
    stats_splits = set(stats_splits or [s for s in splits if s not in HELD_OUT_SPLITS] or splits)
    process, processes = jax.process_index(), jax.process_count()
    split_bytes = {s: int(v.num_bytes) for s, v in _builder(dataset_dir).info.splits.items()}

    if parallel.is_main_process():  # what an interrupted run left (it has no dataset_info.json)
        shards.remove_shards(out_dir, out_dir.parent.name)
        if (out_dir / PARTS).exists():
            (out_dir / PARTS).rmtree()
        (out_dir / PARTS).mkdir(parents=True, exist_ok=True)
    _barrier("encode_dataset: destination ready")
    feats = features(codec.num_quantizers)
    for split in splits:
        per_process = max(1, math.ceil(split_bytes[split] * CODES_GROWTH / processes / SHARD_BYTES))
        _encode_split(
            encoder, feats, dataset_dir, out_dir, split,
            shard_count=per_process, with_stats=split in stats_splits, window=window,
        )  # fmt: skip
    _barrier("encode_dataset: every shard written")
    if parallel.is_main_process():
        _finish(codec, codec_workdir, dataset_dir, out_dir, splits, stats_splits, feats, name)
    _barrier("encode_dataset: metadata written")
    log.info(
        "process %d/%d: encoded %s -> %s (%s)",
        process, processes, dataset_dir, out_dir, ", ".join(splits),
    )  # fmt: skip
    return out_dir


def _barrier(name: str) -> None:
    """Wait for every process (a no-op in a single-process run)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _check_destination(dataset_dir: epath.Path, out_dir: epath.Path) -> tuple[str, list[str]]:
    """(name, splits) of the source; the destination must be a new version dir."""
    from naturalspeech2_jax.data.shards import check_name
    from naturalspeech2_jax.data.tfds_builder import VERSION  # TFDS: slow to import

    info = dataset_info(dataset_dir)
    if out_dir.name != VERSION:
        raise ValueError(f"out_dir must be a version dir ending in /{VERSION}; got {out_dir}.")
    check_name(out_dir.parent.name, out_dir)
    if (out_dir / "dataset_info.json").exists():
        raise FileExistsError(f"{out_dir} already holds a dataset; remove it or pick another OUT.")
    return info


def _check_splits(
    splits: Sequence[str] | None, all_splits: list[str], dataset_dir: epath.Path
) -> list[str]:
    unknown = [s for s in splits or () if s not in all_splits]
    if unknown:
        raise ValueError(
            f"{dataset_dir} has no split {unknown[0]!r}; pick --splits from "
            f"{', '.join(all_splits)}."
        )
    return list(splits or all_splits)


def _read_examples(source: Any, indices: np.ndarray, where: str) -> list[dict[str, Any]]:
    """Examples ``indices`` of ``source`` (text decoded), each checked against the invariants."""
    out = []
    for i in indices:
        ex = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in source[int(i)].items()}
        pipeline.check_example(ex, where=f"{where}[{i}]")
        out.append(ex)
    return out


def _encode_split(
    encoder: BatchEncoder,
    feats: Any,
    dataset_dir: epath.Path,
    out_dir: epath.Path,
    split: str,
    *,
    shard_count: int,
    with_stats: bool,
    window: int,
) -> None:
    """This process's share of ``split``: its shard files and its part file (shard lengths,
    serialized bytes, frames in record order, latent moments)."""
    from naturalspeech2_jax.data import shards

    process, processes = jax.process_index(), jax.process_count()
    source = pipeline.open_split(dataset_dir, split)
    # A contiguous block per process, cut into contiguous shards: the records keep the source's
    # order whatever the number of processes (the same dataset, frames_<split>.npy included, so
    # a seeded NS2 run reads the same batches), and each host reads its part sequentially.
    mine = np.array_split(np.arange(len(source)), processes)[process]
    lengths = [len(run) for run in np.array_split(mine, shard_count)]
    total = processes * shard_count
    paths = [
        shards.shard_path(out_dir, out_dir.parent.name, split, process * shard_count + k, total)
        for k in range(shard_count)
    ]
    writer = shards.ShardWriter(paths, lengths)
    moments, frames = LatentMoments(), []
    where = f"{dataset_dir}[{split}]"
    windows = [mine[s : s + window] for s in range(0, len(mine), window)]
    start = time.perf_counter()

    def store(w: int, examples: list[dict[str, Any]], encoded: list[Encoded]) -> None:
        """Window ``w`` with its codes, in record order, into the shards (and the moments)."""
        for i, ex, (codes, z_sum, z_squares) in zip(windows[w], examples, encoded, strict=True):
            ex["codes"] = codes
            n = pipeline.check_example(ex, where=f"{where}[{i}] with codes")
            if with_stats:
                moments.add_sums(z_sum, z_squares, n)
            frames.append(n)
            writer.write(feats.serialize_example(ex))
        done = min((w + 1) * window, len(mine))
        log.info(
            "%s: %d/%d utterances encoded (%.1f/s)",
            where, done, len(mine), done / max(time.perf_counter() - start, 1e-9),
        )  # fmt: skip

    # Three windows in flight: the next one is read and the last one serialized and written
    # (TFDS's serializer is Python: ~15 ms per 4 s utterance) while this one is encoded.
    with ThreadPoolExecutor(max_workers=1) as reader, ThreadPoolExecutor(max_workers=1) as saver:
        ahead = reader.submit(_read_examples, source, windows[0], where) if windows else None
        stored = None
        for w in range(len(windows)):
            examples = ahead.result()
            if w + 1 < len(windows):
                ahead = reader.submit(_read_examples, source, windows[w + 1], where)
            encoded = encoder.encode([ex["audio"] for ex in examples])
            if stored is not None:
                stored.result()  # in order, and its errors surface here
            stored = saver.submit(store, w, examples, encoded)
        if stored is not None:
            stored.result()
    writer.close()
    with _part_path(out_dir, split, process).open("wb") as f:
        np.savez(
            f,
            shard_lengths=np.asarray(lengths, np.int64),
            num_bytes=np.int64(writer.num_bytes),
            frames=np.asarray(frames, np.int32),
            moment_sum=np.asarray(moments.sum, np.float64),
            moment_sq=np.asarray(moments.sq, np.float64),
            moment_frames=np.int64(moments.frames),
        )


def _part_path(out_dir: epath.Path, split: str, process: int) -> epath.Path:
    return out_dir / PARTS / f"{split}-{process:05d}.npz"


def _finish(
    codec: Codec,
    codec_workdir: str | epath.Path,
    dataset_dir: epath.Path,
    out_dir: epath.Path,
    splits: list[str],
    stats_splits: set[str],
    feats: Any,
    source_name: str,
) -> None:
    """Main process, once every process wrote its shards: the files that make them a dataset,
    ``dataset_info.json`` last."""
    from naturalspeech2_jax.data import shards

    moments, described = LatentMoments(), {}
    for split in splits:
        lengths, num_bytes, frames = [], 0, []
        for process in range(jax.process_count()):
            path = _part_path(out_dir, split, process)
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} is missing: process {process} did not finish {split}; run every "
                    "process with the same arguments."
                )
            with path.open("rb") as f, np.load(f) as part:
                lengths += part["shard_lengths"].tolist()
                num_bytes += int(part["num_bytes"])
                frames.append(part["frames"])
                if split in stats_splits:
                    moments.add_sums(
                        part["moment_sum"], part["moment_sq"], int(part["moment_frames"])
                    )
        with (out_dir / f"frames_{split}.npy").open("wb") as f:  # in record order: shard order
            np.save(f, np.concatenate(frames).astype(np.int32))
        described[split] = (lengths, num_bytes)
    _copy_sidecars(dataset_dir, out_dir)
    _check_frame_counts(dataset_dir, out_dir, splits)
    if moments.frames:
        stats = moments.stats()
        save_latent_stats(stats, out_dir)
        if load_latent_stats(codec_workdir) is None:
            save_latent_stats(stats, codec_workdir)
    _write_codec_info(codec, codec_workdir, dataset_dir, out_dir, splits, stats_splits)
    description = f"{source_name} with codec codes from {codec_workdir}"
    shards.write_metadata(out_dir, out_dir.parent.name, feats, described, description)
    (out_dir / PARTS).rmtree()


def _copy_sidecars(dataset_dir: epath.Path, out_dir: epath.Path) -> None:
    for sidecar in SIDECARS:
        if (dataset_dir / sidecar).exists():
            shutil.copyfile(dataset_dir / sidecar, out_dir / sidecar)


def _check_frame_counts(dataset_dir: epath.Path, out_dir: epath.Path, splits: list[str]) -> None:
    """The writer's frame counts must equal the source's ``frames_<split>.npy``."""
    for split in splits:
        src = dataset_dir / f"frames_{split}.npy"
        if not src.exists():
            continue
        ours = pipeline.frame_lengths(out_dir, split)
        theirs = pipeline.frame_lengths(dataset_dir, split)
        if not np.array_equal(np.sort(ours), np.sort(theirs)):
            raise pipeline.InvariantError(
                f"{out_dir} split {split}: frame counts differ from {src}."
            )


def _write_codec_info(
    codec: Codec,
    codec_workdir: str | epath.Path,
    dataset_dir: epath.Path,
    out_dir: epath.Path,
    splits: list[str],
    stats_splits: set[str],
) -> None:
    """``codec.json``: which codec run (and step) wrote the codes, and its shapes."""
    info = {
        "codec_checkpoint": str(epath.Path(codec_workdir).resolve()),
        "codec_step": codec.step,
        "source_dataset": str(dataset_dir.resolve()),
        "num_quantizers": codec.num_quantizers,
        "codebook_size": codec.codebook_size,
        "latent_dim": codec.latent_dim,
        "hop_length": codec.hop,
        "sample_rate": SAMPLE_RATE,
        "codes_dtype": "int32",
        "splits": {s: int(len(pipeline.frame_lengths(out_dir, s))) for s in splits},
        "latent_stats_splits": sorted(stats_splits),
        "codec_config": codec.config.to_dict() if codec.config is not None else None,
    }
    (out_dir / CODEC_FILE).write_text(json.dumps(info, indent=1, default=str))
