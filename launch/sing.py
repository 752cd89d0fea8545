"""Sing a score in the voice of a prompt (NaturalSpeech 2's singing mode).

    python launch/sing.py --checkpoint W/ns2 --score song.json --prompt p.wav --out song.wav
    python launch/sing.py --checkpoint W/ns2 --score song.mid --prompt p.wav --out song.wav \
        [--steps 50 --sampler dpm++2m --pitch_shift -12 --vibrato_cents 30]

The score is MIDI (.mid), MusicXML (.musicxml/.xml) or JSON notes with lyrics (format in
naturalspeech2_jax/inference/singing.py). Note lengths and pitches replace the duration and pitch
predictors; the output lasts exactly the score. A PNG (mel, pitch, phonemes) is written beside it.
"""

from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="NS2 run (--workdir of its training)")
    p.add_argument("--score", required=True, help=".json, .mid or .musicxml")
    p.add_argument("--prompt", required=True, help="a recording of the target voice (>= 1 s)")
    p.add_argument("--out", required=True, help="output wav")
    p.add_argument("--sampler", default="dpm++2m")
    p.add_argument("--steps", type=int, default=50, help="more than speech: held vowels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pitch_shift", type=float, default=0.0, help="transpose by semitones")
    p.add_argument("--vibrato_cents", type=float, default=30.0)
    args = p.parse_args(argv)
    try:
        from launch.synthesize import write_outputs
        from naturalspeech2_jax.inference import Synthesizer
        from naturalspeech2_jax.inference.singing import sing

        synth = Synthesizer.from_checkpoint(args.checkpoint)
        result = sing(
            synth, args.score, args.prompt, sampler=args.sampler, steps=args.steps,
            seed=args.seed, pitch_shift=args.pitch_shift, vibrato_cents=args.vibrato_cents,
        )  # fmt: skip
        write_outputs(args.out, result, os.path.basename(args.score))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(result.wav) / result.sample_rate:.2f} s sung")
    return 0


if __name__ == "__main__":
    sys.exit(main())
