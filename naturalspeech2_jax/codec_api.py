"""Python API of a trained codec: load, encode, decode, resynthesise, and encode whole datasets.

A codec run is the ``--workdir`` of ``launch/train.py --config=configs/codec.py[:preset]``: it holds
``checkpoints/`` (Orbax), ``config.json`` and, once training finished (or at every evaluation),
``latent_stats.npz``. Everything below uses the EMA weights when the run kept them.

What NaturalSpeech 2 uses (all arrays numpy; batch axes optional)::

    from naturalspeech2_jax.codec_api import Codec
    codec = Codec.from_checkpoint("runs/codec_tiny")
    codec.codebooks                    # float32 [16, 1024, 256]: codebooks[j, code] = embedding
    z = codec.latent(codes)            # codes int [T, k<=16] -> z float32 [T, 256]
                                       #   = sum_j codebooks[j, codes[:, j]] (diffusion target)
    wav = codec.decode(z)              # z [T, 256] -> 16 kHz float32 waveform [T * 200]
    codec.latent_stats                 # {"mean": [256], "std": [256], "frames": n} or None
    load_latent_stats("runs/codec_tiny")   # the same dict, without loading the model

and, for audio::

    codes = codec.encode(wav16k)       # float [N] -> int32 [ceil(N / 200), 16]
    wav = codec.decode_codes(codes[:, :8])   # any prefix of quantizers decodes (variable bitrate)
    out = codec.resynth(wav, sample_rate)    # any rate in -> 16 kHz out, same duration

Datasets: ``encode_dataset(codec_workdir, DATA/<name>/1.0.0, OUT)`` writes a sibling TFDS dataset
at ``OUT`` (the version dir, e.g. ``DATA/<name>_codes/1.0.0``) holding every original feature plus
``codes`` int32 [n_frames, 16], checked against the durations and pitch frame counts; beside the
records: ``codec.json`` (the codec run, its step and config), ``latent_stats.npz`` (over the
train splits), ``frames_<split>.npy`` and the source's ``vocab.json``, ``speakers.json`` and
``card.json``, so ``data.pipeline.open_split(OUT, split)`` reads it like the original.

``load_codec(checkpoint)`` returns the ``codec(wav, n_quantizers) -> wav`` callable that
``naturalspeech2_jax.evaluation`` expects. The same functions back ``launch/codec.py``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from naturalspeech2_jax import SAMPLE_RATE
from naturalspeech2_jax.models import codec_task
from naturalspeech2_jax.models.codec import NeuralCodec

log = logging.getLogger(__name__)

CODEC_FILE = "codec.json"
# Files of a prepared dataset that describe it beyond its records (copied by encode_dataset).
SIDECARS = ("vocab.json", "speakers.json", "card.json", "card.md", "rejected.tsv")


class CheckpointError(FileNotFoundError):
    """A codec checkpoint directory that is missing, empty or not a codec run."""


class AudioReadError(ValueError):
    """An input file that cannot be read as audio (or as codes)."""


def _train_hint() -> str:
    return "pass the --workdir of a codec run (launch/train.py --config=configs/codec.py)"


def load_config(workdir: str | epath.Path) -> ml_collections.ConfigDict:
    """The training config of a codec run (``<workdir>/config.json``, else a checkpoint's meta)."""
    workdir = epath.Path(workdir)
    if not workdir.is_dir():
        raise CheckpointError(f"codec checkpoint {workdir} does not exist; {_train_hint()}.")
    path = workdir / "config.json"
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path} is not valid JSON ({e}); {_train_hint()}.") from None
    else:
        from naturalspeech2_jax.train.checkpoint import Checkpointer

        step = None
        if (workdir / "checkpoints").is_dir():
            ckpt = Checkpointer(workdir / "checkpoints", async_writes=False)
            step = ckpt.latest_step()
        if step is None:
            raise CheckpointError(
                f"{workdir} has neither config.json nor a checkpoint under checkpoints/; "
                f"{_train_hint()}."
            )
        data = ckpt.restore_meta(step)["config"]
    if data.get("task") != "codec":
        raise CheckpointError(
            f"{workdir} is a {data.get('task')!r} run, not a codec run; {_train_hint()}."
        )
    return ml_collections.ConfigDict(data)


