"""A web demo of an NS2 checkpoint: speak, sing and convert in a browser (Gradio).

    pip install -e ".[demo]"
    python launch/demo.py --checkpoint W/ns2 [--host 127.0.0.1 --port 7860]

Open the printed URL. The page comes up at once and says what the model is doing until it is
loaded and warmed up (--warmup_tokens x --warmup_frames buckets compiled ahead). One synthesis
runs at a time; other requests wait in the queue with their position shown. Outputs (WAV, the
mel/pitch/phoneme PNG, the alignment JSON) are kept in --outputs (a temporary folder by default).
--host 0.0.0.0 serves other machines too: the demo has no authentication.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading

from naturalspeech2_jax import cli


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of integers, e.g. 32,64"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} needs positive integers, e.g. 32,64")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="NS2 run (--workdir of its training)")
    p.add_argument("--codec_checkpoint", help="codec run, if it moved since NS2 was trained")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--outputs", help="folder for the generated files (default: a temp folder)")
    p.add_argument("--aligner", help="voice conversion: 'pocketsphinx' or a built-in aligner dir")
    p.add_argument("--warmup_tokens", type=_ints, default=(32, 64),
                   help="phoneme buckets compiled at start")  # fmt: skip
    p.add_argument("--warmup_frames", type=_ints, default=(128, 256, 384, 512),
                   help="frame buckets compiled at start")  # fmt: skip
    p.add_argument("--max_queue", type=int, default=32, help="requests waiting at most")
    return p


def check_args(args: argparse.Namespace) -> None:
    """ValueError with one sentence for what can be checked before JAX loads."""
    run = args.checkpoint
    # A model folder of launch/export.py (model.json) keeps the NS2 config in its ns2/ folder.
    exported = os.path.isfile(os.path.join(run, "model.json"))
    config = os.path.join(run, "ns2" if exported else "", "config.json")
    if not os.path.isdir(run):
        raise ValueError(f"NS2 checkpoint {run} does not exist; pass the --workdir of an NS2 "
                         "run (launch/train.py --config=configs/diffusion.py).")  # fmt: skip
    try:
        with open(config, encoding="utf-8") as f:
            task = json.load(f).get("task")
    except (OSError, json.JSONDecodeError, AttributeError):
        raise ValueError(f"{config} is missing or not valid JSON, so {run} is not a training "
                         "run; pass the --workdir of an NS2 run.") from None  # fmt: skip
    if task != "ns2":
        raise ValueError(f"{run} is a {task!r} run, not an NS2 run; pass the --workdir of an "
                         "NS2 run (launch/train.py --config=configs/diffusion.py).")  # fmt: skip
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}; try --port 7860.")
    if args.max_queue < 1:
        raise ValueError(f"--max_queue must be >= 1, got {args.max_queue}; try 32.")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((args.host, args.port))
        except OSError as e:
            raise ValueError(f"cannot serve on {args.host}:{args.port} ({e.strerror}); pass a "
                             "free --port or another --host.") from None  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Our progress at INFO; Orbax's and the web stack's chatter only from WARNING up.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("naturalspeech2_jax").setLevel(logging.INFO)

    def run() -> None:
        check_args(args)
        try:
            from naturalspeech2_jax.demo.app import serve  # Gradio: after the checks
        except ImportError as e:
            raise ValueError(f'the demo needs Gradio ({e}); pip install -e ".[demo]".') from None
        from naturalspeech2_jax import xla_cache
        from naturalspeech2_jax.demo.service import DemoService

        xla_cache.enable()

        service = DemoService(
            args.checkpoint, codec_checkpoint=args.codec_checkpoint, aligner=args.aligner,
            outputs_dir=args.outputs, warmup_tokens=args.warmup_tokens,
            warmup_frames=args.warmup_frames,
        )  # fmt: skip
        service.start()
        _, url = serve(service, host=args.host, port=args.port, max_queue=args.max_queue,
                       block=False)  # fmt: skip
        print(f"NS2 demo of {args.checkpoint} at {url} (Ctrl-C stops it)", flush=True)
        try:
            threading.Event().wait()  # the server runs in its own threads
        except KeyboardInterrupt:
            print("stopped", flush=True)

    return cli.one_line_errors(run)


if __name__ == "__main__":
    sys.exit(main())
