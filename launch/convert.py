"""Voice conversion: say what a source recording says, in the voice of a target prompt.

    python launch/convert.py --checkpoint W/ns2 --source src.wav --text "what src.wav says" \
        --prompt target.wav --out converted.wav [--steps 25 --sampler dpm++2m --keep_pitch] \
        [--aligner pocketsphinx | --aligner DATA/_work/<name>/aligner]

The source latent is run through the ODE towards noise (conditioned on the source), then back
with the target prompt (naturalspeech2_jax/inference/voice_conversion.py). The output has the
source's length (at most 25.6 s); its pitch contour is moved to the target's register unless
--keep_pitch. A missing, silent or too short source or prompt, an unusable --out or a number out of
range is one line on stderr (exit 2), before the checkpoint loads.
With --aligner (``pocketsphinx``: its pretrained en-us model, what launch/prepare_data.py uses by
default; or the built-in aligner directory prepare_data.py trained on the NS2 model's corpus) the
phoneme durations are read off the source; without it they are predicted and rescaled.
"""

from __future__ import annotations

import os
import sys

from naturalspeech2_jax import cli


def main(argv: list[str] | None = None) -> int:
    p = cli.voice_parser(
        __doc__, {"--source": "the speech to convert", "--text": "the source's transcript"}, 25
    )
    p.add_argument("--keep_pitch", action="store_true", help="keep the source's F0 register")
    p.add_argument(
        "--aligner",
        help="'pocketsphinx' or a built-in aligner dir: source durations by forced alignment",
    )
    args = p.parse_args(argv)
    from naturalspeech2_jax.inference import voice_conversion  # JAX: after --help

    def preflight() -> None:
        if not args.text.strip():
            raise ValueError("--text is empty; pass the transcript of --source.")
        voice_conversion.read_source(args.source)
        if args.aligner and args.aligner != "pocketsphinx" and not os.path.isdir(args.aligner):
            raise ValueError(f"--aligner {args.aligner} is neither 'pocketsphinx' nor a folder; "
                             "pass DATA/_work/<name>/aligner or leave it out.")  # fmt: skip

    return cli.synthesize_to_file(
        args, voice_conversion.convert, args.source, args.text, "converted", preflight=preflight,
        text=args.text, keep_pitch=args.keep_pitch, aligner=args.aligner,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
