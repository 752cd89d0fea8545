"""Python API of a trained codec: load, encode, decode, resynthesise.

A codec run is the ``--workdir`` of ``launch/train.py --config=configs/codec.py[:preset]``: it holds
``checkpoints/`` (Orbax), ``config.json`` and, once training finished (or at every evaluation),
``latent_stats.npz``. Everything below uses the EMA weights when the run kept them. A model folder
written by ``launch/export.py`` (or its ``codec/`` folder) loads like a run (``exported.py``).

What NaturalSpeech 2 uses (all arrays numpy; batch axes optional)::

    from naturalspeech2_jax.inference.codec import Codec
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

Whole datasets: ``inference/codes_dataset.py``.

``load_codec(checkpoint)`` returns the ``codec(wav, n_quantizers) -> wav`` callable that
``naturalspeech2_jax.evaluation`` expects. The same functions back ``launch/codec.py``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import nnx

from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE
from naturalspeech2_jax.audio.io import AudioError, load_audio, resample, save_audio
from naturalspeech2_jax.data.codes import LATENT_STATS_FILE, read_latent_stats
from naturalspeech2_jax.inference import exported
from naturalspeech2_jax.models.codec import (
    NeuralCodec,
    decode_latent_jit,
    encode_jit,
    latent_from_codes_jit,
    latent_of_wave_jit,
    neural_codec_from_config,
)
from naturalspeech2_jax.train.restore import latest_step, restore_meta, restore_params

log = logging.getLogger(__name__)


class CheckpointError(FileNotFoundError):
    """A codec checkpoint directory that is missing, empty or not a codec run."""


class AudioReadError(AudioError):
    """An input file that cannot be read as codes (audio files raise ``audio.io.AudioError``)."""


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
        step = latest_step(workdir)
        if step is None:
            raise CheckpointError(
                f"{workdir} has neither config.json nor a checkpoint under checkpoints/; "
                f"{_train_hint()}."
            )
        data = restore_meta(workdir, step)["config"]
    if data.get("task") != "codec":
        raise CheckpointError(
            f"{workdir} is a {data.get('task')!r} run, not a codec run; {_train_hint()}."
        )
    return ml_collections.ConfigDict(data)


def load_latent_stats(workdir: str | epath.Path) -> dict[str, np.ndarray] | None:
    """``<workdir>/latent_stats.npz`` as {"mean": [D], "std": [D], "frames": n}, or None."""
    path = epath.Path(workdir) / LATENT_STATS_FILE
    if not path.exists():
        return None
    with path.open("rb") as f:
        return dict(np.load(f))


def abstract_codec(config: ml_collections.ConfigDict) -> NeuralCodec:
    """The codec of a codec run's config with ShapeDtypeStruct weights (restoring fills them)."""
    return nnx.eval_shape(lambda: neural_codec_from_config(config.model, nnx.Rngs(0)))


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
        """Load the latest checkpoint of a codec run (EMA weights when the run kept them): the
        generator's weights alone, restored into the codec (no discriminators, no optimizer).
        A model folder of ``launch/export.py``, or its ``codec/`` folder, loads its codec."""
        workdir = epath.Path(workdir)
        part = exported.locate(workdir, "codec")
        if part is not None:  # a folder of launch/export.py (or its codec/): numpy weights
            config = load_config(part)
            model = exported.load_weights(part, abstract_codec(config))
            step = int(exported.part_info(part)["step"])
            return cls(model, config, exported.read_latent_stats(part), str(part), step)
        config = load_config(workdir)
        if latest_step(workdir) is None:
            raise CheckpointError(
                f"{workdir}/checkpoints holds no checkpoint; train the codec first or "
                f"{_train_hint()}."
            )
        model, step = restore_params(workdir, abstract_codec(config), prefix=("codec",))
        return cls(model, config, load_latent_stats(workdir), str(workdir), int(step))

    # ------------------------------------------------------------------ core
    def padded_frames(self, frames: int) -> int:
        """Frames padded up to a multiple of ``bucket_frames`` (bounds the compiled shapes): what
        ``encode`` pads a waveform of ``frames`` frames to (``codes_dataset`` batches by it)."""
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
        padded = np.pad(batch, ((0, 0), (0, self.padded_frames(t) * self.hop - batch.shape[-1])))
        codes = np.asarray(encode_jit(self.model, jnp.asarray(padded)), np.int32)[:, :t]
        if n_q is not None:
            codes = codes[..., :n_q]
        return codes if wav.ndim == 2 else codes[0]

    def latent(self, codes: np.ndarray) -> np.ndarray:
        """Codes [T, k] (or [B, T, k], k <= 16) -> z [T, 256]: the sum of quantized embeddings."""
        codes = np.asarray(codes)
        self._check_codes(codes)
        batch = codes if codes.ndim == 3 else codes[None]
        t = batch.shape[1]
        batch = np.pad(batch, ((0, 0), (0, self.padded_frames(t) - t), (0, 0)))
        z = np.asarray(latent_from_codes_jit(self.model, jnp.asarray(batch, jnp.int32)))
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
        batch = np.pad(batch, ((0, 0), (0, self.padded_frames(t) - t), (0, 0)))
        wav = np.asarray(decode_latent_jit(self.model, jnp.asarray(batch)))
        wav = wav[:, : t * self.hop]
        return wav if z.ndim == 3 else wav[0]

    def decode_codes(self, codes: np.ndarray) -> np.ndarray:
        """Codes [T, k] -> waveform [T * 200] (any k = 1..16: variable bitrate)."""
        return self.decode(self.latent(codes))

    def resynth(
        self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE, n_q: int | None = None
    ) -> np.ndarray:
        """Any-rate waveform -> 16 kHz reconstruction with the duration of the input."""
        wav16 = resample(np.asarray(wav, np.float32), sample_rate, SAMPLE_RATE)
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
@dataclasses.dataclass(frozen=True)
class CodecAssets:
    """What NS2 needs from a trained codec."""

    codebooks: np.ndarray  # float32 [R, K, D]: codebooks[j, code] = embedding
    latent_stats: dict[str, np.ndarray]  # {"mean": [D], "std": [D]}
    decode: Callable[[np.ndarray], np.ndarray]  # z [B, T, D] -> 16 kHz waveform [B, T * 200]
    checkpoint: str


