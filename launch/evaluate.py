"""Evaluate zero-shot TTS (WER, speaker similarity, DNSMOS, prosody) and codec quality.

Zero-shot TTS, ground truth only (works without any checkpoint):
  python launch/evaluate.py tts --ground_truth_only \
      --from_dir ../shared/data/speechocean762_adult/dev --limit 200 --out /tmp/eval_gt/r.json
  python launch/evaluate.py tts --ground_truth_only --list pairs.tsv --out r.json
A list TSV has a header and columns prompt_audio, target_text, ground_truth_audio (optional: id,
speaker, prompt_start, prompt_seconds, ground_truth_durations, prompt_durations). With --from_dir
the pairs are drawn (seeded) from a Kaldi-style corpus: each target gets a 3 s crop of ANOTHER
utterance of the same speaker; --save_list writes them as a TSV for reuse.

With --checkpoint DIR the model's speech is evaluated beside the ground truth (and beside the ground
truth passed through the codec, --codec_checkpoint).

Codec quality (PESQ-WB, STOI, mel distance, SI-SDR) beside Opus at matching bitrates:
  python launch/evaluate.py codec --reference_dir ../shared/data/speechocean762_adult/dev \
      --limit 50 --out /tmp/codec.json [--checkpoint CODEC_DIR --n_quantizers 8,16]

Outputs: the JSON (summary, per-system means, per-utterance records, timings), a Markdown table
next to it (.md) and PNG plots in <out stem>_plots/.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys
import time

# Evaluation runs on CPU; JAX (imported by model loaders) must not grab an accelerator by accident.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from naturalspeech2_jax.evaluation import codec_metrics, corpus, report, tts_eval  # noqa: E402


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _outputs(out: str) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    path = pathlib.Path(out)
    return path, path.with_suffix(".md"), path.with_name(path.stem + "_plots")


def run_tts(args: argparse.Namespace) -> int:
    if args.list:
        pairs = corpus.read_pair_list(args.list)
        if args.limit is not None:
            pairs = pairs[: args.limit]
    else:
        utterances = corpus.read_kaldi_dir(args.from_dir)
        pairs = corpus.make_pairs(
            utterances, seed=args.seed, limit=args.limit, prompt_seconds=args.prompt_seconds
        )
    json_path, md_path, plot_dir = _outputs(args.out)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    if args.save_list:
        corpus.write_pair_list(pairs, args.save_list)

    synthesize = codec = None
    try:
        if not args.ground_truth_only:
            if not args.checkpoint:
                raise SystemExit("tts needs --checkpoint DIR, or --ground_truth_only")
            synthesize = tts_eval.load_from_checkpoint("synthesizer", args.checkpoint)
        if args.codec_checkpoint:
            codec_fn = tts_eval.load_from_checkpoint("codec", args.codec_checkpoint)
            n_q = args.codec_quantizers

            def codec(wav):
                return codec_fn(wav, n_q)

    except tts_eval.CheckpointLoaderUnavailable as e:
        logging.error("%s", e)
        return 2

    config = tts_eval.EvaluatorConfig(
        asr=[a for a in args.asr.split(",") if a],
        speaker="speaker" not in args.skip,
        dnsmos="dnsmos" not in args.skip,
        prosody="prosody" not in args.skip,
    )
    logging.info("evaluating %d pairs with %s", len(pairs), config)
    result = tts_eval.evaluate_tts(pairs, synthesize, codec, config, log_every=args.log_every)
    result["pairs_source"] = args.list or args.from_dir
    result["seed"] = args.seed
    report.write_json(result, json_path)
    md_path.write_text(report.markdown_report(result), encoding="utf-8")
    if not args.no_plots:
        report.plot_report(result, plot_dir)
    summary = {k: v for k, v in result["summary"].items() if not isinstance(v, str)}
    logging.info("summary (%s): %s", result["summary"]["system"], summary)
    print(report.markdown_report(result))
    return 0


def run_codec(args: argparse.Namespace) -> int:
    from naturalspeech2_jax.evaluation import opus

    files = corpus.list_audio_files(args.reference_dir)
    if not files:
        logging.error("no audio files under %s", args.reference_dir)
        return 2
    # Spread a limited selection over the whole directory (every k-th file), deterministically.
    if args.limit and len(files) > args.limit:
        step = len(files) / args.limit
        files = [files[int(i * step)] for i in range(args.limit)]
    wavs = [corpus.load_audio(f) for f in files]

    codec = None
    if args.checkpoint:
        try:
            codec = tts_eval.load_from_checkpoint("codec", args.checkpoint)
        except tts_eval.CheckpointLoaderUnavailable as e:
            logging.error("%s", e)
            return 2
    n_quantizers = _ints(args.n_quantizers)
    opus_targets = _floats(args.opus_kbps) or [
        codec_metrics.codec_bitrate_kbps(nq, args.codebook_size) for nq in n_quantizers
    ]
    if not opus.opus_available(args.opus_backend):
        hint = " (install ffmpeg with libopus: apt-get install ffmpeg)"
        logging.warning(
            "Skipping the Opus rows: the %r Opus backend is not available on this machine%s.",
            args.opus_backend,
            hint if args.opus_backend == "ffmpeg" else "",
        )
        opus_targets = []
    start = time.perf_counter()
    rows = codec_metrics.codec_table(
        wavs,
        codec,
        n_quantizers,
        opus_targets,
        codebook_size=args.codebook_size,
        opus_backend=args.opus_backend,
    )
    wall = time.perf_counter() - start
    json_path, md_path, _ = _outputs(args.out)
    result = {
        "rows": [r.as_dict() for r in rows],
        "files": files,
        "opus_backend": args.opus_backend,
        "timing": {"wall_s": wall, "audio_s": sum(len(w) for w in wavs) / 16000},
    }
    report.write_json(result, json_path)
    table = codec_metrics.codec_table_markdown(rows)
    md_path.write_text("## Codec quality\n\n" + table + "\n", encoding="utf-8")
    print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    tts = sub.add_parser("tts", help="zero-shot TTS evaluation")
    source = tts.add_mutually_exclusive_group(required=True)
    source.add_argument("--list", help="TSV: prompt_audio, target_text, ground_truth_audio")
    source.add_argument("--from_dir", help="Kaldi-style corpus dir (text, utt2spk, audio)")
    tts.add_argument("--ground_truth_only", action="store_true", help="evaluate references only")
    tts.add_argument("--checkpoint", help="NS2 checkpoint dir (model speech is evaluated)")
    tts.add_argument("--codec_checkpoint", help="codec checkpoint: adds ground truth via codec")
    tts.add_argument("--codec_quantizers", type=int, default=16, help="quantizers for that row")
    tts.add_argument("--out", required=True, help="result JSON path (.md and _plots/ beside it)")
    tts.add_argument("--limit", type=int, default=None, help="evaluate at most N pairs")
    tts.add_argument("--seed", type=int, default=0, help="pairing seed for --from_dir")
    tts.add_argument("--prompt_seconds", type=float, default=3.0)
    tts.add_argument(
        "--asr",
        default="moonshine,pocketsphinx",
        help="comma list, first is primary: moonshine | pocketsphinx | <Moonshine model dir>",
    )
    tts.add_argument(
        "--skip", default="", help="comma list of evaluators to skip: speaker,dnsmos,prosody"
    )
    tts.add_argument("--save_list", help="write the evaluated pairs as a list TSV")
    tts.add_argument("--no_plots", action="store_true")
    tts.add_argument("--log_every", type=int, default=10)
    tts.set_defaults(func=run_tts)

    codec = sub.add_parser("codec", help="codec quality beside Opus")
    codec.add_argument("--reference_dir", required=True, help="directory of held-out audio files")
    codec.add_argument("--checkpoint", help="codec checkpoint dir (codec rows)")
    codec.add_argument("--n_quantizers", default="8,16", help="comma list of quantizer counts")
    codec.add_argument("--codebook_size", type=int, default=1024)
    codec.add_argument(
        "--opus_kbps", default="", help="comma list of Opus targets (default: the codec's rates)"
    )
    codec.add_argument("--opus_backend", default="soundfile", choices=["soundfile", "ffmpeg"])
    codec.add_argument("--limit", type=int, default=50)
    codec.add_argument("--out", required=True)
    codec.set_defaults(func=run_codec)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
