"""The codec's training task: RVQ-GAN (generator = NeuralCodec, discriminators) in the generic loop.

Two parameter groups, updated in this order inside one jitted step:

1. ``discriminator``: hinge loss on real audio vs. the generator's (stop-gradient) reconstruction;
   zero (and skipped with ``lax.cond``) before ``disc.start_step``;
2. ``generator``: ``w_mel * multi-scale log-mel L1 + w_stft * multi-resolution STFT loss +
   w_commit * commitment + [after start_step] w_adv * hinge + w_fm * feature matching``. Its forward
   pass updates the EMA codebooks in place (the discriminator's forward never does, so every
   step updates them exactly once).

Evaluation writes, for a few held-out utterances, wav files and mel PNGs under
``<workdir>/samples/step_<k>/`` and returns mel distance and SI-SDR at 4, 8 and 16 quantizers (and
PESQ/STOI when ``naturalspeech2_jax.evaluation.codec_metrics`` provides them); it also refreshes
``<workdir>/latent_stats.npz`` (per-channel mean/std of z over training utterances: the diffusion
model's normalisation).
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
    """The prepared dataset (TFDS version dir) the codec trains on.

    Single place where the dataset location is decided, so the embedded synthetic corpus can be
    substituted when ``config.data.dataset_dir`` is empty.
    """
    path = str(config.data.get("dataset_dir", "") or "")
    if not path:
        raise ValueError(
            "config.data.dataset_dir is empty: prepare a dataset with launch/prepare_data.py and "
            "pass --config.data.dataset_dir=DIR/<name>/<version>."
        )
    return path


def _open(dataset_dir: str, split: str, fallback: str = "train"):
    from naturalspeech2_jax.data import pipeline

    try:
        return pipeline.open_split(dataset_dir, split)
    except (KeyError, ValueError) as e:  # no such split: evaluate on the first training items
        log.warning("split %r not in %s (%s); using %r", split, dataset_dir, e, fallback)
        return pipeline.open_split(dataset_dir, fallback)


# ------------------------------------------------------------------------------ numpy metrics
def _np_log_mel(x: np.ndarray, n_fft: int = 1024, hop: int = 256, n_mels: int = 80) -> np.ndarray:
    pad = n_fft // 2
    xp = np.pad(np.asarray(x, np.float64), (pad, pad), mode="reflect")
    n_frames = 1 + len(x) // hop
    idx = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None]
    spec = np.abs(np.fft.rfft(xp[idx] * L.hann(n_fft), axis=-1))
    return np.log(np.maximum(spec @ L.mel_filterbank(n_fft, n_mels), 1e-5))


def mel_distance(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Mean L1 distance between natural-log 80-band mel spectrograms (1024-point FFT, hop 256)."""
    n = min(len(reference), len(estimate))
    return float(np.mean(np.abs(_np_log_mel(reference[:n]) - _np_log_mel(estimate[:n]))))


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019), zero-mean signals."""
    n = min(len(reference), len(estimate))
    r = np.asarray(reference[:n], np.float64) - np.mean(reference[:n])
    e = np.asarray(estimate[:n], np.float64) - np.mean(estimate[:n])
    target = (np.dot(e, r) / (np.dot(r, r) + 1e-12)) * r
    noise = e - target
    return float(10 * np.log10((np.dot(target, target) + 1e-12) / (np.dot(noise, noise) + 1e-12)))


def _external_metrics() -> dict[str, Any]:
    """PESQ / STOI from the evaluation package when it is present (it needs extra wheels)."""
    try:
        from naturalspeech2_jax.evaluation import codec_metrics
    except ImportError:
        return {}
    out = {}
    for key, names in (("pesq", ("pesq_wb", "pesq")), ("stoi", ("stoi",))):
        for name in names:
            fn = getattr(codec_metrics, name, None)
            if callable(fn):
                out[key] = fn
                break
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
    codec: NeuralCodec, waveforms: Iterable[np.ndarray], chunk_frames: int = 400
) -> dict[str, np.ndarray]:
    """Per-channel mean/std of z = latent(encode(wav)) over all real frames of ``waveforms``.

    Each waveform is cut into chunks of ``chunk_frames`` (one compiled shape); padded frames are
    excluded. Returns {"mean": [D], "std": [D], "frames": int}.
    """
    total = sq = None
    count = 0
    for wav in waveforms:
        n = len(wav) // HOP_LENGTH
        padded = pad_to_frames(np.asarray(wav, np.float32)[: n * HOP_LENGTH], chunk_frames)
        chunks = padded.reshape(-1, chunk_frames * HOP_LENGTH)
        z = np.asarray(_latent_of(codec, jnp.asarray(chunks)), np.float64)
        z = z.reshape(-1, z.shape[-1])[:n]
        total = z.sum(0) if total is None else total + z.sum(0)
        sq = (z**2).sum(0) if sq is None else sq + (z**2).sum(0)
        count += n
    if not count:
        raise ValueError("latent_statistics got no audio frames.")
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean**2, 1e-12))
    return {"mean": mean.astype(np.float32), "std": std.astype(np.float32), "frames": count}


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.2 * len(panels)), squeeze=False)
    for ax, (title, wav) in zip(axes[:, 0], panels.items(), strict=True):
        ax.imshow(_np_log_mel(wav).T, origin="lower", aspect="auto", cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel")
    axes[-1, 0].set_xlabel("frame (16 ms)")
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
        adv, fm = jax.lax.cond(on, adversarial, lambda: (zero, zero))
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
    def train_iterator(self, *, seed, local_batch_size, process_index, process_count):
        from naturalspeech2_jax.data import pipeline

        d = self.config.data
        source = pipeline.open_split(resolve_dataset_dir(self.config), d.train_split)
        return pipeline.crop_iterator(
            source,
            crop_frames=int(d.crop_frames),
            seed=seed,
            local_batch_size=local_batch_size,
            process_index=process_index,
            process_count=process_count,
            num_threads=int(d.get("num_threads", 2)),
        )

    # -------------------------------------------------------------- evaluation
    @functools.cached_property
    def _eval_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """(audio [n, max_frames*200] float, frames [n]) of the first held-out utterances."""
        e = self.config.eval
        source = _open(resolve_dataset_dir(self.config), self.config.data.eval_split)
        n = min(int(e.num_examples), len(source))
        max_len = int(e.max_frames) * HOP_LENGTH
        wavs, frames = [], []
        for i in range(n):
            a = np.asarray(source[i]["audio"], np.float32)[:max_len] / 32768.0
            frames.append(len(a) // HOP_LENGTH)
            wavs.append(np.pad(a, (0, max_len - len(a))))
        return np.stack(wavs), np.asarray(frames)

    def evaluate(self, model: CodecGAN, step: int, workdir: str) -> dict[str, float]:
        e = self.config.eval
        codec = model.codec
        audio, frames = self._eval_batch
        codes = _encode(codec, jnp.asarray(audio))
        ext = _external_metrics()
        out_dir = epath.Path(workdir) / "samples" / f"step_{step}"
        out_dir.mkdir(parents=True, exist_ok=True)
        metrics: dict[str, float] = {}
        decoded = {}
        for k in e.quantizers:
            k = min(int(k), codec.num_quantizers)
            decoded[k] = np.asarray(_decode_codes(codec, codes[..., :k]))
            vals: dict[str, list[float]] = {"mel_distance": [], "si_sdr": []}
            for i, n in enumerate(frames):
                ref, est = audio[i, : n * HOP_LENGTH], decoded[k][i, : n * HOP_LENGTH]
                vals["mel_distance"].append(mel_distance(ref, est))
                vals["si_sdr"].append(si_sdr(ref, est))
                for name, fn in ext.items():
                    try:
                        vals.setdefault(name, []).append(float(fn(ref, est, SAMPLE_RATE)))
                    except Exception as err:  # a metric's failure must not stop training
                        log.warning("codec metric %s failed: %s", name, err)
            for name, v in vals.items():
                if v:
                    metrics[f"{name}_q{k}"] = float(np.mean(v))
        for i in range(min(int(e.num_samples), len(frames))):
            n = frames[i] * HOP_LENGTH
            _write_wav(out_dir / f"ex{i}_ref.wav", audio[i, :n])
            panels = {"reference": audio[i, :n]}
            for k, dec in decoded.items():
                _write_wav(out_dir / f"ex{i}_q{k}.wav", dec[i, :n])
                panels[f"{k} quantizers ({k * 0.8:.1f} kbps)"] = dec[i, :n]
            _plot_mels(out_dir / f"ex{i}_mel.png", panels)
        if int(e.stats_examples) > 0:
            self.write_latent_stats(codec, workdir)
        return metrics

    def write_latent_stats(self, codec: NeuralCodec, workdir: str) -> epath.Path:
        """Latent statistics over up to ``eval.stats_examples`` training utterances."""
        d = self.config.data
        source = _open(resolve_dataset_dir(self.config), d.train_split)
        n = min(int(self.config.eval.stats_examples), len(source))
        wavs = (np.asarray(source[i]["audio"], np.float32) / 32768.0 for i in range(n))
        return save_latent_stats(latent_statistics(codec, wavs), workdir)

    def finalize(self, model: CodecGAN, workdir: str) -> None:
        """After training: refresh the latent statistics saved beside the checkpoint."""
        self.write_latent_stats(model.codec, workdir)

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


def codebook_entries(config: Any) -> int:
    """Size of the EMA codebooks (not gradient-trained, so not in the parameter counts)."""
    m = config.model
    return int(m.num_quantizers * m.codebook_size * m.latent_dim)
