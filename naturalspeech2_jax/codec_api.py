"""Python API of a trained codec: load a checkpoint, encode, decode, resynthesise, encode datasets.

    codec = Codec.from_checkpoint("runs/codec_tiny")
    codes = codec.encode(wav16k)                 # int32 [T, 16], T = ceil(len / 200)
    z = codec.latent(codes)                      # [T, 256]: sum of quantized embeddings
    wav = codec.decode(z)                        # float32 [T * 200] at 16 kHz
    out = codec.resynth(wav_any_rate, sample_rate)  # 16 kHz, same duration as the input

``encode_dataset(codec_workdir, dataset_dir, out_dir)`` writes a copy of a prepared dataset with
the 16 code ids of every frame (int16 ``codes`` [frames, 16]) and the per-channel latent
statistics (``latent_stats.npz``) that the diffusion model normalises with. The same functions
back ``launch/codec.py``.
"""

from __future__ import annotations

import json
import logging
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


def load_config(workdir: str | epath.Path) -> ml_collections.ConfigDict:
    """The training config of a codec run (``<workdir>/config.json``, else a checkpoint's meta)."""
    workdir = epath.Path(workdir)
    path = workdir / "config.json"
    if path.exists():
        data = json.loads(path.read_text())
    else:
        from naturalspeech2_jax.train.checkpoint import Checkpointer

        ckpt = Checkpointer(workdir / "checkpoints", async_writes=False)
        step = ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(
                f"{workdir} has neither config.json nor checkpoints/; pass the --workdir of a "
                "codec training run (launch/train.py --config=configs/codec.py)."
            )
        data = ckpt.restore_meta(step)["config"]
    if data.get("task") != "codec":
        raise ValueError(f"{workdir} is a {data.get('task')!r} run, not a codec run.")
    return ml_collections.ConfigDict(data)


