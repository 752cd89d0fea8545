"""Sing a score in the voice of a prompt (NaturalSpeech 2's singing mode).

    python launch/sing.py --checkpoint W/ns2 --score song.json --prompt p.wav --out song.wav
    python launch/sing.py --checkpoint W/ns2 --score song.mid --prompt p.wav --out song.wav \
        [--steps 50 --sampler dpm++2m --pitch_shift -12 --vibrato_cents 30]

The score is MIDI (.mid), MusicXML (.musicxml/.xml) or JSON notes with lyrics (format in
naturalspeech2_jax/inference/singing.py). Note lengths and pitches replace the duration and pitch
predictors; the output lasts exactly the score. A PNG (mel, pitch, phonemes) is written beside it.
A score that does not parse, an unusable prompt or --out, or a number out of range is one line on
stderr (exit 2), before the checkpoint loads.
"""

from __future__ import annotations

import os
import sys

from naturalspeech2_jax import cli


def main(argv: list[str] | None = None) -> int:
    p = cli.voice_parser(
        __doc__, {"--score": ".json, .mid or .musicxml"}, 50, "more than speech: held vowels"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pitch_shift", type=float, default=0.0, help="transpose by semitones")
    p.add_argument("--vibrato_cents", type=float, default=30.0)
    args = p.parse_args(argv)
    from naturalspeech2_jax.inference.singing import check_score, sing  # JAX: after --help

    title = os.path.basename(args.score)
    return cli.synthesize_to_file(
        args, sing, args.score, title, "sung", preflight=lambda: check_score(args.score),
        seed=args.seed, pitch_shift=args.pitch_shift, vibrato_cents=args.vibrato_cents,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
