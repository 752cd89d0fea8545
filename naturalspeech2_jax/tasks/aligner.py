"""The built-in aligner as a task of the generic training loop (``config.task = "aligner"``).

Data. An example is ``{"mel": float32 [T, n_mels], "phonemes": int32 [N]}`` (optionally
``"durations": int32 [N]`` when true timings are known; evaluation then scores boundaries). T is
the number of codec frames (hop 200 at 16 kHz). Training and alignment must see the same mel:
``data/prepare.py`` uses the dataset's (``audio.features.DATASET_MEL``, frame t centred on the
codec frame) for both, and the Python API's ``align.api.log_mel`` (``ALIGNER_MEL``, centred on
sample 200 t) for both; the two are half a hop apart, so align with the mel you trained on.
``config.data.kind`` says where examples come from:

  * ``"npz"``: ``config.data.examples_path`` names an .npz written by ``save_examples`` (ragged
    examples stored as concatenations + lengths; no pickles). This is how the data-preparation
    command hands its corpus (or a subset of some tens of hours; more does not help an aligner)
    to the aligner: ``save_examples(path, examples)`` and then train with
    ``--config.data.examples_path=path`` (``train_aligner`` does exactly this for you).
  * ``"synthetic_tones"``: a generated corpus in which every phoneme id is a distinct spectral
    pattern with random durations and noise, with exact true durations (tests, smoke runs).

Shapes. Each example goes to the smallest ``(T, N)`` bucket of ``config.data.buckets`` that holds
it (examples larger than the largest bucket are skipped and counted in the log), and every
*global* batch is drawn from a single bucket: the epoch plan shuffles bucket-homogeneous groups of
``global_batch`` examples. So jit compiles at most ``len(buckets)`` programs, and every process
pads its share of a batch to the same shape (a requirement for assembling global arrays). The plan
depends only on the seed and the global batch size, so the order is topology-independent and a
resumed run replays the same batches (the loader positions the stream by step).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from configs import aligner as aligner_config
from configs.common import apply_overrides
from naturalspeech2_jax.align import attention, ctc
from naturalspeech2_jax.align.api import Aligner
from naturalspeech2_jax.align.models import build_aligner, model_kind
from naturalspeech2_jax.align.viterbi import boundary_errors_ms
from naturalspeech2_jax.data.loader import make_batch_iterator
from naturalspeech2_jax.train import loop
from naturalspeech2_jax.train.task import ParamGroup, count_params_by_top_module

log = logging.getLogger(__name__)

Example = dict[str, np.ndarray]


# ------------------------------------------------------------------------------------ storage
def save_examples(path: str, examples: Sequence[Example]) -> None:
    """Write ragged examples to one .npz: concatenated mels/phonemes(/durations) + lengths."""
    if not examples:
        raise ValueError("no examples to save; the aligner needs at least one utterance.")
    arrays = {
        "mel": np.concatenate([np.asarray(e["mel"], np.float32) for e in examples]),
        "mel_lengths": np.array([len(e["mel"]) for e in examples], np.int64),
        "phonemes": np.concatenate([np.asarray(e["phonemes"], np.int32) for e in examples]),
        "phoneme_lengths": np.array([len(e["phonemes"]) for e in examples], np.int64),
    }
    if all("durations" in e for e in examples):
        arrays["durations"] = np.concatenate(
            [np.asarray(e["durations"], np.int32) for e in examples]
        )
    np.savez(path, **arrays)


def load_examples(path: str) -> list[Example]:
    """Read an .npz written by ``save_examples`` back into a list of examples."""
    try:
        z = np.load(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"aligner examples file {path} does not exist; write it with "
            "naturalspeech2_jax.tasks.aligner.save_examples or fix config.data.examples_path."
        ) from None
    mel_ends = np.cumsum(z["mel_lengths"])
    ph_ends = np.cumsum(z["phoneme_lengths"])
    mels = np.split(z["mel"], mel_ends[:-1])
    phs = np.split(z["phonemes"], ph_ends[:-1])
    out = [{"mel": m, "phonemes": p} for m, p in zip(mels, phs, strict=True)]
    if "durations" in z:
        for e, d in zip(out, np.split(z["durations"], ph_ends[:-1]), strict=True):
            e["durations"] = d
    return out


# ---------------------------------------------------------------------------- synthetic corpus
SILENCE_ID = 0  # the synthetic corpus's silence token (leading/trailing pauses)


def tone_templates(vocab_size: int, n_mels: int, seed: int = 1234) -> np.ndarray:
    """One spectral pattern per phoneme id [V, n_mels]: 2-3 formant-like bands; id 0 is silence."""
    rng = np.random.default_rng(seed)
    bins = np.arange(n_mels)[None, :]
    templates = np.zeros((vocab_size, n_mels), np.float32)
    for p in range(1, vocab_size):
        for _ in range(rng.integers(2, 4)):
            centre, width, height = (
                rng.uniform(3, n_mels - 3),
                rng.uniform(1.5, 4),
                rng.uniform(3, 6),
            )
            templates[p] += height * np.exp(-0.5 * ((bins[0] - centre) / width) ** 2)
    return templates


def synthetic_tone_examples(
    n: int,
    *,
    vocab_size: int,
    n_mels: int = 80,
    seed: int = 0,
    tokens: tuple[int, int] = (6, 24),
    frames_per_token: tuple[int, int] = (2, 12),
    noise: float = 0.6,
    template_seed: int = 1234,
) -> list[Example]:
    """Utterances ``sil p1 ... pk sil`` rendered as log-mel-like frames with exact durations.

    Each token is its template plus an utterance gain, frame noise, and a 3-frame smoothing across
    boundaries (crude coarticulation), on top of a -4 floor; consecutive tokens always differ.
    """
    rng = np.random.default_rng(seed)
    templates = tone_templates(vocab_size, n_mels, template_seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(tokens[0], tokens[1] + 1))
        ids = [SILENCE_ID]
        for _ in range(k):
            p = int(rng.integers(1, vocab_size))
            while p == ids[-1]:
                p = int(rng.integers(1, vocab_size))
            ids.append(p)
        ids.append(SILENCE_ID)
        phonemes = np.array(ids, np.int32)
        durations = rng.integers(frames_per_token[0], frames_per_token[1] + 1, len(ids))
        frames = np.repeat(templates[phonemes], durations, axis=0) * rng.uniform(0.7, 1.3)
        kernel = np.array([0.25, 0.5, 0.25], np.float32)
        padded = np.pad(frames, ((1, 1), (0, 0)), mode="edge")
        frames = kernel[0] * padded[:-2] + kernel[1] * padded[1:-1] + kernel[2] * padded[2:]
        mel = -4.0 + frames + noise * rng.normal(size=frames.shape)
        out.append(
            {
                "mel": mel.astype(np.float32),
                "phonemes": phonemes,
                "durations": durations.astype(np.int32),
            }
        )
    return out


# ------------------------------------------------------------------------------- bucketing
def assign_buckets(examples: Sequence[Example], buckets: Sequence[Sequence[int]]) -> np.ndarray:
    """Index of the smallest (T, N) bucket holding each example; -1 when none does (or T < N)."""
    order = sorted(range(len(buckets)), key=lambda b: tuple(buckets[b]))
    ids = np.full(len(examples), -1, np.int64)
    for i, e in enumerate(examples):
        t, n = len(e["mel"]), len(e["phonemes"])
        if t < n or n == 0:
            continue  # cannot be aligned (every token needs a frame): never trained on
        for b in order:
            if t <= buckets[b][0] and n <= buckets[b][1]:
                ids[i] = b
                break
    return ids


def pad_example(e: Example, max_frames: int, max_tokens: int) -> dict[str, np.ndarray]:
    """Zero-pad one example to a bucket shape and add its frame/phoneme masks."""
    t, n = len(e["mel"]), len(e["phonemes"])
    mel = np.zeros((max_frames, e["mel"].shape[1]), np.float32)
    mel[:t] = e["mel"]
    ph = np.zeros(max_tokens, np.int32)
    ph[:n] = e["phonemes"]
    return {
        "mel": mel,
        "frame_mask": (np.arange(max_frames) < t).astype(np.float32),
        "phonemes": ph,
        "phoneme_mask": (np.arange(max_tokens) < n).astype(np.float32),
    }


def bucket_plan(bucket_ids: np.ndarray, group: int, min_length: int, seed: int) -> np.ndarray:
    """Example indices in an order where each run of ``group`` shares one bucket.

    Every epoch shuffles each bucket, cuts it into groups (a bucket's last partial group is filled
    with random members of that bucket), and shuffles the groups; epochs are appended until the
    plan holds ``min_length`` indices.
    """
    members = [np.flatnonzero(bucket_ids == b) for b in np.unique(bucket_ids[bucket_ids >= 0])]
    if not members:
        raise ValueError("no training example fits any bucket; raise config.data.buckets.")
    chunks: list[np.ndarray] = []
    total, epoch = 0, 0
    while total < min_length:
        rng = np.random.default_rng([seed, epoch])
        groups = []
        for idx in members:
            idx = rng.permutation(idx)
            fill = (-len(idx)) % group
            idx = np.concatenate([idx, rng.choice(idx, fill)])
            groups.extend(idx.reshape(-1, group))
        for g in rng.permutation(len(groups)):
            chunks.append(groups[g])
        total += len(groups) * group
        epoch += 1
    return np.concatenate(chunks)


class _PlannedSource:
    """Random-access source: plan position -> example padded to its bucket's shape."""

    def __init__(self, examples, plan, bucket_ids, buckets):
        self.examples, self.plan, self.bucket_ids, self.buckets = (
            examples,
            plan,
            bucket_ids,
            buckets,
        )

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        j = int(self.plan[i])
        t, n = self.buckets[int(self.bucket_ids[j])]
        return pad_example(self.examples[j], int(t), int(n))


