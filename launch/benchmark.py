"""Benchmark training and inference speed, FLOP utilisation, memory and the data pipeline.

    python launch/benchmark.py --out /tmp/bench.json                      # smoke,tiny presets
    python launch/benchmark.py --out B.json --presets smoke,tiny,base --tasks codec,ns2
    python launch/benchmark.py --out B.json --smoke                        # tests: seconds

For each task (codec, ns2, aligner, loop_test) and preset whose config exists in configs/: compile
time, train-step time, examples/s and (where batches carry a frame mask) codec frames/s and audio
seconds/s, model FLOPs per step from XLA's cost analysis of the compiled step, FLOP utilisation
against a large float32 matmul measured in the same run (on an accelerator: against its bf16 peak),
and the compiled program's memory. For NaturalSpeech 2 also the inference real-time factor per
sampler and step count. Plus the data pipeline's examples/s over the embedded smoke dataset, and
pocketsphinx forced alignment's utterances/s and boundary error over it (``--no_sphinx`` skips).
Tasks or presets not in this tree are listed under "skipped" with the reason. The same command
runs on CPU, GPU and TPU; timings never fail anything (the machines are shared and noisy).

Hardware and expected result: on 2 shared CPU cores the default run takes a few minutes; the
float32 matmul reaches tens of GFLOP/s and small models reach a few percent of it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time

from naturalspeech2_jax import host_memory
from naturalspeech2_jax.benchmarks import speed as benchmark
from naturalspeech2_jax.evaluation.report import write_json

ALL_TASKS = ("codec", "ns2", "aligner", "loop_test")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _parse_override(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def run(args: argparse.Namespace) -> dict:
    import jax

    started = time.time()
    result: dict = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
        },
        "smoke": bool(args.smoke),
        "train": [],
        "inference": [],
        "skipped": [],
    }
    logging.info("measuring the matmul reference")
    reference = benchmark.matmul_reference(smoke=args.smoke)
    result["reference"] = reference

    options = benchmark.TrainBenchOptions(
        steps=args.steps,
        warmup=1,
        num_devices=args.num_devices,
        overrides=dict(_parse_override(o) for o in args.override),
    )
    step_counts = [int(s) for s in _csv(args.inference_steps)]
    for task in _csv(args.tasks):
        for preset in _csv(args.presets):
            config, why = benchmark.load_task_config(task, preset)
            if config is None:
                result["skipped"].append({"task": task, "preset": preset, "reason": why})
                logging.warning("skipping %s:%s: %s", task, preset, why)
                continue
            if args.smoke:
                config.total_steps = max(int(config.get("total_steps", 1)), args.steps + 2)
            if task == "ns2" and not config.data.get("dataset_dir"):
                # speed does not depend on the codec's weights: a random codec and random codes
                from naturalspeech2_jax.data.embedded import cache_root
                from naturalspeech2_jax.tasks import random_codec

                config.data.dataset_dir = str(random_codec.random_codes_dataset(cache_root()))
                config.codec.checkpoint = random_codec.RANDOM_CODEC
            logging.info("benchmarking %s:%s training", task, preset)
            try:
                row = benchmark.benchmark_train_step(config, options, reference)
            except Exception as e:  # noqa: BLE001 - one failing preset must not end the run
                logging.exception("%s:%s failed", task, preset)
                result["skipped"].append(
                    {"task": task, "preset": preset, "reason": f"{type(e).__name__}: {e}"}
                )
                continue
            result["train"].append(row)
            logging.info(
                "%s:%s step %.3f s, compile %.1f s, MFU %s",
                task,
                preset,
                row["step_time_s"],
                row["compile_s"],
                f"{row['mfu']:.4f}" if row.get("mfu") is not None else "-",
            )
            if task == "ns2":
                try:
                    inf = benchmark.benchmark_task_inference(
                        config,
                        step_counts=step_counts,
                        samplers=_csv(args.samplers) or None,
                        seconds=args.inference_seconds,
                    )
                except Exception as e:  # noqa: BLE001
                    logging.exception("%s:%s inference failed", task, preset)
                    inf = {"skipped": f"{type(e).__name__}: {e}"}
                result["inference"].append({"task": task, "preset": preset, **inf})
    if "ns2" not in _csv(args.tasks) or not result["inference"]:
        result["inference_note"] = (
            "inference real-time factor is measured for the ns2 task only; "
            + (
                "it was not requested"
                if "ns2" not in _csv(args.tasks)
                else "it is not in this tree yet"
            )
        )

    if args.pipeline:
        logging.info("benchmarking the data pipeline over the embedded smoke dataset")
        try:
            from naturalspeech2_jax.data.embedded import embedded_dataset_dir

            dataset = args.dataset_dir or embedded_dataset_dir("smoke")
            result["pipeline"] = benchmark.benchmark_pipeline(
                dataset, batch_size=8, batches=5 if args.smoke else 20
            )
        except Exception as e:  # noqa: BLE001
            logging.exception("pipeline benchmark failed")
            result["pipeline"] = {"skipped": f"{type(e).__name__}: {e}"}
    if args.sphinx:
        logging.info("benchmarking pocketsphinx forced alignment")
        try:
            from naturalspeech2_jax.data.embedded import embedded_dataset_dir

            dataset = args.dataset_dir or embedded_dataset_dir("smoke")
            result["sphinx_alignment"] = benchmark.benchmark_sphinx_alignment(
                dataset, utterances=8 if args.smoke else 40
            )
        except Exception as e:  # noqa: BLE001
            logging.exception("pocketsphinx benchmark failed")
            result["sphinx_alignment"] = {"skipped": f"{type(e).__name__}: {e}"}
    logging.info("measuring the matmul reference again (the load may have changed)")
    benchmark.remeasure_reference(reference, smoke=args.smoke)
    peak, peak_name = benchmark.reference_peak(reference)
    reference["utilisation_against"] = {"name": peak_name, "flops_per_s": peak}
    for row in result["train"]:
        benchmark.add_utilisation(row, reference)
    result["wall_s"] = time.time() - started
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", required=True, help="result JSON path")
    parser.add_argument("--presets", default="smoke,tiny", help="comma list of presets")
    parser.add_argument("--tasks", default=",".join(ALL_TASKS), help="comma list of tasks")
    parser.add_argument("--steps", type=int, default=5, help="timed train steps per preset")
    parser.add_argument(
        "--num_devices", type=int, default=1, help="devices per run (0 = all, over the mesh)"
    )
    parser.add_argument("--inference_steps", default="4,16,50,150", help="ns2 sampler steps")
    parser.add_argument("--samplers", default="", help="ns2 samplers (default: all registered)")
    parser.add_argument("--inference_seconds", type=float, default=10.0)
    parser.add_argument("--dataset_dir", default="", help="prepared dataset for the pipeline")
    parser.add_argument("--no_pipeline", dest="pipeline", action="store_false")
    parser.add_argument(
        "--no_sphinx", dest="sphinx", action="store_false", help="skip the pocketsphinx aligner"
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help="config override KEY=VALUE for every run (JSON values), e.g. batch_size=4",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds, for tests: smoke preset, 2 timed steps, small matmul, few batches",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.presets = "smoke"
        args.steps = min(args.steps, 2)
        args.inference_steps = "2"
        args.inference_seconds = 2.0
    result = run(args)
    write_json(result, args.out)
    print(
        json.dumps({k: v for k, v in result.items() if k != "host"}, indent=1, default=str)[:4000]
    )
    return 0


if __name__ == "__main__":
    host_memory.ensure()  # huge pages for XLA's host buffers: re-executes once
    sys.exit(main())
