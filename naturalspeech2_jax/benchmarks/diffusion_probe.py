"""Where does a sample lose the words? Teacher-forced probes of an NS2 checkpoint's diffusion.

Each utterance of a prepared codes dataset is synthesised with its own durations and log-F0 (the
prior is out of the picture) in the voice of a prompt cut from another utterance of the same
speaker, and the denoiser's x0 prediction is read along the DPM-Solver++(2M) trajectory. Per
step: the latent error against the utterance's own latent (relative MSE in the normalised space:
1.0 = no better than predicting the mean) and, with an ASR, the WER of the x0 decoded through
the codec. The last row is the sample itself. A model whose early x0 (the conditional mean at
t = 1) is intelligible but whose sample is not is under-using its condition at mid noise levels;
guidance (``guidance_scales``) on a model trained with ``model.cond_drop_prob`` is the remedy.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from naturalspeech2_jax import HOP_LENGTH
from naturalspeech2_jax.diffusion import losses as L
from naturalspeech2_jax.diffusion.samplers import dpmpp_2m_trajectory


@dataclasses.dataclass(frozen=True)
class ProbeItem:
    """One teacher-forced utterance: inputs padded to the probe's static shapes."""

    utt_id: str
    text: str
    frames: int
    phonemes: np.ndarray  # [N] int32
    durations: np.ndarray  # [N] int32
    log_f0: np.ndarray  # [T] float32, padded with the last value
    latent: np.ndarray  # [frames, D] the utterance's own codec latent (de-normalised)
    prompt_latent: np.ndarray  # [P, D] from another utterance of the same speaker
    prompt_mask: np.ndarray  # [P]


def probe_items(
    source: Any,
    codebooks: np.ndarray,
    *,
    limit: int,
    max_frames: int,
    max_tokens: int,
    prompt_frames: int = 240,
    seed: int = 0,
) -> list[ProbeItem]:
    """Seeded choice of ``limit`` utterances (of speakers with >= 2 of them) that fit the shapes."""
    examples = [source[i] for i in range(len(source))]
    by_speaker: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_speaker.setdefault(_text(ex["speaker"]), []).append(i)
    rng = np.random.default_rng(seed)
    cb = jnp.asarray(codebooks)
    items = []
    for i in rng.permutation(len(examples)):
        ex = examples[i]
        others = [k for k in by_speaker[_text(ex["speaker"])] if k != i]
        n, frames = len(ex["phonemes"]), int(np.sum(ex["durations"]))
        if not others or frames > max_frames or n > max_tokens or frames < 1:
            continue
        p = examples[int(rng.choice(others))]
        pl = np.asarray(L.latents_from_codes(jnp.asarray(p["codes"][:prompt_frames])[None], cb))[0]
        prompt = np.zeros((prompt_frames, pl.shape[-1]), np.float32)
        prompt[: len(pl)] = pl
        pmask = (np.arange(prompt_frames) < len(pl)).astype(np.float32)
        lf0 = np.asarray(ex["log_f0"][:frames], np.float32)
        lf0 = np.concatenate([lf0, np.full(max_frames - frames, lf0[-1], np.float32)])
        latent = np.asarray(L.latents_from_codes(jnp.asarray(ex["codes"][:frames])[None], cb))[0]
        items.append(ProbeItem(
            _text(ex["id"]), _text(ex["text"]), frames, np.asarray(ex["phonemes"], np.int32),
            np.asarray(ex["durations"], np.int32), lf0, latent, prompt, pmask,
        ))  # fmt: skip
        if len(items) == limit:
            break
    return items


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@functools.partial(nnx.jit, static_argnames=("steps", "guidance_scale", "max_frames"))
def _trajectory(model, phonemes, token_mask, pz, prompt_mask, durations, log_f0, rng, *,
                steps: int, guidance_scale: float, max_frames: int):  # fmt: skip
    cache, cache_u, _, fm = model.prepare_denoiser(
        phonemes, token_mask, pz, prompt_mask, durations, log_f0, max_frames
    )
    x0, uncond = model.x0_fns(cache, cache_u, fm)
    shape = (phonemes.shape[0], max_frames, model.latent_dim)
    uncond = uncond if guidance_scale != 1.0 else None
    z, x0s, ts = dpmpp_2m_trajectory(
        x0, shape, rng, model.sde, steps, 1 / 1.2, guidance_scale=guidance_scale,
        x0_uncond_fn=uncond,
    )  # fmt: skip
    return z, x0s, ts, fm


