"""Export a trained NS2 model and its codec as one folder that every --checkpoint command loads.

    python launch/export.py --checkpoint W/ns2 --out pretrained/NAME \
        [--codec_checkpoint W/codec] [--dtype bfloat16] [--overwrite]

--checkpoint is the --workdir of an NS2 run (launch/train.py --config=configs/diffusion.py; its
latest checkpoint) or an exported folder (to convert it, e.g. to bfloat16). The codec is the run
the NS2 checkpoint records, or --codec_checkpoint when it moved. The folder holds the weights
alone (EMA when the run kept them; no optimizer state), their configs, the phoneme vocabulary and
the latent statistics (layout: naturalspeech2_jax/inference/exported.py); --dtype bfloat16 halves
the weights' bytes (codebooks stay float32; loading casts back to float32). Then:

    python launch/synthesize.py --checkpoint pretrained/NAME --text "Hello." --prompt p.wav \
        --out hello.wav
    python launch/codec.py resynth --checkpoint pretrained/NAME in.wav out.wav

It prints the folder and its size. An existing --out is replaced only with --overwrite (and only
when it is an earlier export); errors are one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from naturalspeech2_jax import cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="NS2 run (--workdir of its training)")
    p.add_argument("--out", required=True, help="the model folder to write, e.g. pretrained/NAME")
    p.add_argument("--codec_checkpoint", help="codec run, if it moved since NS2 was trained")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="dtype of the stored weights (codebooks stay float32)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export at --out")
    return p


def run(args: argparse.Namespace) -> int:
    # JAX and the models load here, after argparse: --help and bad flags answer at once.
    from naturalspeech2_jax.inference import export

    result = export.export_model(args.checkpoint, args.out, codec_checkpoint=args.codec_checkpoint,
                                 dtype=args.dtype, overwrite=args.overwrite)  # fmt: skip
    print(result.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Our progress at INFO; Orbax's chatter only from WARNING up.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("naturalspeech2_jax").setLevel(logging.INFO)
    return cli.one_line_errors(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
