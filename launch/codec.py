"""Use a trained codec from the command line.

    python launch/codec.py encode   --checkpoint RUN in.wav codes.npy [--n_q 8]
    python launch/codec.py decode   --checkpoint RUN codes.npy out.wav
    python launch/codec.py resynth  --checkpoint RUN in.flac out.wav [--n_q 8]
    python launch/codec.py stats    --checkpoint RUN DATASET_DIR [--split train,cathy]
    python launch/codec.py encode-dataset --checkpoint RUN DATA/<name>/1.0.0 OUT/1.0.0 \
        [--splits train,heldout] [--batch_size 8] [--devices N] [--bucket_frames 50] \
        [--distributed]

RUN is the --workdir of ``launch/train.py --config=configs/codec.py``. ``encode`` reads any sample
rate (resampled to 16 kHz) and writes int32 codes [frames, n_q] (.npy); ``decode`` writes 16 kHz
audio of frames * 200 samples; ``resynth`` writes 16 kHz audio with the input's duration;
``stats`` writes RUN/latent_stats.npz (per-channel mean/std of the latent z); ``encode-dataset``
writes a sibling prepared dataset with the 16 code ids of every frame (see
``naturalspeech2_jax/inference/codes_dataset.py``). Errors are one line on stderr with exit
status 2.

``encode-dataset`` encodes on every local device (or the first ``--devices``): utterances of equal
length padded to ``--bucket_frames`` frames go ``--batch_size`` per device into one call, the
batch split over the devices, and every utterance gets the codes ``encode`` gives it alone. With
``--distributed`` (or NS2_DISTRIBUTED=1) it first starts ``jax.distributed``; run the same
command on every host: host p of P encodes the p-th of P contiguous blocks of examples with its
devices and writes its own shards into OUT (a shared filesystem every host writes), and host 0
then writes the metadata that makes them one dataset, records in the source's order. OUT must not
hold a dataset yet.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from naturalspeech2_jax import cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, ins in (
        ("encode", ("input", "output")),
        ("decode", ("input", "output")),
        ("resynth", ("input", "output")),
        ("stats", ("dataset_dir",)),
        ("encode-dataset", ("dataset_dir", "output")),
    ):
        p = sub.add_parser(name)
        p.add_argument("--checkpoint", required=True, help="codec training workdir")
        for arg in ins:
            p.add_argument(arg)
        if name in ("encode", "resynth"):
            p.add_argument("--n_q", type=int, default=None, help="quantizers to keep (1..16)")
        if name == "stats":
            p.add_argument("--split", default="train", help="comma-separated splits")
            p.add_argument("--max_examples", type=int, default=None)
        if name == "encode-dataset":
            p.add_argument("--splits", default="", help="comma-separated (default: all)")
            p.add_argument("--bucket_frames", type=int, default=50)
            p.add_argument("--batch_size", type=int, default=8, help="utterances per device")
            p.add_argument("--devices", type=int, default=None, help="local devices (default: all)")
            p.add_argument("--distributed", action="store_true",
                           help="start jax.distributed: every host encodes its share")  # fmt: skip
    return parser


def check_args(args: argparse.Namespace) -> None:
    """ValueError / FileNotFoundError (one sentence) for what needs no codec: a number out of
    range, a missing input file or dataset folder."""
    for flag, value in (("--n_q", getattr(args, "n_q", None)),
                        ("--bucket_frames", getattr(args, "bucket_frames", None)),
                        ("--batch_size", getattr(args, "batch_size", None)),
                        ("--devices", getattr(args, "devices", None)),
                        ("--max_examples", getattr(args, "max_examples", None))):  # fmt: skip
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be an integer >= 1, got {value}.")
    if "://" in args.checkpoint:
        return
    if not os.path.isdir(args.checkpoint):
        what = "is a file, not a folder" if os.path.exists(args.checkpoint) else "does not exist"
        raise FileNotFoundError(f"codec checkpoint {args.checkpoint} {what}; pass the --workdir "
                                "of launch/train.py --config=configs/codec.py.")  # fmt: skip
    dataset = getattr(args, "dataset_dir", None)
    if dataset and "://" not in dataset and not os.path.isdir(dataset):
        raise FileNotFoundError(f"dataset {dataset} does not exist; pass DATA/<name>/<version> "
                                "written by launch/prepare_data.py.")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    from naturalspeech2_jax.inference import codec as codec_api
    from naturalspeech2_jax.inference import codes_dataset

    if args.command == "encode":
        codes = codec_api.encode_file(args.checkpoint, args.input, args.output, args.n_q)
        print(f"{args.output}: codes {codes.shape[0]} frames x {codes.shape[1]} quantizers")
    elif args.command == "decode":
        wav = codec_api.decode_file(args.checkpoint, args.input, args.output)
        print(f"{args.output}: {len(wav)} samples at 16 kHz")
    elif args.command == "resynth":
        wav = codec_api.resynth_file(args.checkpoint, args.input, args.output, args.n_q)
        print(f"{args.output}: {len(wav)} samples at 16 kHz")
    elif args.command == "stats":
        codec = codec_api.Codec.from_checkpoint(args.checkpoint)
        stats = codes_dataset.compute_latent_stats(
            codec, args.dataset_dir, args.split, args.max_examples
        )
        path = codec_api.save_latent_stats(stats, args.checkpoint)
        print(f"{path}: {stats['frames']} frames, mean |mu| {abs(stats['mean']).mean():.3f}")
    elif args.command == "encode-dataset":
        from naturalspeech2_jax import parallel

        # Before anything touches a device: jax.distributed must start first.
        parallel.maybe_initialize_distributed(args.distributed)
        splits = [s for s in args.splits.split(",") if s] or None
        out = codes_dataset.encode_dataset(
            args.checkpoint,
            args.dataset_dir,
            args.output,
            splits=splits,
            bucket_frames=args.bucket_frames,
            batch_size=args.batch_size,
            devices=args.devices,
        )
        if parallel.is_main_process():
            print(out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)

    def checked_run() -> None:
        check_args(args)  # before the codec loads
        run(args)

    # Checkpoint, input and dataset errors carry one sentence naming the file and the fix.
    return cli.one_line_errors(checked_run)


if __name__ == "__main__":
    sys.exit(main())
