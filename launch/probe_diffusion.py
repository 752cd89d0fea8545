"""Probe an NS2 checkpoint's diffusion: where along the sampler does a sample lose the words?

    python launch/probe_diffusion.py --checkpoint RUN --data DATA/<name>_codes/1.0.0 \
        --split dev --limit 12 --guidance 1,2 --asr moonshine --out probe.json

Teacher-forced: each utterance keeps its own durations and log-F0, with a 3 s prompt from another
utterance of its speaker, so only the diffusion is measured. For each guidance scale, per probed
DPM-Solver++(2M) step: the relative latent MSE of the denoiser's x0 against the utterance's own
latent and (with --asr) the WER of that x0 through the codec; the last row is the sample. Writes
the JSON (per-utterance transcripts included) and a Markdown table beside it
(naturalspeech2_jax/benchmarks/diffusion_probe.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="NS2 run (--workdir of its training)")
    p.add_argument("--data", required=True, help="prepared codes dataset version dir")
    p.add_argument("--split", default="dev")
    p.add_argument("--limit", type=int, default=12, help="utterances")
    p.add_argument("--steps", type=int, default=25, help="DPM-Solver++(2M) steps")
    p.add_argument("--probe_steps", default="0,2,5,8,12,16,20", help="steps whose x0 is read")
    p.add_argument("--guidance", default="1", help="comma list of guidance scales")
    p.add_argument("--asr", default="", help="e.g. moonshine: adds WER (empty: latent MSE only)")
    p.add_argument("--max_frames", type=int, default=640)
    p.add_argument("--max_tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="result JSON path (.md beside it)")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        from naturalspeech2_jax.benchmarks import diffusion_probe
        from naturalspeech2_jax.data.pipeline import open_split
        from naturalspeech2_jax.inference import Synthesizer

        guidance = [float(v) for v in args.guidance.split(",") if v.strip()]
        if not guidance:
            raise ValueError("--guidance is empty; pass scales such as 1,2.")
        synth = Synthesizer.from_checkpoint(args.checkpoint)
        for g in guidance:
            synth.check_guidance(g)
        source = open_split(args.data, args.split)
        items = diffusion_probe.probe_items(
            source, synth.codec.codebooks, limit=args.limit, max_frames=args.max_frames,
            max_tokens=args.max_tokens, prompt_frames=synth.prompt_frames, seed=args.seed,
        )  # fmt: skip
        if not items:
            raise ValueError(
                f"{args.data} split {args.split} has no utterance within {args.max_frames} "
                "frames and tokens whose speaker has another; raise --max_frames or pick a split."
            )
        transcribe = wer = None
        if args.asr:
            from naturalspeech2_jax.evaluation.asr import get_asr, word_error_rate

            asr = get_asr(args.asr)
            transcribe, wer = asr.transcribe, word_error_rate
        result = diffusion_probe.probe(
            synth.model, synth.codec, synth.latent_stats, items, steps=args.steps,
            probe_steps=[int(s) for s in args.probe_steps.split(",") if s.strip()],
            guidance_scales=guidance, max_frames=args.max_frames, max_tokens=args.max_tokens,
            transcribe=transcribe, wer=wer, seed=args.seed,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        logging.error("%s", e)
        return 2
    result["config"] = vars(args) | {"checkpoint_step": synth.step}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    table = diffusion_probe.markdown(result)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