# -------------------------------------------------------------------------------------- task
class AlignerTask:
    """The built-in aligner: a model of p(token | frame) trained with the forward-sum loss whose
    emissions drive Viterbi forced alignment; ``config.model.kind`` picks the text-conditioned
    attention model (``attention.py``, the default) or the CTC phoneme recogniser (``ctc.py``)."""

    def __init__(self, config: Any):
        self.config = config
        self._examples: list[Example] | None = None
        self._eval_examples: list[Example] | None = None

    # ---- data (loaded lazily: building the model, dry runs and restores need none)
    def training_examples(self) -> list[Example]:
        if self._examples is None:
            d = self.config.data
            if d.kind == "synthetic_tones":
                self._examples = self._synthetic(int(d.num_examples), int(d.seed))
            elif d.kind == "npz":
                if not d.get("examples_path"):
                    raise ValueError(
                        "config.data.kind='npz' needs config.data.examples_path (an .npz written "
                        "by tasks.aligner.save_examples)."
                    )
                self._examples = load_examples(d.examples_path)
            else:
                raise ValueError(
                    f"config.data.kind={d.kind!r} is unknown; use 'npz' or 'synthetic_tones'."
                )
            self._check_vocab(self._examples)
        return self._examples

    def eval_examples(self) -> list[Example]:
        if self._eval_examples is None:
            d = self.config.data
            if d.kind == "synthetic_tones":  # held out: another seed, same phoneme templates
                self._eval_examples = self._synthetic(int(d.eval_examples), int(d.seed) + 10_000)
            else:
                self._eval_examples = self.training_examples()[: int(d.eval_examples)]
        return self._eval_examples

    def _synthetic(self, n: int, seed: int) -> list[Example]:
        d = self.config.data
        return synthetic_tone_examples(
            n,
            vocab_size=int(self.config.model.vocab_size),
            n_mels=int(self.config.model.n_mels),
            seed=seed,
            tokens=tuple(d.synth_tokens),
            frames_per_token=tuple(d.synth_frames_per_token),
            noise=float(d.synth_noise),
        )

    def _check_vocab(self, examples: Sequence[Example]) -> None:
        v = int(self.config.model.vocab_size)
        top = max(int(np.max(e["phonemes"])) for e in examples if len(e["phonemes"]))
        if top >= v:
            raise ValueError(
                f"phoneme id {top} >= config.model.vocab_size={v}; set --config.model.vocab_size "
                "to the phoneme vocabulary size."
            )

    # ---- Task protocol
    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        return build_aligner(self.config, rngs)

    def loss(self, model, batch, rng, step):
        optional_ids = tuple(int(i) for i in self.config.data.get("optional_ids", ()) or ())
        prior = ctc.EmissionPrior.from_config(self.config.loss)
        rngs = nnx.Rngs(dropout=rng)
        if model_kind(self.config) == "attention":
            return attention.attention_aligner_losses(
                model,
                batch,
                optional_ids=optional_ids,
                prior=prior,
                ctc_weight=float(self.config.loss.get("ctc_weight", 0.0)),
                rngs=rngs,
            )
        # Flat start hands over to the forward-sum loss: f goes 1 -> 0 over flat_start_steps and
        # weights the flat-start CE by f and the forward-sum by 1 - f (see ctc.py for why).
        flat_steps = max(int(self.config.loss.flat_start_steps), 1)
        f = jnp.maximum(0.0, 1.0 - step.astype(jnp.float32) / flat_steps)
        return ctc.aligner_losses(
            model,
            batch,
            forward_sum_weight=(1.0 - f) * float(self.config.loss.forward_sum_weight),
            flat_start_weight=f * float(self.config.loss.flat_start_weight),
            optional_ids=optional_ids,
            prior=prior,
            rngs=rngs,
        )

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("model", nnx.Param, self.loss, self.config.optim)]

    def train_iterator(self, *, seed, local_batch_size, process_index, process_count):
        examples = self.training_examples()
        buckets = [tuple(int(x) for x in b) for b in self.config.data.buckets]
        ids = assign_buckets(examples, buckets)
        skipped = int(np.sum(ids < 0))
        if skipped:
            log.warning(
                "aligner: %d of %d examples skipped (longer than the largest bucket %s, or fewer "
                "frames than phonemes)",
                skipped,
                len(examples),
                max(buckets),
            )
        group = local_batch_size * process_count
        plan = bucket_plan(ids, group, (int(self.config.total_steps) + 1) * group, seed)
        return make_batch_iterator(
            _PlannedSource(examples, plan, ids, buckets),
            seed=seed,
            local_batch_size=local_batch_size,
            process_index=process_index,
            process_count=process_count,
            shuffle=False,  # the plan is already shuffled, in bucket-homogeneous groups
        )

    def evaluate(self, model, step, workdir):
        examples = self.eval_examples()
        aligner = Aligner(model, self.config)
        results = aligner.align_batch(
            [e["mel"] for e in examples], [e["phonemes"] for e in examples], on_error="return"
        )
        ok = [
            (r, e) for r, e in zip(results, examples, strict=True) if not isinstance(r, Exception)
        ]
        metrics = {"failed": float(len(results) - len(ok))}
        if ok:
            metrics["confidence"] = float(np.mean([r.confidence for r, _ in ok]))
        if ok and all("durations" in e for _, e in ok):
            errors = np.concatenate(
                [boundary_errors_ms(r.durations, e["durations"]) for r, e in ok]
            )
            metrics["boundary_error_median_ms"] = float(np.median(errors))
            metrics["boundary_error_mean_ms"] = float(np.mean(errors))
            metrics["boundary_within_25ms"] = float(np.mean(errors <= 25.0))
        return metrics

    def param_count_groups(self, model) -> dict[str, int]:
        return count_params_by_top_module(model)

    def checkpoint_meta(self) -> dict:
        return {"aligner_vocab_size": int(self.config.model.vocab_size)}


