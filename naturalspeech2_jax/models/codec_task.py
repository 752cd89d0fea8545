"""The codec's training task: RVQ-GAN (generator = NeuralCodec, discriminators) in the generic loop.

Two parameter groups, updated in this order inside one jitted step:

1. ``discriminator``: hinge loss on real audio vs. the generator's (stop-gradient) reconstruction;
   zero (and skipped with ``lax.cond``) before ``disc.start_step``;
2. ``generator``: ``w_mel * multi-scale log-mel L1 + w_stft * multi-resolution STFT loss +
   w_commit * commitment + [after start_step] w_adv * hinge + w_fm * feature matching``. Its forward
   pass updates the EMA codebooks in place (the discriminator's forward never does, so every
   step updates them exactly once).

Data: ``config.data.dataset_dir`` (a prepared dataset) or, when empty, the embedded synthetic
corpus (``config.data.embedded_size``), built on first use; training reads the concatenation of
``config.data.train_splits`` ("train,cathy" on the shared data) as random crops, evaluation the
held-out speakers of ``config.data.eval_split`` ("heldout"; "dev" on the shared data).

Evaluation (``evaluate``) writes, for a few held-out utterances, wav files and log-mel PNGs
(reference and each bitrate) under ``<workdir>/samples/step_<k>/`` and returns PESQ-WB, STOI, mel
distance and SI-SDR (``naturalspeech2_jax.evaluation.codec_metrics``) at 4, 8 and 16 quantizers
(3.2, 6.4, 12.8 kbps), which the loop appends to ``metrics.jsonl`` as ``eval/<metric>_q<k>``.
It also refreshes, and ``finalize`` writes after the last step, ``<workdir>/latent_stats.npz``:
per-channel mean/std [latent_dim] of z = latent(encode(wav)) over training utterances (the
diffusion model's normalisation).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE
from naturalspeech2_jax.data.pipeline import split_names
from naturalspeech2_jax.models import codec_losses as L
from naturalspeech2_jax.models.codec import NeuralCodec
from naturalspeech2_jax.models.discriminators import CodecDiscriminators
from naturalspeech2_jax.train.task import ParamGroup, register_task

log = logging.getLogger(__name__)

LATENT_STATS_FILE = "latent_stats.npz"


# ------------------------------------------------------------------------------ model
class CodecGAN(nnx.Module):
    """The trained object: ``codec`` (generator) and ``discriminators``."""

    def __init__(self, config: Any, rngs: nnx.Rngs):
        m, d = config.model, config.disc
        self.codec = NeuralCodec(
            channels=m.channels,
            strides=tuple(m.strides),
            dilations=tuple(m.dilations),
            kernel_size=m.kernel_size,
            latent_dim=m.latent_dim,
            num_quantizers=m.num_quantizers,
            codebook_size=m.codebook_size,
            ema_decay=m.ema_decay,
            dead_code_threshold=m.dead_code_threshold,
            kmeans_iters=m.kmeans_iters,
            quantizer_dropout=m.quantizer_dropout,
            weight_norm=m.weight_norm,
            # Absent from configs written before the spectral codec existed: the waveform codec.
            kind=m.get("kind", "wave"),
            layers=tuple(m.get("layers", (4, 8))),
            mlp_ratio=m.get("mlp_ratio", 3),
            rngs=rngs,
        )
        self.discriminators = CodecDiscriminators(
            msd_scales=d.msd_scales,
            msd_channels=tuple(d.msd_channels),
            stft_fft_sizes=tuple(d.stft_fft_sizes),
            stft_channels=d.stft_channels,
            rngs=rngs,
        )


def build_codec(config: Any, rngs: nnx.Rngs | None = None) -> CodecGAN:
    return CodecGAN(config, rngs or nnx.Rngs(0))


DISC_FILTER = nnx.All(nnx.Param, nnx.PathContains("discriminators"))
GEN_FILTER = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("discriminators")))


# ------------------------------------------------------------------------------ data
def resolve_dataset_dir(config: Any) -> str:
    """The prepared dataset (TFDS version dir): ``config.data.dataset_dir`` or the embedded one."""
    from naturalspeech2_jax.data import embedded

    return embedded.resolve_dataset_dir(config)


def open_splits(dataset_dir: str, splits: str | Iterable[str]):
    """One random-access source over the concatenation of ``splits`` of a prepared dataset."""
    import grain

    from naturalspeech2_jax.data import pipeline

    sources = []
    for name in split_names(splits):
        try:
            sources.append(pipeline.open_split(dataset_dir, name))
        except (KeyError, ValueError) as e:
            raise ValueError(
                f"split {name!r} is not in {dataset_dir} ({e}); fix config.data.train_splits."
            ) from None
    if len(sources) == 1:
        return sources[0]
    return grain.MapDataset.concatenate([grain.MapDataset.source(s) for s in sources])


def _open_eval(dataset_dir: str, split: str, fallback: str):
    from naturalspeech2_jax.data import pipeline

    try:
        return pipeline.open_split(dataset_dir, split)
    except (KeyError, ValueError) as e:  # no such split: evaluate on training utterances
        log.warning("eval split %r not in %s (%s); using %r", split, dataset_dir, e, fallback)
        return pipeline.open_split(dataset_dir, fallback)


def _spread(n_total: int, n: int) -> list[int]:
    """``n`` indices spread evenly over ``range(n_total)`` (every speaker of a split, roughly)."""
    n = min(n, n_total)
    return [int(i * n_total / n) for i in range(n)]


# ------------------------------------------------------------------------------ metrics
METRICS = ("pesq", "stoi", "mel_distance", "si_sdr")


def quality_metrics(reference: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    """PESQ-WB, STOI, mel distance and SI-SDR (``evaluation.codec_metrics``); NaN on failure."""
    from naturalspeech2_jax.evaluation import codec_metrics as cm

    fns = {
        "pesq": lambda: cm.pesq_wb(reference, estimate, SAMPLE_RATE),
        "stoi": lambda: cm.stoi(reference, estimate, SAMPLE_RATE),
        "mel_distance": lambda: cm.mel_distance(reference, estimate, SAMPLE_RATE),
        "si_sdr": lambda: cm.si_sdr(reference, estimate),
    }
    out = {}
    for name, fn in fns.items():
        try:
            out[name] = float(fn())
        except Exception as err:  # a metric's failure must not stop training
            log.warning("codec metric %s failed: %s", name, err)
            out[name] = float("nan")
    return out


# ------------------------------------------------------------------------------ jitted helpers
@nnx.jit
def _encode(codec: NeuralCodec, wav: jax.Array) -> jax.Array:
    return codec.encode(wav)


@nnx.jit
def _decode_codes(codec: NeuralCodec, codes: jax.Array) -> jax.Array:
    return codec.decode(codec.latent(codes))


@nnx.jit
def _latent_from_codes(codec: NeuralCodec, codes: jax.Array) -> jax.Array:
    return codec.latent(codes)


@nnx.jit
def _decode_latent(codec: NeuralCodec, z: jax.Array) -> jax.Array:
    return codec.decode(z)


@nnx.jit
def _latent_of(codec: NeuralCodec, wav: jax.Array) -> jax.Array:
    return codec.latent(codec.encode(wav))


def pad_to_frames(wav: np.ndarray, multiple_frames: int = 1) -> np.ndarray:
    """Zero-pad ``wav`` [N] to a whole number of ``multiple_frames`` frames."""
    step = HOP_LENGTH * multiple_frames
    return np.pad(wav, (0, (-len(wav)) % step))


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
    acc: dict[str, Any] = {"sum": 0.0, "sq": 0.0, "n": 0}
    pending: list[tuple[np.ndarray, int]] = []  # (chunk audio, real frames in it)

    def flush():
        chunks = np.zeros((batch_chunks, chunk_frames * HOP_LENGTH), np.float32)
        for i, (c, _) in enumerate(pending):
            chunks[i] = c
        z = np.asarray(_latent_of(codec, jnp.asarray(chunks)), np.float64)
        for i, (_, n) in enumerate(pending):
            acc["sum"] = acc["sum"] + z[i, :n].sum(0)
            acc["sq"] = acc["sq"] + (z[i, :n] ** 2).sum(0)
            acc["n"] += n
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
    if not acc["n"]:
        raise ValueError("latent_statistics got no audio frames.")
    mean = acc["sum"] / acc["n"]
    std = np.sqrt(np.maximum(acc["sq"] / acc["n"] - mean**2, 1e-12))
    return {"mean": mean.astype(np.float32), "std": std.astype(np.float32), "frames": acc["n"]}


def save_latent_stats(stats: dict[str, np.ndarray], workdir: str | epath.Path) -> epath.Path:
    path = epath.Path(workdir) / LATENT_STATS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.savez(f, mean=stats["mean"], std=stats["std"], frames=np.int64(stats["frames"]))
    return path


def _write_wav(path: epath.Path, wav: np.ndarray) -> None:
    import soundfile as sf

    sf.write(str(path), np.clip(wav, -1, 1), SAMPLE_RATE, subtype="PCM_16")


def _plot_mels(path: epath.Path, panels: dict[str, np.ndarray]) -> None:
    """One log-mel spectrogram panel per waveform, stacked, written as a PNG."""
    import matplotlib

    from naturalspeech2_jax.evaluation import codec_metrics

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.2 * len(panels)), squeeze=False)
    for ax, (title, wav) in zip(axes[:, 0], panels.items(), strict=True):
        ax.imshow(codec_metrics.log_mel(wav), origin="lower", aspect="auto", cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel")
    axes[-1, 0].set_xlabel("frame (12.5 ms)")
    fig.tight_layout()
    fig.savefig(str(path), dpi=80)
    plt.close(fig)


# ------------------------------------------------------------------------------ the task
@register_task("codec")
class CodecTask:
    """Model, losses, data and evaluation of the codec (config: ``configs/codec.py``)."""

    def __init__(self, config: Any):
        self.config = config

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        return CodecGAN(self.config, rngs)

    # -------------------------------------------------------------- losses
    def _adv_on(self, step: jax.Array) -> jax.Array:
        return step >= int(self.config.disc.start_step)

    def _gan_in_run(self) -> bool:
        """False when the GAN never starts within total_steps (e.g. the quickstart's budget): its
        branches are then left out of the graph, which halves the step's XLA compile time."""
        return int(self.config.disc.start_step) < int(self.config.total_steps)

    def discriminator_loss(self, model: CodecGAN, batch, rng, step):
        wav, mask = batch["audio"], batch["frame_mask"]

        def active():
            out = model.codec(wav, mask, rng=rng, train=True, update_codebooks=False)
            fake = jax.lax.stop_gradient(out["audio"])
            real_logits, _ = model.discriminators(wav)
            fake_logits, _ = model.discriminators(fake)
            loss = L.hinge_d_loss(real_logits, fake_logits)
            real_score = jnp.mean(jnp.stack([jnp.mean(x) for x in real_logits]))
            fake_score = jnp.mean(jnp.stack([jnp.mean(x) for x in fake_logits]))
            return loss, real_score, fake_score

        zero = jnp.zeros((), jnp.float32)
        if not self._gan_in_run():
            return zero, {"hinge": zero, "real_logit": zero, "fake_logit": zero}
        loss, real, fake = jax.lax.cond(self._adv_on(step), active, lambda: (zero, zero, zero))
        return loss, {"hinge": loss, "real_logit": real, "fake_logit": fake}

    def generator_loss(self, model: CodecGAN, batch, rng, step):
        lc = self.config.loss
        wav, mask = batch["audio"], batch["frame_mask"]
        out = model.codec(wav, mask, rng=rng, train=True)
        y = out["audio"]
        mel = L.multi_scale_mel_loss(wav, y, tuple(lc.mel_scales), lc.n_mels)
        spec = L.multi_resolution_stft_loss(wav, y, [tuple(r) for r in lc.stft_resolutions])
        commit = out["commit_loss"]

        def adversarial():
            real_logits, real_feats = model.discriminators(wav)
            fake_logits, fake_feats = model.discriminators(y)
            return L.hinge_g_loss(fake_logits), L.feature_matching_loss(real_feats, fake_feats)

        zero = jnp.zeros((), jnp.float32)
        on = self._adv_on(step)
        if self._gan_in_run():
            adv, fm = jax.lax.cond(on, adversarial, lambda: (zero, zero))
        else:
            adv, fm = zero, zero
        loss = (
            lc.mel_weight * mel
            + lc.stft_weight * spec
            + lc.commit_weight * commit
            + on * (lc.adv_weight * adv + lc.fm_weight * fm)
        )
        metrics = {
            "mel_loss": mel,
            "stft_loss": spec,
            "commit_loss": commit,
            "adv_loss": adv,
            "fm_loss": fm,
            "l1_wave": jnp.mean(jnp.abs(wav - y)),
            # Real (unpadded) audio in this batch: x steps_per_sec = audio seconds per second.
            "audio_seconds": jnp.sum(mask) * (HOP_LENGTH / SAMPLE_RATE),
        }
        for key in ("perplexity", "perplexity_q0", "code_usage", "dead_codes_replaced"):
            metrics[f"vq/{key}"] = out[key]
        metrics["vq/n_quantizers"] = out["n_quantizers"]
        return loss, metrics

    def param_groups(self) -> list[ParamGroup]:
        c = self.config
        return [
            ParamGroup("discriminator", DISC_FILTER, self.discriminator_loss, c.optim_d),
            ParamGroup("generator", GEN_FILTER, self.generator_loss, c.optim),
        ]

    # -------------------------------------------------------------- data
    @functools.cached_property
    def dataset_dir(self) -> str:
        return resolve_dataset_dir(self.config)

    def train_splits(self) -> list[str]:
        d = self.config.data
        return split_names(d.get("train_splits") or d.get("train_split") or "train")

    def abstract_batch(self, global_batch: int) -> dict[str, jax.ShapeDtypeStruct]:
        """The batch the losses read: random crops of ``data.crop_frames`` frames."""
        frames = int(self.config.data.crop_frames)
        return {
            "audio": jax.ShapeDtypeStruct((global_batch, frames * HOP_LENGTH), np.float32),
            "frame_mask": jax.ShapeDtypeStruct((global_batch, frames), np.float32),
        }

    def train_iterator(self, *, seed, local_batch_size, process_index, process_count):
        from naturalspeech2_jax.data import pipeline

        d = self.config.data
        return pipeline.crop_iterator(
            open_splits(self.dataset_dir, self.train_splits()),
            crop_frames=int(d.crop_frames),
            seed=seed,
            local_batch_size=local_batch_size,
            process_index=process_index,
            process_count=process_count,
            num_threads=int(d.get("num_threads", 2)),
        )

    # -------------------------------------------------------------- evaluation
    @functools.cached_property
    def _eval_batch(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(audio [n, max_frames*200] float, frames [n], ids) of held-out utterances."""
        e = self.config.eval
        source = _open_eval(
            self.dataset_dir, str(self.config.data.eval_split), self.train_splits()[0]
        )
        max_len = int(e.max_frames) * HOP_LENGTH
        wavs, frames, ids = [], [], []
        for i in _spread(len(source), int(e.num_examples)):
            ex = source[i]
            a = np.asarray(ex["audio"], np.float32)[:max_len] / 32768.0
            frames.append(len(a) // HOP_LENGTH)
            wavs.append(np.pad(a, (0, max_len - len(a))))
            ids.append(_text(ex.get("id", str(i))))
        return np.stack(wavs), np.asarray(frames), ids

    def evaluate(self, model: CodecGAN, step: int, workdir: str) -> dict[str, float]:
        """Samples, mel PNGs and PESQ/STOI/mel distance/SI-SDR at ``eval.quantizers`` bitrates."""
        e = self.config.eval
        codec = model.codec
        audio, frames, ids = self._eval_batch
        codes = _encode(codec, jnp.asarray(audio))
        out_dir = epath.Path(workdir) / "samples" / f"step_{step}"
        out_dir.mkdir(parents=True, exist_ok=True)
        metrics: dict[str, float] = {}
        decoded = {}
        for k in e.quantizers:
            k = min(int(k), codec.num_quantizers)
            decoded[k] = np.asarray(_decode_codes(codec, codes[..., :k]))
            rows = [
                quality_metrics(audio[i, : n * HOP_LENGTH], decoded[k][i, : n * HOP_LENGTH])
                for i, n in enumerate(frames)
            ]
            for name in METRICS:
                vals = [r[name] for r in rows if np.isfinite(r[name])]
                metrics[f"{name}_q{k}"] = float(np.mean(vals)) if vals else float("nan")
        for i in range(min(int(e.num_samples), len(frames))):
            n = frames[i] * HOP_LENGTH
            _write_wav(out_dir / f"ex{i}_ref.wav", audio[i, :n])
            panels = {f"reference ({ids[i]})": audio[i, :n]}
            for k, dec in decoded.items():
                _write_wav(out_dir / f"ex{i}_q{k}.wav", dec[i, :n])
                panels[f"{k} quantizers ({bitrate_kbps(k):.1f} kbps)"] = dec[i, :n]
            _plot_mels(out_dir / f"ex{i}_mel.png", panels)
        if int(e.stats_examples) > 0:
            self.write_latent_stats(codec, workdir)
        return metrics

    def write_latent_stats(self, codec: NeuralCodec, workdir: str) -> epath.Path:
        """Latent statistics over up to ``eval.stats_examples`` training utterances."""
        source = open_splits(self.dataset_dir, self.train_splits())
        idx = _spread(len(source), int(self.config.eval.stats_examples))
        wavs = (np.asarray(source[i]["audio"], np.float32) / 32768.0 for i in idx)
        return save_latent_stats(latent_statistics(codec, wavs), workdir)

    def finalize(self, model: CodecGAN, workdir: str) -> None:
        """After training: the latent statistics saved beside the checkpoint (latent_stats.npz)."""
        path = self.write_latent_stats(model.codec, workdir)
        log.info("latent statistics written to %s", path)

    def param_count_groups(self, model: CodecGAN) -> dict[str, int]:
        def count(mod):
            return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(mod, nnx.Param))))

        counts = {
            "encoder": count(model.codec.encoder),
            "quantizer": count(model.codec.quantizer),
            "decoder": count(model.codec.decoder),
            "discriminators": count(model.discriminators),
        }
        return {k: v for k, v in counts.items() if v or k != "quantizer"}


def bitrate_kbps(n_quantizers: int, codebook_size: int = 1024) -> float:
    """Nominal bitrate of ``n_quantizers`` codes per 12.5 ms frame (10 bits each for 1024 codes)."""
    return n_quantizers * float(np.log2(codebook_size)) * SAMPLE_RATE / HOP_LENGTH / 1000.0


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def codebook_entries(config: Any) -> int:
    """Size of the EMA codebooks (not gradient-trained, so not in the parameter counts)."""
    m = config.model
    return int(m.num_quantizers * m.codebook_size * m.latent_dim)
