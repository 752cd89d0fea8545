"""The NaturalSpeech 2 training task ("ns2") for the generic loop.

Data: a *codes dataset*: a prepared TFDS dataset whose examples also hold the codec's ``codes``
int [n_frames, 16] (``launch/codec.py encode-dataset`` writes it, with ``codec.json`` naming the
codec run and ``latent_stats.npz`` beside the records). Batches are length-bucketed
(``data.pipeline.bucket_iterator``: a bounded number of compiled shapes) and carry phonemes,
durations, log-F0, codes and masks; no audio goes to the device. The latent z is rebuilt on
device from the code ids and the codec's frozen codebooks inside the loss
(``NaturalSpeech2.training_loss``), which also cuts the training prompt out of each utterance.

Codec: everything this task needs from the codec goes through ONE adapter, ``codec_assets``
(codebooks, latent statistics, a latent -> waveform decoder), backed by
``naturalspeech2_jax.inference.codec.load_codec_assets``; ``codec.checkpoint="random"`` selects
the random codec of speed measurements (``tasks/random_codec.py``).

Config keys read here (``configs/diffusion.py``): model (``configs.ns2_model.model_config``),
codec.{checkpoint, num_quantizers, codebook_size, latent_dim}, data.{dataset_dir, embedded_size,
train_splits, eval_split, buckets, token_buckets, num_threads}, eval.{num_examples, sampler,
steps, temperature, guidance_scale, prompt_frames, max_frames, max_tokens, asr,
speaker_similarity, seed}.

Checkpoint meta (``checkpoint_meta``): the phoneme vocabulary (vocab.json of the dataset), the
codec checkpoint, the latent statistics and the dataset location, so inference can rebuild the
whole synthesizer from an NS2 run alone. The same is written as ``<workdir>/ns2_assets.json`` and
``<workdir>/vocab.json`` at the first evaluation.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from naturalspeech2_jax import HOP_LENGTH
from naturalspeech2_jax.audio.io import save_audio
from naturalspeech2_jax.data import embedded, pipeline
from naturalspeech2_jax.data.codes import (
    as_text,
    codec_checkpoint,
    eval_pairs,
    latent_from_codes,
    open_training_source,
    training_example,
)
from naturalspeech2_jax.data.pipeline import split_names
from naturalspeech2_jax.evaluation.asr import get_asr, word_error_rate
from naturalspeech2_jax.evaluation.speaker import speaker_similarity
from naturalspeech2_jax.inference.codec import CodecAssets, load_codec_assets
from naturalspeech2_jax.inference.plots import plot_mels, plot_pitch
from naturalspeech2_jax.models.ns2 import (
    NaturalSpeech2,
    fast_abstract_tracing,
    param_count_groups,
)
from naturalspeech2_jax.tasks import random_codec
from naturalspeech2_jax.train.task import ParamGroup

log = logging.getLogger(__name__)


def codec_assets(checkpoint: str, dataset_dir: str | None = None) -> CodecAssets:
    """The codec NS2 trains with: a trained run (``inference.codec.load_codec_assets``) or, for
    speed measurements, the random codec (``tasks.random_codec``)."""
    if checkpoint == random_codec.RANDOM_CODEC:
        return random_codec.random_codec_assets()
    return load_codec_assets(checkpoint, dataset_dir)


def _speech_metrics(
    texts: Sequence[str], systems: dict[str, list[np.ndarray]], prompts: list[np.ndarray], e: Any
) -> dict[str, float]:
    """WER (``eval.asr``) and speaker similarity to the prompt per system, when installed."""
    out: dict[str, float] = {}
    if e.get("asr"):
        try:
            asr = get_asr(str(e.asr))
            for name, wavs in systems.items():
                hyps = [asr.transcribe(w) for w in wavs]
                out[f"wer_{name}"] = word_error_rate(list(texts), hyps).wer
        except Exception as err:  # an evaluator's failure must not stop training
            log.warning("WER skipped: %s", err)
    if e.get("speaker_similarity"):
        try:
            for name, wavs in systems.items():
                sims = [speaker_similarity(w, p) for w, p in zip(wavs, prompts, strict=True)]
                out[f"spk_sim_{name}"] = float(np.mean(sims))
        except Exception as err:
            log.warning("speaker similarity skipped: %s", err)
    return out


# -------------------------------------------------------------------------------------- task
class NS2Task:
    """Prior + prompt + latent diffusion trained on a codes dataset with a frozen codec."""

    def __init__(self, config: Any):
        self.config = config
        c = config.codec
        self.codebooks_shape = (int(c.num_quantizers), int(c.codebook_size), int(c.latent_dim))

    # ------------------------------------------------------------------ model
    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        with fast_abstract_tracing():  # the paper preset's abstract build: 2 s instead of 27 s
            return NaturalSpeech2(self.config.model, self.codebooks_shape, rngs=rngs)

    def param_count_groups(self, model: nnx.Module) -> dict[str, int]:
        return param_count_groups(model)

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("model", nnx.Param, self.loss, self.config.optim)]

    def loss(self, model, batch, rng, step):
        cb, stats = self._device_assets
        loss, metrics = model.training_loss(batch, rng, cb, stats)
        metrics.pop("loss")  # the step reports it as model/loss
        return loss, metrics

    # ------------------------------------------------------------------ assets (lazy)
    @functools.cached_property
    def dataset_dir(self) -> str:
        return embedded.resolve_dataset_dir(self.config, codes=True)

    @functools.cached_property
    def assets(self) -> CodecAssets:
        if str(self.config.codec.get("checkpoint", "")) == random_codec.RANDOM_CODEC:
            # The configured shape, and no dataset needed: --compile_only runs without one.
            return random_codec.random_codec_assets(self.codebooks_shape)
        ckpt = codec_checkpoint(self.config, self.dataset_dir)
        assets = codec_assets(ckpt, self.dataset_dir)
        if tuple(assets.codebooks.shape) != self.codebooks_shape:
            raise ValueError(
                f"codec {ckpt} has codebooks {tuple(assets.codebooks.shape)} but config.codec "
                f"says {self.codebooks_shape}; set config.codec.num_quantizers/codebook_size/"
                "latent_dim to match."
            )
        return assets

    @functools.cached_property
    def _device_assets(self) -> tuple[jax.Array, dict[str, jax.Array]]:
        a = self.assets
        stats = {k: jnp.asarray(a.latent_stats[k], jnp.float32) for k in ("mean", "std")}
        return jnp.asarray(a.codebooks), stats

    @functools.cached_property
    def vocab(self) -> dict | None:
        path = epath.Path(self.dataset_dir) / "vocab.json"
        return json.loads(path.read_text()) if path.exists() else None

    def checkpoint_meta(self) -> dict:
        """Saved in every checkpoint: what inference needs besides the weights."""
        if "assets" not in self.__dict__:  # not trained yet (e.g. a bare Trainer): nothing known
            return {}
        a = self.assets
        return {
            "ns2": {
                "codec_checkpoint": a.checkpoint,
                "dataset_dir": self.dataset_dir,
                "latent_stats": {k: a.latent_stats[k].tolist() for k in ("mean", "std")},
                "vocab": self.vocab,
            }
        }

    # ------------------------------------------------------------------ data
    def abstract_batch(self, global_batch: int) -> dict[str, jax.ShapeDtypeStruct]:
        """The largest batch (top frame and token buckets) that ``train_iterator`` yields."""
        d, r = self.config.data, self.codebooks_shape[0]
        frames, tokens = max(int(b) for b in d.buckets), max(int(b) for b in d.token_buckets)
        i32, f32 = np.int32, np.float32
        shapes = dict(
            phonemes=((tokens,), i32), durations=((tokens,), i32), token_mask=((tokens,), f32),
            codes=((frames, r), i32), log_f0=((frames,), f32), frame_mask=((frames,), f32),
        )  # fmt: skip
        return {k: jax.ShapeDtypeStruct((global_batch, *s), t) for k, (s, t) in shapes.items()}

    def train_iterator(self, *, seed, local_batch_size, process_index, process_count):
        d = self.config.data
        buckets = sorted(int(b) for b in d.buckets)
        token_buckets = sorted(int(b) for b in d.token_buckets)
        source, frames, tokens = open_training_source(
            self.dataset_dir, split_names(d.train_splits), buckets[-1], token_buckets[-1]
        )
        self._check_vocab()
        _ = self._device_assets  # load the codec now, not inside the first jit trace
        batches = pipeline.BucketBatches(
            frames,
            global_batch=local_batch_size * process_count,
            buckets=buckets,
            seed=seed,
            token_lengths=tokens,
            token_buckets=token_buckets,
        )
        return pipeline.bucket_iterator(
            source,
            batches,
            local_batch_size=local_batch_size,
            process_index=process_index,
            process_count=process_count,
            transform=training_example,
            num_threads=int(d.get("num_threads", 2)),
        )

    def _check_vocab(self) -> None:
        vocab, size = self.vocab, int(self.config.model.vocab_size)
        if vocab is not None and len(vocab["tokens"]) > size:
            raise ValueError(
                f"the dataset's vocab.json has {len(vocab['tokens'])} phonemes but "
                f"config.model.vocab_size={size}; raise config.model.vocab_size."
            )

    # ------------------------------------------------------------------ evaluation
    @functools.cached_property
    def eval_set(self) -> dict[str, Any]:
        """Held-out (target, prompt) pairs of held-out speakers, padded to the eval shapes."""
        d, e = self.config.data, self.config.eval
        split, fallback = str(d.eval_split), split_names(d.train_splits)[0]
        source, split = pipeline.open_eval_split(self.dataset_dir, split, fallback)
        max_f, max_t, p_len = int(e.max_frames), int(e.max_tokens), int(e.prompt_frames)
        examples = [source[i] for i in range(min(len(source), 64 * int(e.num_examples)))]
        fits = [
            i for i, ex in enumerate(examples)
            if len(ex["phonemes"]) <= max_t and len(ex["log_f0"]) <= max_f
        ]  # fmt: skip
        pairs = eval_pairs([examples[i] for i in fits], int(e.num_examples))
        pairs = [(fits[t], fits[p]) for t, p in pairs]
        if not pairs:
            raise ValueError(f"no {split} utterance fits eval.max_frames/max_tokens.")
        cb = self.assets.codebooks
        out: dict[str, Any] = {"split": split, "items": []}
        phon = np.zeros((len(pairs), max_t), np.int32)
        tmask = np.zeros((len(pairs), max_t), np.float32)
        prompt = np.zeros((len(pairs), p_len, cb.shape[-1]), np.float32)
        pmask = np.zeros((len(pairs), p_len), np.float32)
        for b, (ti, pi) in enumerate(pairs):
            tgt, pr = examples[ti], examples[pi]
            n_tok, n_p = len(tgt["phonemes"]), min(len(pr["log_f0"]), p_len)
            phon[b, :n_tok], tmask[b, :n_tok] = tgt["phonemes"], 1.0
            prompt[b, :n_p] = latent_from_codes(pr["codes"][:n_p], cb)
            pmask[b, :n_p] = 1.0
            out["items"].append({
                "id": as_text(tgt.get("id", ti)),
                "speaker": as_text(tgt.get("speaker", "")),
                "text": as_text(tgt.get("text", "")),
                "durations": np.asarray(tgt["durations"]),
                "log_f0": np.asarray(tgt["log_f0"]),
                "voiced": np.asarray(tgt.get("voiced", np.ones_like(tgt["log_f0"]))),
                "audio": np.asarray(tgt["audio"], np.float32) / 32768.0,
                "codes": np.asarray(tgt["codes"]),
                "prompt_audio": np.asarray(pr["audio"], np.float32)[: n_p * HOP_LENGTH] / 32768.0,
            })  # fmt: skip
        out.update(phonemes=phon, token_mask=tmask, prompt_latent=prompt, prompt_mask=pmask)
        return out

    def _write_assets(self, workdir: str) -> None:
        meta = self.checkpoint_meta().get("ns2")
        if not meta or not _is_main():
            return
        wd = epath.Path(workdir)
        if meta["vocab"] is not None:
            (wd / "vocab.json").write_text(json.dumps(meta["vocab"], indent=1, ensure_ascii=False))
        info = {k: v for k, v in meta.items() if k != "vocab"}
        (wd / "ns2_assets.json").write_text(json.dumps(info))

    def evaluate(self, model: nnx.Module, step: int, workdir: str) -> dict[str, float]:
        """Synthesize held-out sentences with held-out-speaker prompts: audio, mel and pitch PNGs,
        duration/length errors, and WER + speaker similarity when the evaluators are installed."""
        e = self.config.eval
        self._write_assets(workdir)
        es = self.eval_set
        stats = self.assets.latent_stats
        t0 = time.perf_counter()
        out = model.synthesize(
            jnp.asarray(es["phonemes"]), jnp.asarray(es["token_mask"]),
            jnp.asarray(es["prompt_latent"]), jnp.asarray(es["prompt_mask"]),
            jax.random.key(int(e.get("seed", 0))), sampler=str(e.sampler), steps=int(e.steps),
            temperature=float(e.temperature), latent_stats=stats,
            guidance_scale=float(e.guidance_scale), max_frames=int(e.max_frames),
        )  # fmt: skip
        out = jax.tree.map(np.asarray, out)
        synth_s = time.perf_counter() - t0
        gen_wav = self.assets.decode(out["latent"])
        gt_latent = [latent_from_codes(it["codes"], self.assets.codebooks) for it in es["items"]]
        metrics: dict[str, float] = {"synthesis_seconds": synth_s}
        gens, gts, codecs, prompts, texts, dur_err, len_ratio = [], [], [], [], [], [], []
        out_dir = epath.Path(workdir) / "samples" / f"step_{step}"
        if _is_main():
            out_dir.mkdir(parents=True, exist_ok=True)
        for b, it in enumerate(es["items"]):
            n_tok = len(it["durations"])
            d_pred = out["durations"][b, :n_tok]
            n_gen = min(int(d_pred.sum()), int(e.max_frames))
            gen = gen_wav[b, : n_gen * HOP_LENGTH]
            codec_wav = self.assets.decode(gt_latent[b][None])[0]
            gens.append(gen), gts.append(it["audio"]), codecs.append(codec_wav)
            prompts.append(it["prompt_audio"]), texts.append(it["text"])
            dur_err.append(np.mean(np.abs(np.log1p(d_pred) - np.log1p(it["durations"]))))
            len_ratio.append(n_gen / max(len(it["log_f0"]), 1))
            if not _is_main():
                continue
            stem = f"ex{b}_{it['speaker']}"
            save_audio(out_dir / f"{stem}_generated.wav", gen)
            save_audio(out_dir / f"{stem}_ground_truth.wav", it["audio"])
            save_audio(out_dir / f"{stem}_codec.wav", codec_wav)
            save_audio(out_dir / f"{stem}_prompt.wav", it["prompt_audio"])
            plot_mels(out_dir / f"{stem}_mel.png", {
                f"generated ({it['id']}): {it['text'][:60]}": gen,
                "ground truth": it["audio"],
                "ground truth through the codec": codec_wav,
                "prompt (another utterance of the speaker)": it["prompt_audio"],
            })  # fmt: skip
            plot_pitch(out_dir / f"{stem}_pitch.png", {
                "predicted": (out["log_f0"][b, :n_gen], None),
                "ground truth": (it["log_f0"], it["voiced"]),
            })  # fmt: skip
        metrics["duration_l1_log"] = float(np.mean(dur_err))
        metrics["length_ratio"] = float(np.mean(len_ratio))
        metrics["generated_rms"] = float(np.mean([np.sqrt(np.mean(g**2)) for g in gens]))
        systems = {"generated": gens, "ground_truth": gts, "codec": codecs}
        metrics.update(_speech_metrics(texts, systems, prompts, e))
        return metrics


def _is_main() -> bool:
    return jax.process_index() == 0


Task = NS2Task  # what train.task.make_task instantiates for config.task == "ns2"