def load_codec_assets(checkpoint: str, dataset_dir: str | None = None) -> CodecAssets:
    """A codec run (EMA weights) as NS2 uses it. Latent statistics: the codes dataset's
    ``latent_stats.npz`` (computed over its training splits), else the codec run's."""
    codec = Codec.from_checkpoint(checkpoint)
    stats = read_latent_stats(epath.Path(dataset_dir) / LATENT_STATS_FILE) if dataset_dir else None
    if stats is None and codec.latent_stats is not None:
        stats = {k: np.asarray(codec.latent_stats[k], np.float32) for k in ("mean", "std")}
    if stats is None:
        raise FileNotFoundError(
            f"no {LATENT_STATS_FILE} beside {dataset_dir} nor in {checkpoint}; write it with "
            f"python launch/codec.py stats --checkpoint {checkpoint} DATASET_DIR."
        )
    return CodecAssets(np.asarray(codec.codebooks, np.float32), stats, codec.decode, checkpoint)


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
    wav = load_audio(in_path)  # resampled to 16 kHz: the output keeps the input's duration
    codec = codec or Codec.from_checkpoint(checkpoint)
    out = codec.resynth(wav, SAMPLE_RATE, n_q)
    save_audio(out_path, out)
    return out


# ---------------------------------------------------------------------- latent statistics
def pad_to_frames(wav: np.ndarray, multiple_frames: int = 1) -> np.ndarray:
    """Zero-pad ``wav`` [N] to a whole number of ``multiple_frames`` frames."""
    step = HOP_LENGTH * multiple_frames
    return np.pad(wav, (0, (-len(wav)) % step))


class LatentMoments:
    """Running per-channel sums of z and z**2 over frames: the latent statistics of a corpus."""

    def __init__(self):
        self.sum, self.sq, self.frames = 0.0, 0.0, 0

    def add(self, z: np.ndarray) -> None:
        """Frames z [n, D] (float64 keeps the sums exact enough over hours of audio)."""
        z = np.asarray(z, np.float64)
        self.add_sums(z.sum(0), (z**2).sum(0), len(z))

    def add_sums(self, total: np.ndarray, squares: np.ndarray, frames: int) -> None:
        """Per-channel sums of z and z**2 over ``frames`` frames, summed elsewhere (rows of a
        batch on the devices, another host's moments). Moments merge by adding sums, never by
        averaging statistics: the merged mean and std are those of all the frames."""
        self.sum = self.sum + np.asarray(total, np.float64)
        self.sq = self.sq + np.asarray(squares, np.float64)
        self.frames += int(frames)

    def stats(self) -> dict[str, Any]:
        """{"mean": [D], "std": [D], "frames": n} as float32."""
        mean = self.sum / self.frames
        std = np.sqrt(np.maximum(self.sq / self.frames - mean**2, 1e-12))
        return {
            "mean": mean.astype(np.float32),
            "std": std.astype(np.float32),
            "frames": self.frames,
        }


def latent_statistics(
    codec: NeuralCodec,
    waveforms: Iterable[np.ndarray],
    chunk_frames: int = 400,
    batch_chunks: int = 4,
) -> dict[str, np.ndarray]:
    """Per-channel mean/std of z = latent(encode(wav)) over all real frames of ``waveforms``.

    Waveforms are cut into chunks of ``chunk_frames`` encoded ``batch_chunks`` at a time (one
    compiled shape whatever the lengths); padded frames are excluded. Returns
    {"mean": [D], "std": [D], "frames": int}.
    """
    moments = LatentMoments()
    pending: list[tuple[np.ndarray, int]] = []  # (chunk audio, real frames in it)

    def flush():
        chunks = np.zeros((batch_chunks, chunk_frames * HOP_LENGTH), np.float32)
        for i, (c, _) in enumerate(pending):
            chunks[i] = c
        z = np.asarray(latent_of_wave_jit(codec, jnp.asarray(chunks)), np.float64)
        for i, (_, n) in enumerate(pending):
            moments.add(z[i, :n])
        pending.clear()

    for wav in waveforms:
        n = len(wav) // HOP_LENGTH
        padded = pad_to_frames(np.asarray(wav, np.float32)[: n * HOP_LENGTH], chunk_frames)
        for j, chunk in enumerate(padded.reshape(-1, chunk_frames * HOP_LENGTH)):
            pending.append((chunk, min(chunk_frames, n - j * chunk_frames)))
            if len(pending) == batch_chunks:
                flush()
    if pending:
        flush()
    if not moments.frames:
        raise ValueError("latent_statistics got no audio frames.")
    return moments.stats()


def save_latent_stats(stats: dict[str, np.ndarray], workdir: str | epath.Path) -> epath.Path:
    path = epath.Path(workdir) / LATENT_STATS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.savez(f, mean=stats["mean"], std=stats["std"], frames=np.int64(stats["frames"]))
    return path
