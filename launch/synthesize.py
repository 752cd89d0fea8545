"""Text-to-speech from the command line with a trained NS2 run.

    python launch/synthesize.py --checkpoint runs/ns2_tiny --text "Hello there." \
        --prompt prompt.wav --out out.wav [--sampler dpm++2m --steps 25 --seed 0]
    python launch/synthesize.py --checkpoint W/ns2 --text_file lines.txt --prompt p.wav \
        --out out_dir/        # one sentence per line -> out_dir/0000.wav ... (progress bar)
    python launch/synthesize.py --checkpoint W/ns2 --prompt p.wav --rtf euler:150,dpm++2m:25

Beside every wav a PNG shows the mel spectrogram, the pitch and the phoneme boundaries, and
``<stem>.alignment.json`` holds the phoneme alignment. ``--rtf`` measures the real-time factor of
each ``sampler:steps`` on this machine after a warm-up call (compile time reported apart).
Errors (bad checkpoint, empty text, short or silent prompt...) are one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from naturalspeech2_jax import cli

RTF_TEXT = (
    "The quick brown fox jumps over the lazy dog. A second sentence makes the batch a little "
    "longer, as real text would."
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="NS2 run (--workdir of its training)")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--text", help="text to speak (long text is split at sentences)")
    text.add_argument("--text_file", help="a UTF-8 file: one utterance per line")
    p.add_argument("--prompt", required=True, help="a recording of the target voice (>= 1 s)")
    p.add_argument("--out", help="output wav (--text) or directory (--text_file)")
    p.add_argument("--sampler", default="dpm++2m", help="euler | heun | dpm++2m | sde")
    p.add_argument("--steps", type=int, default=25, help="sampler steps (paper: euler 150)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speed", type=float, default=1.0, help="> 1 speaks faster")
    p.add_argument("--pitch_shift", type=float, default=0.0, help="semitones")
    p.add_argument("--temperature", type=float, default=1 / 1.2)
    p.add_argument(
        "--guidance_scale", type=float, default=1.0,
        help="classifier-free guidance (> 1 needs a model trained with model.cond_drop_prob > 0)",
    )  # fmt: skip
    p.add_argument("--codec_checkpoint", default=None, help="override the recorded codec run")
    p.add_argument("--no_plot", action="store_true", help="skip the PNG")
    p.add_argument("--rtf", default="", help="measure RTF: comma list of sampler:steps")
    return p


def measure_rtf(synth, prompt: str, specs: str, text: str = RTF_TEXT) -> list[dict]:
    """Per sampler:steps, the first call's seconds (compile + run) and the mean of two warm runs."""
    rows = []
    for spec in [s for s in specs.split(",") if s]:
        sampler, _, steps = spec.partition(":")
        steps = int(steps or 25)
        t0 = time.perf_counter()
        synth.synthesize(text, prompt, sampler=sampler, steps=steps)
        first = time.perf_counter() - t0
        runs = []
        for seed in (1, 2):
            t0 = time.perf_counter()
            out = synth.synthesize(text, prompt, sampler=sampler, steps=steps, seed=seed)
            runs.append(time.perf_counter() - t0)
        audio = len(out.wav) / out.sample_rate
        warm = sum(runs) / len(runs)
        rows.append({
            "sampler": sampler, "steps": steps, "audio_s": round(audio, 2),
            "warm_s": round(warm, 3), "rtf": round(warm / audio, 4),
            "compile_s": round(max(first - warm, 0.0), 1),
            "diffusion_s": round(synth.timing["prior_diffusion_s"], 3),
            "decode_s": round(synth.timing["decode_s"], 3),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def run(args: argparse.Namespace) -> None:
    from naturalspeech2_jax.inference import Synthesizer

    synth = Synthesizer.from_checkpoint(args.checkpoint, codec_checkpoint=args.codec_checkpoint)
    if args.rtf:
        measure_rtf(synth, args.prompt, args.rtf)
        return
    if not args.out:
        raise ValueError("--out is required; pass the output wav (or a directory for --text_file).")
    kw = dict(sampler=args.sampler, steps=args.steps, seed=args.seed, speed=args.speed,
              pitch_shift=args.pitch_shift, temperature=args.temperature,
              guidance_scale=args.guidance_scale)  # fmt: skip
    if args.text_file:
        if not os.path.isfile(args.text_file):
            raise FileNotFoundError(f"--text_file {args.text_file} does not exist; check the path.")
        with open(args.text_file, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip()]
        if not lines:
            raise ValueError(f"{args.text_file} holds no text; write one utterance per line.")
        os.makedirs(args.out, exist_ok=True)
        results = synth.synthesize_batch(lines, args.prompt, progress=True, **kw)
        for i, (line, result) in enumerate(zip(lines, results, strict=True)):
            path = os.path.join(args.out, f"{i:04d}.wav")
            cli.write_outputs(path, result, line, not args.no_plot)
        print(f"{args.out}: {len(results)} utterances")
        return
    if args.text is None:
        raise ValueError('pass --text "..." or --text_file F.')
    result = synth.synthesize(args.text, args.prompt, **kw)
    cli.write_outputs(args.out, result, args.text, not args.no_plot)
    print(f"{args.out}: {len(result.wav) / result.sample_rate:.2f} s, "
          f"{len(result.phonemes)} phonemes")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    return cli.one_line_errors(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
