"""Voice conversion: say what a source recording says, in the voice of a target prompt.

    python launch/convert.py --checkpoint W/ns2 --source src.wav --text "what src.wav says" \
        --prompt target.wav --out converted.wav [--steps 25 --sampler dpm++2m --keep_pitch] \
        [--aligner pocketsphinx | --aligner DATA/_work/<name>/aligner]

The source latent is run through the ODE towards noise (conditioned on the source), then back
with the target prompt (naturalspeech2_jax/inference/voice_conversion.py). The output has the
source's length; its pitch contour is moved to the target's register unless --keep_pitch.
With --aligner (``pocketsphinx``: its pretrained en-us model, what launch/prepare_data.py uses by
default; or the built-in aligner directory prepare_data.py trained on the NS2 model's corpus) the
phoneme durations are read off the source; without it they are predicted and rescaled.
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
    p.add_argument("--source", required=True, help="the speech to convert")
    p.add_argument("--text", required=True, help="the source's transcript")
    p.add_argument("--prompt", required=True, help="a recording of the target voice (>= 1 s)")
    p.add_argument("--out", required=True, help="output wav")
    p.add_argument("--sampler", default="dpm++2m")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--keep_pitch", action="store_true", help="keep the source's F0 register")
    p.add_argument(
        "--aligner",
        help="'pocketsphinx' or a built-in aligner dir: source durations by forced alignment",
    )
    args = p.parse_args(argv)
    try:
        from launch.synthesize import write_outputs
        from naturalspeech2_jax.inference import Synthesizer
        from naturalspeech2_jax.inference.voice_conversion import convert

        synth = Synthesizer.from_checkpoint(args.checkpoint)
        result = convert(
            synth, args.source, args.prompt, text=args.text, sampler=args.sampler,
            steps=args.steps, keep_pitch=args.keep_pitch, aligner=args.aligner,
        )  # fmt: skip
        write_outputs(args.out, result, args.text)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(result.wav) / result.sample_rate:.2f} s converted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