def train_aligner(
    examples: Sequence[dict[str, np.ndarray]],
    workdir: str,
    preset: str = "tiny",
    **overrides: Any,
) -> str:
    """Train (or resume) an aligner on ``examples`` through the generic loop; returns the
    checkpoint directory. The examples are stored as ``<workdir>/aligner_examples.npz`` and the
    config points at them, so ``launch/train.py`` can resume the same run. ``overrides`` are
    dotted config keys with ``__`` for dots, e.g. ``total_steps=500, model__vocab_size=90``.
    """
    config = aligner_config.get_config(preset)
    wd = epath.Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    path = wd / "aligner_examples.npz"
    save_examples(str(path), examples)
    config.data.kind = "npz"
    config.data.examples_path = str(path)
    # Real utterances: speech-sized buckets (the presets' synthetic buckets stop at 4 s, which
    # would skip most of a read-speech corpus), and checkpoints often enough that a killed
    # preparation resumes its aligner instead of starting over.
    config.data.buckets = aligner_config.SPEECH_BUCKETS
    config.checkpoint_every = min(int(config.checkpoint_every), 250)
    config.eval_every = min(int(config.eval_every), int(config.total_steps))
    top = max(int(np.max(e["phonemes"])) for e in examples if len(e["phonemes"]))
    config.model.vocab_size = max(int(config.model.vocab_size), top + 1)
    apply_overrides(config, overrides, sep="__")
    if "total_steps" in overrides and "loss__flat_start_steps" not in overrides:
        # the flat start hands over to forward-sum halfway, whatever the length of the run
        config.loss.flat_start_steps = max(int(config.total_steps) // 2, 60)
        config.eval_every = min(int(config.eval_every), int(config.total_steps))
    loop.train(config, str(wd), task=AlignerTask(config))
    return str(wd / "checkpoints")


Task = AlignerTask  # what train.task.make_task instantiates for config.task == "aligner"
