"""The NaturalSpeech 2 training task ("ns2") for the generic loop.

Data: a *codes dataset*: a prepared TFDS dataset whose examples also hold the codec's ``codes``
int [n_frames, 16] (``launch/codec.py encode-dataset`` writes it, with ``codec.json`` naming the
codec run and ``latent_stats.npz`` beside the records). Batches are length-bucketed
(``data.pipeline.bucket_iterator``: a bounded number of compiled shapes) and carry phonemes,
durations, log-F0, codes and masks; no audio goes to the device. The latent z is rebuilt on
device from the code ids and the codec's frozen codebooks inside the loss
(``NaturalSpeech2.training_loss``), which also cuts the training prompt out of each utterance.

Codec: everything this task needs from the codec goes through ONE adapter, ``load_codec_assets``
(codebooks, latent statistics, a latent -> waveform decoder), backed by
``naturalspeech2_jax.codec_api.Codec.from_checkpoint``. Tests replace it with a random codec.

Config keys read here (``configs/diffusion.py``): model (``models.ns2.model_config``),
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

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE
from naturalspeech2_jax.data.pipeline import split_names
from naturalspeech2_jax.models.ns2 import (
    NaturalSpeech2,
    fast_abstract_tracing,
    param_count_groups,
)
from naturalspeech2_jax.train.task import ParamGroup, register_task

log = logging.getLogger(__name__)

CODEC_FILE = "codec.json"  # beside a codes dataset: {"codec_checkpoint": DIR, ...}
LATENT_STATS_FILE = "latent_stats.npz"  # {"mean": [D], "std": [D]} beside the dataset / codec
BATCH_KEYS = ("phonemes", "durations", "token_mask", "codes", "log_f0", "frame_mask")


# ------------------------------------------------------------------------------------- codec
@dataclasses.dataclass(frozen=True)
class CodecAssets:
    """What NS2 needs from a trained codec."""

    codebooks: np.ndarray  # float32 [R, K, D]: codebooks[j, code] = embedding
    latent_stats: dict[str, np.ndarray]  # {"mean": [D], "std": [D]}
    decode: Callable[[np.ndarray], np.ndarray]  # z [B, T, D] -> 16 kHz waveform [B, T * 200]
    checkpoint: str


def _read_stats(path: epath.Path) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    with path.open("rb") as f:
        data = np.load(f)
        return {k: np.asarray(data[k], np.float32) for k in ("mean", "std")}


def load_codec_assets(checkpoint: str, dataset_dir: str | None = None) -> CodecAssets:
    """The adapter to the codec: load a codec run (EMA weights) through ``codec_api``.

    Latent statistics: the codes dataset's ``latent_stats.npz`` (computed over its training
    splits), else the codec run's.
    """
    from naturalspeech2_jax.models import random_codec

    if checkpoint == random_codec.RANDOM_CODEC:  # speed measurements only (see random_codec.py)
        return random_codec.random_codec_assets()
    try:
        from naturalspeech2_jax.codec_api import Codec
    except ImportError as e:
        raise RuntimeError(
            f"the codec API (naturalspeech2_jax.codec_api) is not available ({e}); NS2 training "
            "needs a trained codec from launch/train.py --config=configs/codec.py."
        ) from None
    codec = Codec.from_checkpoint(checkpoint)
    stats = _read_stats(epath.Path(dataset_dir) / LATENT_STATS_FILE) if dataset_dir else None
    if stats is None and codec.latent_stats is not None:
        stats = {k: np.asarray(codec.latent_stats[k], np.float32) for k in ("mean", "std")}
    if stats is None:
        raise FileNotFoundError(
            f"no {LATENT_STATS_FILE} beside {dataset_dir} nor in {checkpoint}; write it with "
            f"python launch/codec.py stats --checkpoint {checkpoint} DATASET_DIR."
        )
    return CodecAssets(np.asarray(codec.codebooks, np.float32), stats, codec.decode, checkpoint)


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


# -------------------------------------------------------------------------------------- data
_ENCODE_HINT = (
    "train a codec (python launch/train.py --config=configs/codec.py:tiny "
    "--workdir=runs/codec_tiny), encode a prepared dataset with it (python launch/codec.py "
    "encode-dataset --checkpoint runs/codec_tiny DATA/<name>/1.0.0 DATA/<name>_codes/1.0.0) "
    "and pass --config.data.dataset_dir=DATA/<name>_codes/1.0.0"
)


def resolve_dataset_dir(config: Any) -> str:
    """The codes dataset: ``config.data.dataset_dir``, else the embedded one (when it exists)."""
    from naturalspeech2_jax.data import embedded

    path = str(config.data.get("dataset_dir", "") or "")
    if not path:
        # The embedded pipeline (launch/quickstart.py: corpus -> codec -> codes) registers it;
        # until it has run, the error names that command.
        path = embedded.embedded_codes_dataset_dir(str(config.data.get("embedded_size", "default")))
    features = epath.Path(path) / "features.json"
    if not features.exists():
        raise FileNotFoundError(f"{path} is not a prepared dataset (no features.json): "
                                f"{_ENCODE_HINT}.")  # fmt: skip
    if '"codes"' not in features.read_text():
        raise ValueError(f"{path} has no codec codes (a feature 'codes'): {_ENCODE_HINT}.")
    return path


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
    from naturalspeech2_jax.data import pipeline

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
    from naturalspeech2_jax.data import pipeline

    padded = pipeline.pad_example(ex, frames, tokens)
    out = {k: padded[k] for k in BATCH_KEYS}
    out["codes"] = out["codes"].astype(np.int32)
    return out


# -------------------------------------------------------------------------------- evaluation
def _text(v: Any) -> str:
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
        by_speaker.setdefault(_text(ex.get("speaker", "")), []).append(i)
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


def _plot_eval(path: epath.Path, panels: dict[str, np.ndarray]) -> None:
    """Log-mel panels (waveforms) stacked in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from naturalspeech2_jax.evaluation.codec_metrics import log_mel

    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.2 * len(panels)), squeeze=False)
    for ax, (title, wav) in zip(axes[:, 0], panels.items(), strict=True):
        ax.imshow(log_mel(wav), origin="lower", aspect="auto", cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel")
    axes[-1, 0].set_xlabel("frame (12.5 ms)")
    fig.tight_layout()
    fig.savefig(str(path), dpi=80)
    plt.close(fig)


def _plot_pitch(path: epath.Path, curves: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> None:
    """F0 contours in Hz (log-F0 input; unvoiced frames blank where a voiced mask is given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 2.6))
    for label, (log_f0, voiced) in curves.items():
        f0 = np.exp(np.asarray(log_f0, np.float64))
        if voiced is not None:
            f0 = np.where(np.asarray(voiced) > 0, f0, np.nan)
        ax.plot(np.arange(len(f0)), f0, label=label, lw=1)
    ax.set_xlabel("frame (12.5 ms)")
    ax.set_ylabel("F0 (Hz)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path), dpi=80)
    plt.close(fig)


def _write_wav(path: epath.Path, wav: np.ndarray) -> None:
    import soundfile as sf

    sf.write(str(path), np.clip(np.asarray(wav, np.float32), -1, 1), SAMPLE_RATE, "PCM_16")


def _speech_metrics(
    texts: Sequence[str], systems: dict[str, list[np.ndarray]], prompts: list[np.ndarray], e: Any
) -> dict[str, float]:
    """WER (``eval.asr``) and speaker similarity to the prompt per system, when installed."""
    out: dict[str, float] = {}
    if e.get("asr"):
        try:
            from naturalspeech2_jax.evaluation.asr import get_asr, word_error_rate

            asr = get_asr(str(e.asr))
            for name, wavs in systems.items():
                hyps = [asr.transcribe(w) for w in wavs]
                out[f"wer_{name}"] = word_error_rate(list(texts), hyps).wer
        except Exception as err:  # an evaluator's failure must not stop training
            log.warning("WER skipped: %s", err)
    if e.get("speaker_similarity"):
        try:
            from naturalspeech2_jax.evaluation.speaker import speaker_similarity

            for name, wavs in systems.items():
                sims = [speaker_similarity(w, p) for w, p in zip(wavs, prompts, strict=True)]
                out[f"spk_sim_{name}"] = float(np.mean(sims))
        except Exception as err:
            log.warning("speaker similarity skipped: %s", err)
    return out


# -------------------------------------------------------------------------------------- task
@register_task("ns2")
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
        return resolve_dataset_dir(self.config)

    @functools.cached_property
    def assets(self) -> CodecAssets:
        from naturalspeech2_jax.models import random_codec

        if str(self.config.codec.get("checkpoint", "")) == random_codec.RANDOM_CODEC:
            # The configured shape, and no dataset needed: --compile_only runs without one.
            return random_codec.random_codec_assets(self.codebooks_shape)
        ckpt = codec_checkpoint(self.config, self.dataset_dir)
        assets = load_codec_assets(ckpt, self.dataset_dir)
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
        from naturalspeech2_jax.data import pipeline

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
        from naturalspeech2_jax.data import pipeline

        d, e = self.config.data, self.config.eval
        split = str(d.eval_split)
        try:
            source = pipeline.open_split(self.dataset_dir, split)
        except (KeyError, ValueError) as err:
            split = split_names(d.train_splits)[0]
            log.warning("eval split %r missing (%s); evaluating on %r", d.eval_split, err, split)
            source = pipeline.open_split(self.dataset_dir, split)
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
                "id": _text(tgt.get("id", ti)),
                "speaker": _text(tgt.get("speaker", "")),
                "text": _text(tgt.get("text", "")),
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
            _write_wav(out_dir / f"{stem}_generated.wav", gen)
            _write_wav(out_dir / f"{stem}_ground_truth.wav", it["audio"])
            _write_wav(out_dir / f"{stem}_codec.wav", codec_wav)
            _write_wav(out_dir / f"{stem}_prompt.wav", it["prompt_audio"])
            _plot_eval(out_dir / f"{stem}_mel.png", {
                f"generated ({it['id']}): {it['text'][:60]}": gen,
                "ground truth": it["audio"],
                "ground truth through the codec": codec_wav,
                "prompt (another utterance of the speaker)": it["prompt_audio"],
            })  # fmt: skip
            _plot_pitch(out_dir / f"{stem}_pitch.png", {
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
