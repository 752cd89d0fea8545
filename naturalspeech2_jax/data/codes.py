"""Codes datasets: the prepared dataset plus the codec's ``codes``, as NS2 trains on it.

A codes dataset is a prepared TFDS dataset whose examples also hold ``codes`` int [n_frames, 16]
(``launch/codec.py encode-dataset`` writes it), with ``codec.json`` naming the codec run and
``latent_stats.npz`` beside the records. This module finds one (``resolve_dataset_dir``), indexes
its splits without the examples longer than the largest bucket (``open_training_source``), pads
examples to a bucket with only what the NS2 loss reads (``training_example``) and picks the
(target, prompt) pairs that evaluation and the samples use (``eval_pairs``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from etils import epath

from naturalspeech2_jax.data import pipeline

log = logging.getLogger(__name__)

CODEC_FILE = "codec.json"  # beside a codes dataset: {"codec_checkpoint": DIR, ...}
LATENT_STATS_FILE = "latent_stats.npz"  # {"mean": [D], "std": [D]} beside the dataset / codec
BATCH_KEYS = ("phonemes", "durations", "token_mask", "codes", "log_f0", "frame_mask")


def read_latent_stats(path: epath.Path) -> dict[str, np.ndarray] | None:
    """{"mean": [D], "std": [D]} of a ``latent_stats.npz``, or None when there is none."""
    if not path.exists():
        return None
    with path.open("rb") as f:
        data = np.load(f)
        return {k: np.asarray(data[k], np.float32) for k in ("mean", "std")}


def codec_checkpoint(config: Any, dataset_dir: str) -> str:
    """``config.codec.checkpoint``, else the codec run named by the dataset's codec.json."""
    path = str(config.codec.get("checkpoint", "") or "")
    if path:
        return path
    info = epath.Path(dataset_dir) / CODEC_FILE
    if not info.exists():
        raise FileNotFoundError(
            f"{info} is missing, so the codec of {dataset_dir} is unknown; pass "
            "--config.codec.checkpoint=CODEC_RUN (the --workdir of the codec training)."
        )
    data = json.loads(info.read_text())
    if not data.get("codec_checkpoint"):
        raise ValueError(f"{info} has no 'codec_checkpoint'; pass --config.codec.checkpoint.")
    return str(data["codec_checkpoint"])


def token_lengths(dataset_dir: str, split: str, source: Any) -> np.ndarray:
    """Phonemes per example of a split: ``tokens_<split>.npy`` beside the dataset, else read
    once from the records (and cached there when the directory is writable)."""
    path = epath.Path(dataset_dir) / f"tokens_{split}.npy"
    if path.exists():
        with path.open("rb") as f:
            return np.load(f)
    start = time.perf_counter()
    lengths = np.array([len(source[i]["phonemes"]) for i in range(len(source))], np.int32)
    log.info("counted phonemes of %d %s examples in %.1f s", len(lengths), split,
             time.perf_counter() - start)  # fmt: skip
    try:
        tmp = path.parent / f".{path.name}.tmp"
        with tmp.open("wb") as f:
            np.save(f, lengths)
        tmp.rename(path)
    except OSError:  # a read-only dataset: count again next time
        pass
    return lengths


class IndexedSource:
    """Chosen examples of several sources: item i is sources[s][j] with (s, j) = pairs[i]."""

    def __init__(self, sources: Sequence[Any], pairs: Sequence[tuple[int, int]]):
        self.sources, self.pairs = list(sources), list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        s, j = self.pairs[i]
        return self.sources[s][j]


def open_training_source(
    dataset_dir: str, splits: Sequence[str], max_frames: int, max_tokens: int
) -> tuple[IndexedSource, np.ndarray, np.ndarray]:
    """(source, frames, tokens) over ``splits`` without examples longer than the largest bucket."""
    sources, pairs, frames, tokens = [], [], [], []
    for s, split in enumerate(splits):
        try:
            src = pipeline.open_split(dataset_dir, split)
        except (KeyError, ValueError) as e:
            raise ValueError(
                f"split {split!r} is not in {dataset_dir} ({e}); fix config.data.train_splits."
            ) from None
        f = pipeline.frame_lengths(dataset_dir, split)
        t = token_lengths(dataset_dir, split, src)
        keep = np.flatnonzero((f <= max_frames) & (t <= max_tokens) & (f > 0))
        if len(keep) < len(f):
            log.warning("%s: %d of %d examples exceed the largest bucket (%d frames, %d tokens) "
                        "and are skipped", split, len(f) - len(keep), len(f), max_frames,
                        max_tokens)  # fmt: skip
        sources.append(src)
        pairs += [(s, int(j)) for j in keep]
        frames.append(f[keep])
        tokens.append(t[keep])
    if not pairs:
        raise ValueError(
            f"no example of {dataset_dir} {list(splits)} fits the buckets; raise "
            "config.data.buckets / config.data.token_buckets."
        )
    return IndexedSource(sources, pairs), np.concatenate(frames), np.concatenate(tokens)


def training_example(ex: dict, frames: int, tokens: int) -> dict[str, np.ndarray]:
    """One example padded to a bucket, with only what the loss reads (no audio)."""
    padded = pipeline.pad_example(ex, frames, tokens)
    out = {k: padded[k] for k in BATCH_KEYS}
    out["codes"] = out["codes"].astype(np.int32)
    return out


def as_text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def latent_from_codes(codes: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Host-side z = sum_j codebooks[j, codes[..., j]] (numpy)."""
    r = codebooks.shape[0]
    codes = np.asarray(codes)[..., :r].astype(np.int64)
    return sum(codebooks[j][codes[..., j]] for j in range(r)).astype(np.float32)


def eval_pairs(examples: Sequence[dict], n: int) -> list[tuple[int, int]]:
    """Up to ``n`` (target, prompt) index pairs: two different utterances of one speaker, over as
    many speakers as possible (a speaker with one utterance prompts with that utterance)."""
    by_speaker: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_speaker.setdefault(as_text(ex.get("speaker", "")), []).append(i)
    speakers = sorted(by_speaker)
    pairs, round_ = [], 0
    while len(pairs) < n and round_ < max(len(v) for v in by_speaker.values()):
        for spk in speakers:
            utts = by_speaker[spk]
            if round_ < len(utts) and len(pairs) < n:
                t = utts[round_]
                pairs.append((t, utts[(round_ + 1) % len(utts)]))
        round_ += 1
    return pairs
