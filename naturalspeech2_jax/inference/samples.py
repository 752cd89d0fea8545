"""Held-out-speaker samples of a prepared dataset: prompt, ground truth and synthesis, plus the
evaluation suite's pair list (what ``launch/quickstart.py``'s samples stage writes)."""

from __future__ import annotations

import numpy as np
from etils import epath

from naturalspeech2_jax import HOP_LENGTH
from naturalspeech2_jax.audio.io import save_audio
from naturalspeech2_jax.data import pipeline
from naturalspeech2_jax.data.codes import as_text, eval_pairs
from naturalspeech2_jax.evaluation.corpus import TestPair, write_pair_list
from naturalspeech2_jax.inference.plots import plot_synthesis
from naturalspeech2_jax.inference.synthesizer import Synthesizer


def write_heldout_samples(
    synth: Synthesizer,
    dataset_dir: str,
    split: str,
    out_dir: epath.Path,
    *,
    count: int = 4,
    sampler: str = "dpm++2m",
    steps: int = 25,
    seed: int = 0,
) -> epath.Path:
    """Synthesise ``count`` sentences of ``split``, each prompted by ANOTHER utterance of its
    speaker; writes ``<id>_{prompt,ground_truth,generated}.wav``, ``<id>_generated.png``,
    ``<id>_durations.npy`` and ``pairs.tsv`` under ``out_dir``; returns the pairs.tsv path."""
    source = pipeline.open_split(dataset_dir, split)
    examples = [source[i] for i in range(min(len(source), 64 * count))]
    out_dir = epath.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = []
    for k, (t, p) in enumerate(eval_pairs(examples, count)):
        tgt, pr = examples[t], examples[p]
        pid = f"{k:02d}_{as_text(tgt['speaker'])}"
        prompt = np.asarray(pr["audio"], np.float32)[: synth.prompt_frames * HOP_LENGTH] / 32768
        gt = np.asarray(tgt["audio"], np.float32) / 32768.0
        text = as_text(tgt["text"])
        result = synth.synthesize(text, prompt, sampler=sampler, steps=steps, seed=seed + k)
        save_audio(out_dir / f"{pid}_prompt.wav", prompt)
        save_audio(out_dir / f"{pid}_ground_truth.wav", gt)
        save_audio(out_dir / f"{pid}_generated.wav", result.wav)
        with (out_dir / f"{pid}_durations.npy").open("wb") as f:
            np.save(f, result.durations)
        plot_synthesis(str(out_dir / f"{pid}_generated.png"), result, f"{pid}: {text}")
        pairs.append(TestPair(
            pair_id=pid, speaker=as_text(tgt["speaker"]), target_text=text,
            ground_truth_audio=str(out_dir / f"{pid}_ground_truth.wav"),
            prompt_audio=str(out_dir / f"{pid}_prompt.wav"),
            ground_truth_durations=tuple(int(x) for x in tgt["durations"]),
        ))  # fmt: skip
    path = out_dir / "pairs.tsv"
    write_pair_list(pairs, path)
    return path
