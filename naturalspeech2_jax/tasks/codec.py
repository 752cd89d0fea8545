"""The codec's training task: RVQ-GAN (generator = NeuralCodec, discriminators) in the generic loop.

Two parameter groups, updated in this order inside one jitted step:

1. ``discriminator``: hinge loss on real audio vs. the generator's (stop-gradient) reconstruction;
   zero (and skipped with ``lax.cond``) before ``disc.start_step``;
2. ``generator``: ``w_mel * multi-scale log-mel L1 + w_stft * multi-resolution STFT loss +
   w_commit * commitment + w_complex * compressed complex STFT loss + [after start_step]
   w_adv * hinge + w_fm * feature matching``. Its forward pass updates the EMA codebooks in
   place (the discriminator's forward never does, so every step updates them exactly once).

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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE
from naturalspeech2_jax.audio.io import save_audio
from naturalspeech2_jax.data import embedded, pipeline
from naturalspeech2_jax.data.codes import as_text
from naturalspeech2_jax.data.pipeline import split_names
from naturalspeech2_jax.evaluation import codec_metrics as cm
from naturalspeech2_jax.inference.codec import latent_statistics, save_latent_stats
from naturalspeech2_jax.inference.plots import plot_mels
from naturalspeech2_jax.models import codec_losses as L
from naturalspeech2_jax.models.codec import (
    CodecGAN,
    NeuralCodec,
    decode_codes_jit,
    encode_jit,
)
from naturalspeech2_jax.train.task import ParamGroup

log = logging.getLogger(__name__)

DISC_FILTER = nnx.All(nnx.Param, nnx.PathContains("discriminators"))
GEN_FILTER = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("discriminators")))


# ------------------------------------------------------------------------------ metrics
METRICS = ("pesq", "stoi", "mel_distance", "si_sdr")


def quality_metrics(reference: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    """PESQ-WB, STOI, mel distance and SI-SDR (``evaluation.codec_metrics``); NaN on failure."""
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


# ------------------------------------------------------------------------------ the task
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
        # Phase-aware term (off unless the config sets it; checkpoints from before it read 0).
        complex_weight = float(lc.get("complex_weight", 0.0))
        cplx = (
            L.compressed_complex_loss(wav, y, [tuple(r) for r in lc.stft_resolutions])
            if complex_weight
            else jnp.zeros((), jnp.float32)
        )

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
            + complex_weight * cplx
            + on * (lc.adv_weight * adv + lc.fm_weight * fm)
        )
        metrics = {
            "mel_loss": mel,
            "stft_loss": spec,
            "commit_loss": commit,
            "complex_loss": cplx,
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
        return embedded.resolve_dataset_dir(self.config)

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
        d = self.config.data
        return pipeline.crop_iterator(
            pipeline.open_splits(self.dataset_dir, self.train_splits()),
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
        source, _ = pipeline.open_eval_split(
            self.dataset_dir, str(self.config.data.eval_split), self.train_splits()[0]
        )
        max_len = int(e.max_frames) * HOP_LENGTH
        wavs, frames, ids = [], [], []
        for i in pipeline.spread_indices(len(source), int(e.num_examples)):
            ex = source[i]
            a = np.asarray(ex["audio"], np.float32)[:max_len] / 32768.0
            frames.append(len(a) // HOP_LENGTH)
            wavs.append(np.pad(a, (0, max_len - len(a))))
            ids.append(as_text(ex.get("id", str(i))))
        return np.stack(wavs), np.asarray(frames), ids

    def evaluate(self, model: CodecGAN, step: int, workdir: str) -> dict[str, float]:
        """Samples, mel PNGs and PESQ/STOI/mel distance/SI-SDR at ``eval.quantizers`` bitrates."""
        e = self.config.eval
        codec = model.codec
        audio, frames, ids = self._eval_batch
        codes = encode_jit(codec, jnp.asarray(audio))
        out_dir = epath.Path(workdir) / "samples" / f"step_{step}"
        out_dir.mkdir(parents=True, exist_ok=True)
        metrics: dict[str, float] = {}
        decoded = {}
        for k in e.quantizers:
            k = min(int(k), codec.num_quantizers)
            decoded[k] = np.asarray(decode_codes_jit(codec, codes[..., :k]))
            rows = [
                quality_metrics(audio[i, : n * HOP_LENGTH], decoded[k][i, : n * HOP_LENGTH])
                for i, n in enumerate(frames)
            ]
            for name in METRICS:
                vals = [r[name] for r in rows if np.isfinite(r[name])]
                metrics[f"{name}_q{k}"] = float(np.mean(vals)) if vals else float("nan")
        for i in range(min(int(e.num_samples), len(frames))):
            n = frames[i] * HOP_LENGTH
            save_audio(out_dir / f"ex{i}_ref.wav", audio[i, :n])
            panels = {f"reference ({ids[i]})": audio[i, :n]}
            for k, dec in decoded.items():
                save_audio(out_dir / f"ex{i}_q{k}.wav", dec[i, :n])
                panels[f"{k} quantizers ({bitrate_kbps(k):.1f} kbps)"] = dec[i, :n]
            plot_mels(out_dir / f"ex{i}_mel.png", panels)
        if int(e.stats_examples) > 0:
            self.write_latent_stats(codec, workdir)
        return metrics

    def write_latent_stats(self, codec: NeuralCodec, workdir: str) -> epath.Path:
        """Latent statistics over up to ``eval.stats_examples`` training utterances."""
        source = pipeline.open_splits(self.dataset_dir, self.train_splits())
        idx = pipeline.spread_indices(len(source), int(self.config.eval.stats_examples))
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


def codebook_entries(config: Any) -> int:
    """Size of the EMA codebooks (not gradient-trained, so not in the parameter counts)."""
    m = config.model
    return int(m.num_quantizers * m.codebook_size * m.latent_dim)


Task = CodecTask  # what train.task.make_task instantiates for config.task == "codec"