def load_latent_stats(workdir: str | epath.Path) -> dict[str, np.ndarray] | None:
    """``<workdir>/latent_stats.npz`` as {"mean": [D], "std": [D], "frames": n}, or None."""
    path = epath.Path(workdir) / codec_task.LATENT_STATS_FILE
    if not path.exists():
        return None
    with path.open("rb") as f:
        return dict(np.load(f))


def load_audio(path: str | epath.Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 audio from any soundfile-readable file, resampled to ``sample_rate``."""
    wav, sr = read_audio(path)
    return resample(wav, sr, sample_rate)


def read_audio(path: str | epath.Path) -> tuple[np.ndarray, int]:
    """(mono float32 waveform, sample rate) of an audio file; one-sentence error if unreadable."""
    import soundfile as sf

    if not epath.Path(path).exists():
        raise AudioReadError(f"input file {path} does not exist; check the path.")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError on unknown formats
        raise AudioReadError(
            f"cannot read {path} as audio ({e}); convert it to wav/flac/ogg (e.g. with ffmpeg)."
        ) from None
    if wav.shape[0] == 0:
        raise AudioReadError(f"{path} holds no audio samples; pass a non-empty recording.")
    return wav.mean(axis=1), int(sr)


def resample(wav: np.ndarray, sr: int, target: int = SAMPLE_RATE) -> np.ndarray:
    if sr == target:
        return np.asarray(wav, np.float32)
    import librosa

    return librosa.resample(np.asarray(wav, np.float32), orig_sr=sr, target_sr=target)


def save_audio(path: str | epath.Path, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    import soundfile as sf

    epath.Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16")


class Codec:
    """A trained codec (EMA weights) with numpy in/out; batch axes are optional everywhere."""

    def __init__(
        self,
        model: NeuralCodec,
        config: Any = None,
        latent_stats: dict[str, np.ndarray] | None = None,
        workdir: str | None = None,
        step: int | None = None,
        bucket_frames: int = 50,
    ):
        self.model, self.config, self.latent_stats = model, config, latent_stats
        self.workdir, self.step, self.bucket_frames = workdir, step, bucket_frames
        self.hop = model.hop
        self.sample_rate = SAMPLE_RATE
        self.num_quantizers = model.num_quantizers
        self.codebook_size = model.quantizer.codebook_size
        self.latent_dim = model.quantizer.dim

    @classmethod
    def from_checkpoint(cls, workdir: str | epath.Path) -> Codec:
        """Load the latest checkpoint of a codec run (EMA weights when the run kept them)."""
        from naturalspeech2_jax.train import loop

        workdir = epath.Path(workdir)
        config = load_config(workdir)
        # Inference needs one device whatever the training topology was.
        config.num_devices, config.batch_size, config.grad_accum = 1, 1, 1
        config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))
        config.init_from = ""
        trainer = loop.Trainer(config, workdir)
        step = trainer.checkpointer.latest_step()
        if step is None:
            trainer.checkpointer.close()
            raise CheckpointError(
                f"{workdir}/checkpoints holds no checkpoint; train the codec first or "
                f"{_train_hint()}."
            )
        state = trainer.restore_or_init(None)
        trainer.checkpointer.close()
        model = trainer.eval_model(state).codec
        return cls(model, config, load_latent_stats(workdir), str(workdir), int(step))

    # ------------------------------------------------------------------ core
    def _bucket(self, frames: int) -> int:
        """Frames padded up to a multiple of ``bucket_frames`` (bounds the compiled shapes)."""
        b = max(int(self.bucket_frames), 1)
        return -(-frames // b) * b

    def encode(self, wav: np.ndarray, n_q: int | None = None) -> np.ndarray:
        """16 kHz waveform [N] or [B, N] -> codes int32 [T, n_q] (or [B, T, n_q]).

        T = ceil(N / 200). The waveform is zero-padded to a multiple of ``bucket_frames`` frames
        (one compiled shape per bucket, and the same codes whichever path encodes a file) and the
        codes are cut back to T frames.
        """
        wav = np.asarray(wav, np.float32)
        batch = wav if wav.ndim == 2 else wav[None]
        t = -(-batch.shape[-1] // self.hop)
        padded = np.pad(batch, ((0, 0), (0, self._bucket(t) * self.hop - batch.shape[-1])))
        codes = np.asarray(codec_task._encode(self.model, jnp.asarray(padded)), np.int32)[:, :t]
        if n_q is not None:
            codes = codes[..., :n_q]
        return codes if wav.ndim == 2 else codes[0]

    def latent(self, codes: np.ndarray) -> np.ndarray:
        """Codes [T, k] (or [B, T, k], k <= 16) -> z [T, 256]: the sum of quantized embeddings."""
        codes = np.asarray(codes)
        self._check_codes(codes)
        batch = codes if codes.ndim == 3 else codes[None]
        t = batch.shape[1]
        batch = np.pad(batch, ((0, 0), (0, self._bucket(t) - t), (0, 0)))
        z = np.asarray(codec_task._latent_from_codes(self.model, jnp.asarray(batch, jnp.int32)))
        z = z[:, :t]
        return z if codes.ndim == 3 else z[0]

    quantize = latent

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Latent z [T, 256] (or [B, T, 256]) -> 16 kHz waveform [T * 200] (or [B, T * 200])."""
        z = np.asarray(z, np.float32)
        if z.ndim not in (2, 3) or z.shape[-1] != self.latent_dim:
            raise ValueError(f"z must be [T, {self.latent_dim}] or [B, T, {self.latent_dim}].")
        batch = z if z.ndim == 3 else z[None]
        t = batch.shape[1]
        batch = np.pad(batch, ((0, 0), (0, self._bucket(t) - t), (0, 0)))
        wav = np.asarray(codec_task._decode_latent(self.model, jnp.asarray(batch)))
        wav = wav[:, : t * self.hop]
        return wav if z.ndim == 3 else wav[0]

    def decode_codes(self, codes: np.ndarray) -> np.ndarray:
        """Codes [T, k] -> waveform [T * 200] (any k = 1..16: variable bitrate)."""
        return self.decode(self.latent(codes))

    def resynth(
        self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE, n_q: int | None = None
    ) -> np.ndarray:
        """Any-rate waveform -> 16 kHz reconstruction with the duration of the input."""
        wav16 = resample(np.asarray(wav, np.float32), sample_rate)
        return self.decode_codes(self.encode(wav16, n_q))[..., : wav16.shape[-1]]

    def __call__(self, wav: np.ndarray, n_quantizers: int | None = None) -> np.ndarray:
        """16 kHz in and out through the first ``n_quantizers`` codebooks (evaluation protocol)."""
        return self.resynth(wav, SAMPLE_RATE, n_quantizers)

    @property
    def codebooks(self) -> np.ndarray:
        """[num_quantizers, codebook_size, latent_dim] float32."""
        return np.asarray(self.model.codebooks)

    def _check_codes(self, codes: np.ndarray) -> None:
        if codes.ndim not in (2, 3) or not 1 <= codes.shape[-1] <= self.num_quantizers:
            raise ValueError(
                f"codes must be [T, k] or [B, T, k] with 1 <= k <= {self.num_quantizers}; got "
                f"shape {codes.shape}."
            )
        if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(
                f"code ids must lie in [0, {self.codebook_size}); got {codes.min()}..{codes.max()}."
            )


def load_codec(checkpoint: str | epath.Path) -> Codec:
    """The evaluation loader: a ``codec(wav, n_quantizers) -> wav`` callable (16 kHz mono)."""
    return Codec.from_checkpoint(checkpoint)


# ---------------------------------------------------------------------- file helpers (the CLI)
def encode_file(
    checkpoint: str, in_path: str, out_path: str, n_q: int | None = None, codec: Codec | None = None
) -> np.ndarray:
    """Audio file (any rate) -> ``.npy`` codes int32 [T, n_q], T = ceil(16 kHz samples / 200)."""
    wav = load_audio(in_path)
    codec = codec or Codec.from_checkpoint(checkpoint)
    if n_q is not None and not 1 <= n_q <= codec.num_quantizers:
        raise ValueError(f"--n_q must be in 1..{codec.num_quantizers}; got {n_q}.")
    codes = codec.encode(wav, n_q).astype(np.int32)
    epath.Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with epath.Path(out_path).open("wb") as f:
        np.save(f, codes)
    return codes


def read_codes(path: str | epath.Path) -> np.ndarray:
    """Codes [T, k] from a ``.npy`` file written by :func:`encode_file`."""
    if not epath.Path(path).exists():
        raise AudioReadError(f"codes file {path} does not exist; write one with `encode`.")
    try:
        with epath.Path(path).open("rb") as f:
            codes = np.load(f)
    except Exception as e:
        raise AudioReadError(
            f"cannot read {path} as a .npy array ({e}); pass codes written by `encode`."
        ) from None
    if codes.ndim == 1:
        codes = codes[:, None]
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
        raise AudioReadError(
            f"{path} holds {codes.dtype} {codes.shape}, not integer codes [frames, quantizers]; "
            "pass codes written by `encode`."
        )
    return codes.astype(np.int32)


def decode_file(
    checkpoint: str, in_path: str, out_path: str, codec: Codec | None = None
) -> np.ndarray:
    """``.npy`` codes [T, k] -> 16 kHz wav of T * 200 samples."""
    codes = read_codes(in_path)
    codec = codec or Codec.from_checkpoint(checkpoint)
    wav = codec.decode_codes(codes)
    save_audio(out_path, wav)
    return wav


def resynth_file(
    checkpoint: str,
    in_path: str,
    out_path: str,
    n_q: int | None = None,
    codec: Codec | None = None,
) -> np.ndarray:
    """Audio file (any rate) -> 16 kHz wav through the codec with the input's duration."""
    wav, sr = read_audio(in_path)
    codec = codec or Codec.from_checkpoint(checkpoint)
    out = codec.resynth(wav, sr, n_q)
    save_audio(out_path, out)
    return out


# ---------------------------------------------------------------------- datasets
def _dataset_info(dataset_dir: str | epath.Path) -> tuple[str, list[str]]:
    import tensorflow_datasets as tfds

    if not (epath.Path(dataset_dir) / "dataset_info.json").exists():
        raise FileNotFoundError(
            f"{dataset_dir} is not a prepared dataset (no dataset_info.json); pass "
            "DATA/<name>/<version> written by launch/prepare_data.py."
        )
    builder = tfds.builder_from_directory(str(dataset_dir))
    return builder.info.name, list(builder.info.splits.keys())


def compute_latent_stats(
    codec: Codec,
    dataset_dir: str | epath.Path,
    split: str = "train",
    max_examples: int | None = None,
) -> dict[str, np.ndarray]:
    """Per-channel mean/std of z over (up to ``max_examples``) utterances of split(s)."""
    source = codec_task.open_splits(str(dataset_dir), split)
    n = len(source) if max_examples is None else min(max_examples, len(source))
    idx = codec_task._spread(len(source), n)
    wavs = (np.asarray(source[i]["audio"], np.float32) / 32768.0 for i in idx)
    return codec_task.latent_statistics(codec.model, wavs)


def encode_utterance(codec: Codec, audio_int16: np.ndarray) -> np.ndarray:
    """Codes int32 [n_frames, 16] of one prepared utterance (int16 audio, 200 * n_frames)."""
    return codec.encode(np.asarray(audio_int16, np.float32) / 32768.0).astype(np.int32)


def encode_dataset(
    codec_workdir: str | epath.Path,
    dataset_dir: str | epath.Path,
    out_dir: str | epath.Path,
    *,
    splits: Sequence[str] | None = None,
    stats_splits: Sequence[str] | None = None,
    bucket_frames: int = 50,
    codec: Codec | None = None,
) -> epath.Path:
    """Write ``out_dir`` (a version dir, e.g. DATA/x_codes/1.0.0): the dataset plus ``codes``.

    Every feature of every example is kept; ``codes`` int32 [n_frames, num_quantizers] is added
    and checked (by the writer) against the audio, durations and ``log_f0`` frame counts. The
    latent statistics of ``stats_splits`` (default: every split except dev/heldout/validation/test)
    are written as ``latent_stats.npz`` in ``out_dir`` (and in the codec workdir when it has none).
    """
    from naturalspeech2_jax.data import pipeline
    from naturalspeech2_jax.data.tfds_builder import VERSION, write_dataset

    dataset_dir, out_dir = epath.Path(dataset_dir), epath.Path(out_dir)
    name, all_splits = _dataset_info(dataset_dir)
    if out_dir.name != VERSION:
        raise ValueError(f"out_dir must be a version dir ending in /{VERSION}; got {out_dir}.")
    if (out_dir / "dataset_info.json").exists():
        raise FileExistsError(f"{out_dir} already holds a dataset; remove it or pick another OUT.")
    codec = codec or Codec.from_checkpoint(codec_workdir)
    codec.bucket_frames = bucket_frames
    splits = list(splits or all_splits)
    held_out = {"dev", "heldout", "validation", "test"}
    stats_splits = set(stats_splits or [s for s in splits if s not in held_out] or splits)
    dim = codec.latent_dim
    acc = {"sum": np.zeros(dim), "sq": np.zeros(dim), "n": 0}

    def encode_split(split: str):
        def gen():
            source = pipeline.open_split(dataset_dir, split)
            for i in range(len(source)):
                ex = dict(source[i])
                n = pipeline.check_example(ex, where=f"{dataset_dir}[{split}][{i}]")
                codes = encode_utterance(codec, ex["audio"])
                if codes.shape != (n, codec.num_quantizers):
                    raise pipeline.InvariantError(
                        f"{dataset_dir}[{split}][{i}]: codes {codes.shape}, expected {n} frames."
                    )
                if split in stats_splits:
                    z = codec.latent(codes).astype(np.float64)
                    acc["sum"] += z.sum(0)
                    acc["sq"] += (z**2).sum(0)
                    acc["n"] += n
                out = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in ex.items()}
                out["codes"] = codes
                yield out

        return gen

    # write_dataset writes DATA_DIR/<name>/<version>: DATA_DIR = out_dir/../..
    written = write_dataset(
        out_dir.parent.parent,
        out_dir.parent.name,
        {s: encode_split(s) for s in splits},
        description=f"{name} with codec codes from {codec_workdir}",
        num_quantizers=codec.num_quantizers,
    )
    if epath.Path(written) != out_dir:
        raise RuntimeError(f"dataset written to {written}, expected {out_dir}")
    for sidecar in SIDECARS:
        if (dataset_dir / sidecar).exists():
            shutil.copyfile(dataset_dir / sidecar, out_dir / sidecar)
    for split in splits:  # the writer's frame counts must equal the source's sidecars
        src = dataset_dir / f"frames_{split}.npy"
        if src.exists():
            ours, theirs = (
                pipeline.frame_lengths(out_dir, split),
                pipeline.frame_lengths(dataset_dir, split),
            )
            if not np.array_equal(np.sort(ours), np.sort(theirs)):
                raise pipeline.InvariantError(
                    f"{out_dir} split {split}: frame counts differ from {src}."
                )
    if acc["n"]:
        mean = acc["sum"] / acc["n"]
        std = np.sqrt(np.maximum(acc["sq"] / acc["n"] - mean**2, 1e-12))
        stats = {"mean": mean.astype(np.float32), "std": std.astype(np.float32), "frames": acc["n"]}
        codec_task.save_latent_stats(stats, out_dir)
        if load_latent_stats(codec_workdir) is None:
            codec_task.save_latent_stats(stats, codec_workdir)
    info = {
        "codec_checkpoint": str(epath.Path(codec_workdir).resolve()),
        "codec_step": codec.step,
        "source_dataset": str(dataset_dir.resolve()),
        "num_quantizers": codec.num_quantizers,
        "codebook_size": codec.codebook_size,
        "latent_dim": dim,
        "hop_length": codec.hop,
        "sample_rate": SAMPLE_RATE,
        "codes_dtype": "int32",
        "splits": {s: int(len(pipeline.frame_lengths(out_dir, s))) for s in splits},
        "latent_stats_splits": sorted(stats_splits),
        "codec_config": codec.config.to_dict() if codec.config is not None else None,
    }
    (out_dir / CODEC_FILE).write_text(json.dumps(info, indent=1, default=str))
    log.info("encoded %s -> %s (%s)", dataset_dir, out_dir, ", ".join(splits))
    return out_dir