def probe(
    model: Any,
    codec: Any,
    latent_stats: dict[str, np.ndarray],
    items: Sequence[ProbeItem],
    *,
    steps: int = 25,
    probe_steps: Sequence[int] = (0, 2, 5, 8, 12, 16, 20),
    guidance_scales: Sequence[float] = (1.0,),
    max_frames: int,
    max_tokens: int,
    transcribe: Callable[[np.ndarray], str] | None = None,
    wer: Callable[[str, str], Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Relative latent MSE (and WER with ``transcribe``/``wer``) per guidance scale and step.

    Returns {"ground_truth_codec": {...}, "guidance": {scale: [{"step", "t", "rel_mse",
    "wer"}, ..., {"step": "sample", ...}]}, "utterances": [...]}."""
    stats = {k: jnp.asarray(v, jnp.float32) for k, v in latent_stats.items()}
    probe_steps = sorted({s for s in probe_steps if 0 <= s < steps})
    rows: dict[float, dict[Any, list]] = {g: {} for g in guidance_scales}
    gt_err = [0, 0]
    utterances = []
    for k, item in enumerate(items):
        n = len(item.phonemes)
        pad = max_tokens - n
        phon = np.pad(item.phonemes, (0, pad))[None]
        tmask = (np.arange(max_tokens) < n).astype(np.float32)[None]
        dur = np.pad(item.durations, (0, pad))[None]
        z0 = np.asarray(L.normalize(jnp.asarray(item.latent), stats))
        variance = float(np.mean((z0 - z0.mean(0)) ** 2))
        pz = L.normalize(jnp.asarray(item.prompt_latent)[None], stats)
        record: dict[str, Any] = {"id": item.utt_id, "text": item.text}
        if transcribe is not None:
            wav = codec.decode(item.latent[None])[0][: item.frames * HOP_LENGTH]
            record["ground_truth_codec"] = hyp = transcribe(wav)
            gt_err = _add(gt_err, wer(item.text, hyp))
        for g in guidance_scales:
            z, x0s, ts, _ = _trajectory(
                model, jnp.asarray(phon), jnp.asarray(tmask), pz,
                jnp.asarray(item.prompt_mask)[None], jnp.asarray(dur),
                jnp.asarray(item.log_f0)[None], jax.random.key(seed + k), steps=int(steps),
                guidance_scale=float(g), max_frames=int(max_frames),
            )  # fmt: skip
            ts = np.asarray(ts)
            points = [(s, float(ts[s]), np.asarray(x0s[s, 0])) for s in probe_steps]
            points.append(("sample", 0.0, np.asarray(z[0])))
            for s, t, x in points:
                x = x[: item.frames]
                rel = float(np.mean((x - z0) ** 2)) / max(variance, 1e-8)
                cell = rows[g].setdefault(s, {"t": t, "rel_mse": [], "err": [0, 0]})
                cell["rel_mse"].append(rel)
                if transcribe is not None:
                    lat = np.asarray(L.denormalize(jnp.asarray(x), stats))
                    hyp = transcribe(codec.decode(lat[None])[0][: item.frames * HOP_LENGTH])
                    cell["err"] = _add(cell["err"], wer(item.text, hyp))
                    record[f"g{g}_{s}"] = hyp
        utterances.append(record)
    out: dict[str, Any] = {"utterances": utterances, "guidance": {}}
    if transcribe is not None:
        out["ground_truth_codec"] = {"wer": gt_err[0] / max(gt_err[1], 1)}
    for g, cells in rows.items():
        out["guidance"][str(g)] = [
            {
                "step": s, "t": round(c["t"], 4), "rel_mse": round(float(np.mean(c["rel_mse"])), 4),
                **({"wer": round(c["err"][0] / max(c["err"][1], 1), 4)}
                   if transcribe is not None else {}),
            }
            for s, c in cells.items()
        ]  # fmt: skip
    return out


def _add(acc: list[int], w: Any) -> list[int]:
    return [acc[0] + w.substitutions + w.deletions + w.insertions, acc[1] + w.reference_words]


def markdown(result: dict[str, Any]) -> str:
    """One table: a row per probed step, a column pair (rel. MSE, WER) per guidance scale."""
    scales = list(result["guidance"])
    has_wer = "ground_truth_codec" in result
    head = "| step | t | " + " | ".join(
        f"g={g} rel. MSE" + (f" | g={g} WER" if has_wer else "") for g in scales
    ) + " |"  # fmt: skip
    lines = [head, "|" + "---|" * (2 + len(scales) * (2 if has_wer else 1))]
    first = result["guidance"][scales[0]]
    for i, row in enumerate(first):
        cells = [str(row["step"]), f"{row['t']:.3f}"]
        for g in scales:
            r = result["guidance"][g][i]
            cells.append(f"{r['rel_mse']:.3f}")
            if has_wer:
                cells.append(f"{r['wer']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    if has_wer:
        lines.append(
            f"\nground truth through the codec: WER {result['ground_truth_codec']['wer']:.3f}"
        )
    return "\n".join(lines)
