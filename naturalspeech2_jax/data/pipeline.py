"""grain input pipelines over prepared datasets: random crops and length buckets, fixed shapes.

Two ways to give jit a bounded number of shapes:

- ``crop_iterator``: every example becomes a random crop of ``crop_frames`` codec frames (audio,
  pitch, codes cut consistently; shorter examples padded with a mask). One shape. For the codec.
- ``bucket_iterator``: examples are padded to the smallest of a few bucket lengths that holds the
  longest example *of the global batch*. Batches are formed from length-sorted windows of the
  seeded shuffle, so padding stays small. At most ``len(buckets)`` shapes. For NS2 and the aligner.

Both are topology independent: global batch k is the same set of examples, padded to the same
bucket, whether one process or many read it (each host pads only its rows, but the bucket is a
function of the whole global batch, computed from the per-example lengths every host holds). The
iterator position is the step, so resume is exact on any topology. Every example read is checked
against the frame invariant ``len(audio) == 200 * n_frames == 200 * sum(durations)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grain
import numpy as np
from etils import epath

from naturalspeech2_jax import HOP_LENGTH
from naturalspeech2_jax.data.loader import make_batch_iterator

log = logging.getLogger(__name__)

# Frame-level features (one value per codec frame) and token-level ones (one per phoneme).
FRAME_KEYS = ("log_f0", "voiced", "codes")
TOKEN_KEYS = ("phonemes", "durations")


class InvariantError(ValueError):
    """An example whose audio, frames, durations and pitch do not line up."""


def check_example(ex: dict[str, Any], where: str = "example") -> int:
    """Check the frame invariants of one example and return its number of frames."""
    n_audio = len(ex["audio"])
    if n_audio % HOP_LENGTH:
        raise InvariantError(f"{where}: {n_audio} audio samples is not a multiple of {HOP_LENGTH}.")
    n = n_audio // HOP_LENGTH
    if "durations" in ex:
        total = int(np.sum(ex["durations"]))
        if total != n:
            raise InvariantError(f"{where}: durations sum to {total} but audio has {n} frames.")
        if len(ex["durations"]) != len(ex["phonemes"]):
            raise InvariantError(
                f"{where}: {len(ex['phonemes'])} phonemes but {len(ex['durations'])} durations."
            )
    for key in FRAME_KEYS:
        if key in ex and len(ex[key]) != n:
            raise InvariantError(f"{where}: {key} has {len(ex[key])} frames, audio has {n}.")
    if "log_f0" in ex and not np.all(np.isfinite(ex["log_f0"])):
        raise InvariantError(f"{where}: log_f0 has NaN or Inf values.")
    return n


def open_split(dataset_dir: str | epath.Path, split: str = "train"):
    """Random-access source over a prepared TFDS ArrayRecord dataset (no TensorFlow)."""
    import tensorflow_datasets as tfds

    path = epath.Path(dataset_dir)
    if not (path / "dataset_info.json").exists():
        raise FileNotFoundError(
            f"{path} is not a prepared dataset (no dataset_info.json); run "
            "launch/prepare_data.py and pass DIR/<name>/<version>."
        )
    return tfds.builder_from_directory(str(path)).as_data_source(split)


def frame_lengths(dataset_dir: str | epath.Path, split: str = "train") -> np.ndarray:
    """Per-example frame counts written beside the dataset (no need to read every record)."""
    path = epath.Path(dataset_dir) / f"frames_{split}.npy"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing; re-run launch/prepare_data.py for this dataset."
        )
    with path.open("rb") as f:
        return np.load(f)


def _as_arrays(ex: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in ex.items():
        out[k] = v.decode() if isinstance(v, bytes) else v
    return out


def crop_example(ex: dict[str, Any], crop_frames: int, rng: np.random.Generator) -> dict:
    """A random crop of ``crop_frames`` frames: audio, frame features and a mask, zero-padded."""
    n = check_example(ex)
    start = int(rng.integers(0, max(n - crop_frames, 0) + 1))
    stop = min(start + crop_frames, n)
    pad = crop_frames - (stop - start)
    audio = np.asarray(ex["audio"][start * HOP_LENGTH : stop * HOP_LENGTH], np.float32) / 32768.0
    out = {
        "audio": np.pad(audio, (0, pad * HOP_LENGTH)),
        "frame_mask": np.pad(np.ones(stop - start, np.float32), (0, pad)),
    }
    for key in FRAME_KEYS:
        if key in ex:
            v = np.asarray(ex[key])[start:stop]
            out[key] = np.pad(v, [(0, pad)] + [(0, 0)] * (v.ndim - 1))
    return out


def crop_iterator(
    source: Any,
    *,
    crop_frames: int,
    seed: int,
    local_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    num_threads: int = 4,
) -> grain.DatasetIterator:
    """Batches of fixed-size random crops (one compiled shape)."""
    return make_batch_iterator(
        source,
        seed=seed,
        local_batch_size=local_batch_size,
        process_index=process_index,
        process_count=process_count,
        transform=lambda ex, rng: crop_example(_as_arrays(ex), crop_frames, rng),
        num_threads=num_threads,
    )


def pad_example(ex: dict[str, Any], frames: int, tokens: int) -> dict:
    """Pad one example to (frames, tokens) with masks; too-long examples must be filtered first."""
    n = check_example(ex)
    n_tok = len(ex["phonemes"])
    if n > frames or n_tok > tokens:
        raise InvariantError(
            f"example of {n} frames / {n_tok} tokens exceeds bucket "
            f"({frames}, {tokens}); raise the largest bucket."
        )
    out = {
        "audio": np.pad(
            np.asarray(ex["audio"], np.float32) / 32768.0, (0, (frames - n) * HOP_LENGTH)
        ),
        "frame_mask": np.pad(np.ones(n, np.float32), (0, frames - n)),
        "token_mask": np.pad(np.ones(n_tok, np.float32), (0, tokens - n_tok)),
        "speaker_id": np.int32(ex.get("speaker_id", 0)),
    }
    for key in FRAME_KEYS:
        if key in ex:
            v = np.asarray(ex[key])
            out[key] = np.pad(v, [(0, frames - n)] + [(0, 0)] * (v.ndim - 1))
    for key in TOKEN_KEYS:
        if key in ex:
            out[key] = np.pad(np.asarray(ex[key], np.int32), (0, tokens - n_tok))
    if "mel" in ex:
        mel = np.asarray(ex["mel"], np.float32)
        out["mel"] = np.pad(mel, [(0, frames - len(mel)), (0, 0)])
    return out


class BucketBatches:
    """Random-access list of global batches: (example indices, bucket) for batch k.

    Order: each epoch is a seeded permutation; it is cut into windows of ``window`` batches, each
    window sorted by length and cut into batches, and the batches of the epoch shuffled. The bucket
    of a batch is the smallest bucket length holding its longest example.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        *,
        global_batch: int,
        buckets: Sequence[int],
        seed: int,
        window: int = 16,
        token_lengths: Sequence[int] | None = None,
        token_buckets: Sequence[int] | None = None,
    ):
        self.lengths = np.asarray(lengths)
        self.tokens = np.asarray(token_lengths) if token_lengths is not None else None
        self.buckets = np.sort(np.asarray(buckets))
        self.token_buckets = (
            np.sort(np.asarray(token_buckets)) if token_buckets is not None else None
        )
        if self.lengths.max(initial=0) > self.buckets[-1]:
            raise ValueError(
                f"longest example ({self.lengths.max()} frames) exceeds the largest "
                f"bucket {self.buckets[-1]}; filter long examples or add a bucket."
            )
        self.global_batch, self.seed, self.window = global_batch, seed, window
        self.per_epoch = len(self.lengths) // global_batch
        if self.per_epoch == 0:
            raise ValueError(
                f"{len(self.lengths)} examples cannot fill one global batch of "
                f"{global_batch}; lower batch_size."
            )
        self._cache: dict[int, np.ndarray] = {}

    def _epoch(self, epoch: int) -> np.ndarray:
        cached = self._cache  # grain reads from several threads: swap whole dicts, never mutate
        if epoch not in cached:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.lengths))[: self.per_epoch * self.global_batch]
            span = self.window * self.global_batch
            for s in range(0, len(order), span):
                chunk = order[s : s + span]
                order[s : s + span] = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches = order.reshape(self.per_epoch, self.global_batch)
            cached = {epoch: batches[rng.permutation(self.per_epoch)]}
            self._cache = cached
        return cached[epoch]

    def batch(self, k: int) -> tuple[np.ndarray, int, int]:
        idx = self._epoch(k // self.per_epoch)[k % self.per_epoch]
        frames = int(self.buckets[np.searchsorted(self.buckets, self.lengths[idx].max())])
        tokens = 0
        if self.tokens is not None and self.token_buckets is not None:
            tb = self.token_buckets
            tokens = int(tb[min(np.searchsorted(tb, self.tokens[idx].max()), len(tb) - 1)])
        return idx, frames, tokens


def bucket_iterator(
    source: Any,
    batches: BucketBatches,
    *,
    local_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    transform: Callable[[dict, int, int], dict] | None = None,
    num_threads: int = 4,
    prefetch: int = 4,
) -> grain.DatasetIterator:
    """This host's rows of every bucketed global batch, as an endless checkpointable iterator."""
    if local_batch_size * process_count != batches.global_batch:
        raise ValueError("local_batch_size * process_count must equal the global batch size.")
    pad = transform or (lambda ex, frames, tokens: pad_example(ex, frames, tokens))
    lo = process_index * local_batch_size

    def host_example(i: int) -> dict:
        k, j = divmod(i, local_batch_size)
        idx, frames, tokens = batches.batch(k)
        return pad(_as_arrays(source[int(idx[lo + j])]), frames, tokens)

    n = (2**62 // batches.global_batch) * local_batch_size
    ds = grain.MapDataset.range(n).map(host_example).batch(local_batch_size)
    read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return iter(ds.to_iter_dataset(read_options=read))


def split_names(splits: str | Iterable[str]) -> list[str]:
    """``"train,cathy"`` -> ``["train", "cathy"]`` (a sequence passes through)."""
    names = splits.split(",") if isinstance(splits, str) else list(splits)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ValueError("no split named; set config.data.train_splits, e.g. 'train,cathy'.")
    return names


def open_splits(dataset_dir: str, splits: str | Iterable[str]):
    """One random-access source over the concatenation of ``splits`` of a prepared dataset."""
    sources = []
    for name in split_names(splits):
        try:
            sources.append(open_split(dataset_dir, name))
        except (KeyError, ValueError) as e:
            raise ValueError(
                f"split {name!r} is not in {dataset_dir} ({e}); fix config.data.train_splits."
            ) from None
    if len(sources) == 1:
        return sources[0]
    return grain.MapDataset.concatenate([grain.MapDataset.source(s) for s in sources])


def open_eval_split(dataset_dir: str, split: str, fallback: str) -> tuple[Any, str]:
    """(source, its split name): the evaluation split, else (a dataset without it) the training
    split ``fallback``."""
    try:
        return open_split(dataset_dir, split), split
    except (KeyError, ValueError) as e:
        log.warning("eval split %r not in %s (%s); using %r", split, dataset_dir, e, fallback)
        return open_split(dataset_dir, fallback), fallback


def spread_indices(n_total: int, n: int) -> list[int]:
    """``n`` indices spread evenly over ``range(n_total)`` (every speaker of a split, roughly)."""
    n = min(n, n_total)
    return [int(i * n_total / n) for i in range(n)]