def load_audio(path: str | epath.Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 audio from any soundfile-readable file, resampled to ``sample_rate``."""
    import soundfile as sf

    wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(wav.mean(axis=1), sr, sample_rate)


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
    ):
        self.model, self.config, self.latent_stats = model, config, latent_stats
        self.hop = model.hop
        self.sample_rate = SAMPLE_RATE
        self.num_quantizers = model.num_quantizers

    @classmethod
    def from_checkpoint(cls, workdir: str | epath.Path) -> Codec:
        """Load the latest checkpoint of a codec run (EMA weights when the run kept them)."""
        from naturalspeech2_jax.train import loop

        workdir = epath.Path(workdir)
        config = load_config(workdir)
        # Inference needs one device whatever the training topology was.
        config.num_devices, config.batch_size = 1, 1
        config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))
        config.init_from = ""
        trainer = loop.Trainer(config, workdir)
        if trainer.checkpointer.latest_step() is None:
            raise FileNotFoundError(f"{workdir}/checkpoints holds no checkpoint; train first.")
        state = trainer.restore_or_init(None)
        trainer.checkpointer.close()
        model = trainer.eval_model(state).codec
        stats = None
        stats_path = workdir / codec_task.LATENT_STATS_FILE
        if stats_path.exists():
            with stats_path.open("rb") as f:
                stats = dict(np.load(f))
        return cls(model, config, stats)

    # ------------------------------------------------------------------ core
    def _pad(self, wav: np.ndarray) -> tuple[np.ndarray, int]:
        wav = np.asarray(wav, np.float32)
        n = wav.shape[-1]
        pad = (-n) % self.hop
        return np.pad(wav, [(0, 0)] * (wav.ndim - 1) + [(0, pad)]), n

    def encode(self, wav: np.ndarray, n_q: int | None = None) -> np.ndarray:
        """16 kHz waveform [N] or [B, N] -> codes int32 [T, n_q] (or [B, T, n_q]).

        The waveform is zero-padded to whole frames: T = ceil(N / 200).
        """
        padded, _ = self._pad(wav)
        batch = padded if padded.ndim == 2 else padded[None]
        codes = np.asarray(codec_task._encode(self.model, jnp.asarray(batch)))
        if n_q is not None:
            codes = codes[..., :n_q]
        return codes if padded.ndim == 2 else codes[0]

    def latent(self, codes: np.ndarray) -> np.ndarray:
        """Codes [T, k] (or [B, T, k], k <= 16) -> z [T, 256]: the sum of quantized embeddings."""
        codes = np.asarray(codes)
        self._check_codes(codes)
        batch = codes if codes.ndim == 3 else codes[None]
        z = np.asarray(codec_task._latent_from_codes(self.model, jnp.asarray(batch, jnp.int32)))
        return z if codes.ndim == 3 else z[0]

    quantize = latent

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Latent z [T, 256] (or [B, T, 256]) -> 16 kHz waveform [T * 200] (or [B, T * 200])."""
        z = np.asarray(z, np.float32)
        batch = z if z.ndim == 3 else z[None]
        wav = np.asarray(codec_task._decode_latent(self.model, jnp.asarray(batch)))
        return wav if z.ndim == 3 else wav[0]

    def decode_codes(self, codes: np.ndarray) -> np.ndarray:
        """Codes [T, k] -> waveform [T * 200] (any k = 1..16: variable bitrate)."""
        return self.decode(self.latent(codes))

    def resynth(self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """Any-rate waveform -> 16 kHz reconstruction with the duration of the input."""
        wav16 = resample(np.asarray(wav, np.float32), sample_rate)
        padded, n = self._pad(wav16)
        return self.decode_codes(self.encode(padded))[:n]

    @property
    def codebooks(self) -> np.ndarray:
        """[num_quantizers, codebook_size, latent_dim] float32."""
        return np.asarray(self.model.codebooks)

    def _check_codes(self, codes: np.ndarray) -> None:
        if codes.ndim not in (2, 3) or codes.shape[-1] > self.num_quantizers:
            raise ValueError(
                f"codes must be [T, k] or [B, T, k] with k <= {self.num_quantizers}; got shape "
                f"{codes.shape}."
            )
        size = self.model.quantizer.codebook_size
        if codes.size and (codes.min() < 0 or codes.max() >= size):
            raise ValueError(f"code ids must lie in [0, {size}); got {codes.min()}..{codes.max()}.")


# ---------------------------------------------------------------------- file helpers (the CLI)
def encode_file(
    checkpoint: str, in_path: str, out_path: str, n_q: int | None = None, codec: Codec | None = None
) -> np.ndarray:
    """Audio file (any rate) -> ``.npy`` codes int16 [T, n_q]."""
    codec = codec or Codec.from_checkpoint(checkpoint)
    codes = codec.encode(load_audio(in_path), n_q).astype(np.int16)
    epath.Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with epath.Path(out_path).open("wb") as f:
        np.save(f, codes)
    return codes


def decode_file(
    checkpoint: str, in_path: str, out_path: str, codec: Codec | None = None
) -> np.ndarray:
    """``.npy`` codes [T, k] -> 16 kHz wav of T * 200 samples."""
    codec = codec or Codec.from_checkpoint(checkpoint)
    with epath.Path(in_path).open("rb") as f:
        codes = np.load(f)
    if codes.ndim == 1:
        codes = codes[:, None]
    wav = codec.decode_codes(codes.astype(np.int32))
    save_audio(out_path, wav)
    return wav


def resynth_file(
    checkpoint: str, in_path: str, out_path: str, codec: Codec | None = None
) -> np.ndarray:
    """Audio file (any rate) -> 16 kHz wav through the codec, same duration."""
    import soundfile as sf

    codec = codec or Codec.from_checkpoint(checkpoint)
    wav, sr = sf.read(str(in_path), dtype="float32", always_2d=True)
    out = codec.resynth(wav.mean(axis=1), sr)
    save_audio(out_path, out)
    return out


# ---------------------------------------------------------------------- datasets
def _dataset_info(dataset_dir: str | epath.Path) -> tuple[str, list[str]]:
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(str(dataset_dir))
    return builder.info.name, list(builder.info.splits.keys())


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def compute_latent_stats(
    codec: Codec,
    dataset_dir: str | epath.Path,
    split: str = "train",
    max_examples: int | None = None,
) -> dict[str, np.ndarray]:
    """Per-channel mean/std of z over (up to ``max_examples``) utterances of a split."""
    from naturalspeech2_jax.data import pipeline

    source = pipeline.open_split(dataset_dir, split)
    n = len(source) if max_examples is None else min(max_examples, len(source))
    wavs = (np.asarray(source[i]["audio"], np.float32) / 32768.0 for i in range(n))
    return codec_task.latent_statistics(codec.model, wavs)


def encode_dataset(
    codec_workdir: str | epath.Path,
    dataset_dir: str | epath.Path,
    out_dir: str | epath.Path,
    *,
    splits: Sequence[str] | None = None,
    bucket_frames: int = 50,
) -> epath.Path:
    """Copy a prepared dataset with int16 ``codes`` [frames, 16] added; returns the version dir.

    Utterances are zero-padded to a multiple of ``bucket_frames`` while encoding (bounding the
    number of compiled shapes) and the codes cut back to the utterance's frames; the writer
    checks codes, pitch and durations against the audio's frame count. Latent statistics of the
    train split are written as ``latent_stats.npz`` in the new dataset directory (and in the
    codec workdir when it has none yet).
    """
    from naturalspeech2_jax.data import pipeline
    from naturalspeech2_jax.data.tfds_builder import write_dataset

    codec = Codec.from_checkpoint(codec_workdir)
    name, all_splits = _dataset_info(dataset_dir)
    splits = list(splits or all_splits)
    dim = codec.model.quantizer.dim
    acc = {"sum": np.zeros(dim), "sq": np.zeros(dim), "n": 0}

    def encode_split(split: str):
        def gen():
            source = pipeline.open_split(dataset_dir, split)
            for i in range(len(source)):
                ex = source[i]
                n = pipeline.check_example(ex, where=f"{dataset_dir}[{split}][{i}]")
                wav = np.asarray(ex["audio"], np.float32) / 32768.0
                wav = codec_task.pad_to_frames(wav, bucket_frames)
                codes = codec.encode(wav)[:n]
                if split == "train":
                    z = codec.latent(codes).astype(np.float64)
                    acc["sum"] += z.sum(0)
                    acc["sq"] += (z**2).sum(0)
                    acc["n"] += n
                out = {k: ex[k] for k in ex if k not in ("id", "text", "speaker", "codes")}
                out.update(
                    id=_text(ex["id"]),
                    text=_text(ex["text"]),
                    speaker=_text(ex["speaker"]),
                    codes=codes.astype(np.int16),
                )
                yield out

        return gen

    out = write_dataset(
        out_dir,
        name,
        {s: encode_split(s) for s in splits},
        description=f"{name} with codec codes from {codec_workdir}",
        num_quantizers=codec.num_quantizers,
    )
    if acc["n"]:
        mean = acc["sum"] / acc["n"]
        std = np.sqrt(np.maximum(acc["sq"] / acc["n"] - mean**2, 1e-12))
        stats = {"mean": mean.astype(np.float32), "std": std.astype(np.float32), "frames": acc["n"]}
        codec_task.save_latent_stats(stats, out)
        if not (epath.Path(codec_workdir) / codec_task.LATENT_STATS_FILE).exists():
            codec_task.save_latent_stats(stats, codec_workdir)
    log.info("encoded %s -> %s (%s)", dataset_dir, out, ", ".join(splits))
    return out
