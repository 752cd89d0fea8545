"""Evaluate zero-shot TTS (WER, speaker similarity, DNSMOS, prosody) and codec quality.

Zero-shot TTS, ground truth only (works without any checkpoint):
  python launch/evaluate.py tts --ground_truth_only \
      --from_dir ../shared/data/speechocean762_adult/dev --limit 200 --out /tmp/eval_gt/r.json
  python launch/evaluate.py tts --ground_truth_only --list pairs.tsv --out r.json
  python launch/evaluate.py tts --ground_truth_only --from_prepared DATA/shared/1.0.0 --split dev \
      --out r.json      # phoneme durations from the dataset: phoneme-level prosody (the paper's)
A list TSV has a header and columns prompt_audio, target_text, ground_truth_audio (optional: id,
speaker, prompt_start, prompt_seconds, ground_truth_durations, prompt_durations). With --from_dir
the pairs are drawn (seeded) from a Kaldi-style corpus: each target gets a 3 s crop of ANOTHER
utterance of the same speaker; --from_prepared does the same on a prepared dataset, cutting the
prompt on phoneme boundaries; --save_list writes the pairs (with durations) as a TSV for reuse.
Without phoneme durations prosody falls back to frame-level pitch and voiced-segment lengths.

With --checkpoint DIR the model's speech is evaluated beside the ground truth and beside the ground
truth passed through the codec (the checkpoint's own codec, or --codec_checkpoint DIR).
Evaluation models on disk replace the bundled ones: --asr=whisper:/models/whisper-small.en,
--speaker_model=wavlm:/models/wavlm-base-plus-sv (their libraries must be importable).

Codec quality (PESQ-WB, STOI, mel distance, SI-SDR) beside Opus at matching bitrates:
  python launch/evaluate.py codec --reference_dir ../shared/data/speechocean762_adult/dev \
      --limit 50 --out /tmp/codec.json [--checkpoint CODEC_DIR --n_quantizers 4,8,16]
  python launch/evaluate.py codec --checkpoint CODEC_DIR --data DATA/<name>/1.0.0 --split dev \
      --limit 50 --out R.json

After a change of text normalisation, recompute WER from the stored transcripts (no ASR run):
  python launch/evaluate.py rescore --report r.json [--out r2.json]

Outputs: the JSON (summary, per-system means, per-utterance records, timings), a Markdown table
next to it (.md) and PNG plots in <out stem>_plots/.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import pathlib
import sys
import time

# Evaluation runs on CPU; JAX (imported by model loaders) must not grab an accelerator by accident.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


from naturalspeech2_jax import SAMPLE_RATE, cli
from naturalspeech2_jax.evaluation import codec_metrics, corpus, report, tts_eval
from naturalspeech2_jax.evaluation.plugins import EvaluatorUnavailable


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _outputs(out: str) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    path = pathlib.Path(out)
    return path, path.with_suffix(".md"), path.with_name(path.stem + "_plots")


def _fixed_quantizers(codec_fn, n_quantizers, wav):
    return codec_fn(wav, n_quantizers)


def _check_path(flag: str, path: str, folder: bool) -> None:
    """FileNotFoundError (one sentence) when ``path`` given with ``flag`` is not a folder
    (``folder``) or not a file."""
    if "://" in path:  # an object store (gs://): its loader says what is missing
        return
    if folder and not os.path.isdir(path):
        what = "is a file, not a folder" if os.path.exists(path) else "does not exist"
        raise FileNotFoundError(f"{flag} {path} {what}; give a folder.")
    if not folder and not os.path.isfile(path):
        what = "is a folder, not a file" if os.path.exists(path) else "does not exist"
        raise FileNotFoundError(f"{flag} {path} {what}; check the path.")


def _check_out(out: str) -> None:
    """ValueError when the result JSON cannot be written where --out says."""
    if os.path.isdir(out):
        raise ValueError(f"--out {out} is a folder; give a .json file path such as {out}/r.json.")
    folder = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ValueError(
            f"--out {out}: its folder cannot be created ({e.strerror or e})."
        ) from None


def run_tts(args: argparse.Namespace) -> int:
    if args.list:
        _check_path("--list", args.list, folder=False)
    elif args.from_prepared:
        _check_path("--from_prepared", args.from_prepared, folder=True)
    else:
        _check_path("--from_dir", args.from_dir, folder=True)
    if args.checkpoint:
        _check_path("--checkpoint", args.checkpoint, folder=True)
    if not args.ground_truth_only and not args.checkpoint:
        raise ValueError("tts needs --checkpoint DIR (an NS2 run), or --ground_truth_only.")
    _check_out(args.out)
    json_path, md_path, plot_dir = _outputs(args.out)
    if args.list:
        pairs = corpus.read_pair_list(args.list)
        if args.limit is not None:
            pairs = pairs[: args.limit]
    elif args.from_prepared:
        pairs = corpus.pairs_from_prepared(
            args.from_prepared,
            args.split,
            json_path.with_name(json_path.stem + "_audio"),
            seed=args.seed,
            limit=args.limit,
            prompt_seconds=args.prompt_seconds,
        )
    else:
        utterances = corpus.read_kaldi_dir(args.from_dir)
        pairs = corpus.make_pairs(
            utterances, seed=args.seed, limit=args.limit, prompt_seconds=args.prompt_seconds
        )
    json_path.parent.mkdir(parents=True, exist_ok=True)
    if args.save_list:
        corpus.write_pair_list(pairs, args.save_list)

    config = tts_eval.EvaluatorConfig(
        asr=[] if "asr" in args.skip else [a for a in args.asr.split(",") if a],
        speaker="speaker" not in args.skip,
        speaker_model=args.speaker_model,
        dnsmos="dnsmos" not in args.skip,
        prosody="prosody" not in args.skip,
    )
    synthesize = codec = None
    options: dict = {}
    n_q = args.codec_quantizers
    try:
        tts_eval.load_evaluators(config)
        if not args.ground_truth_only:
            options = {
                k: getattr(args, k) for k in ("sampler", "steps", "temperature", "guidance_scale")
            }
            options = {k: v for k, v in options.items() if v is not None}
            synthesize, codec_fn = tts_eval.load_synthesizer_and_codec(args.checkpoint, **options)
            if codec_fn is not None and not args.codec_checkpoint:
                logging.info("ground truth through the codec: the checkpoint's own codec")
                codec = functools.partial(_fixed_quantizers, codec_fn, n_q)
        if args.codec_checkpoint:
            codec_fn = tts_eval.load_from_checkpoint("codec", args.codec_checkpoint)
            codec = functools.partial(_fixed_quantizers, codec_fn, n_q)
    except (tts_eval.CheckpointLoaderUnavailable, EvaluatorUnavailable) as e:
        raise ValueError(str(e)) from None
    if codec is None:
        logging.warning(
            "No codec: the ground-truth-through-codec reference is left out (pass "
            "--codec_checkpoint DIR to add it)."
        )

    logging.info("evaluating %d pairs with %s", len(pairs), config)
    result = tts_eval.evaluate_tts(pairs, synthesize, codec, config, log_every=args.log_every)
    result["pairs_source"] = args.list or args.from_dir
    result["synthesis_options"] = options
    result["seed"] = args.seed
    report.write_json(result, json_path)
    md_path.write_text(report.markdown_report(result), encoding="utf-8")
    if not args.no_plots:
        report.plot_report(result, plot_dir)
    summary = {k: v for k, v in result["summary"].items() if not isinstance(v, str)}
    logging.info("summary (%s): %s", result["summary"]["system"], summary)
    print(report.markdown_report(result))
    return 0


def run_rescore(args: argparse.Namespace) -> int:
    import json

    _check_path("--report", args.report, folder=False)
    path = pathlib.Path(args.report)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"--report {path} is not a JSON report ({e}); give the .json that "
                         "launch/evaluate.py tts wrote.") from None  # fmt: skip
    if not isinstance(data, dict) or "records" not in data:
        raise ValueError(f"--report {path} is not a tts report (no \"records\"); give the .json "
                         "that launch/evaluate.py tts wrote.")  # fmt: skip
    result = tts_eval.rescore_wer(data)
    json_path, md_path, plot_dir = _outputs(args.out or args.report)
    report.write_json(result, json_path)
    md_path.write_text(report.markdown_report(result), encoding="utf-8")
    if not args.no_plots:
        report.plot_report(result, plot_dir)
    print(report.markdown_report(result))
    return 0


def run_codec(args: argparse.Namespace) -> int:
    from naturalspeech2_jax.evaluation import opus

    if bool(args.reference_dir) == bool(args.data):
        raise ValueError(
            "pass exactly one of --reference_dir (audio files) or --data (dataset dir)."
        )
    _check_out(args.out)
    if args.checkpoint:
        _check_path("--checkpoint", args.checkpoint, folder=True)
    if args.data:
        _check_path("--data", args.data, folder=True)
        try:
            files, wavs = corpus.prepared_audio(args.data, args.split, args.limit)
        except (FileNotFoundError, KeyError, ValueError) as e:
            raise ValueError(f"cannot read split {args.split!r} of {args.data}: {e}") from None
    else:
        _check_path("--reference_dir", args.reference_dir, folder=True)
        files = corpus.list_audio_files(args.reference_dir)
        if not files:
            raise ValueError(f"--reference_dir {args.reference_dir} holds no audio files; give a "
                             "folder of .wav/.flac files.")  # fmt: skip
        # Spread a limited selection over the whole directory (every k-th file), deterministically.
        if args.limit and len(files) > args.limit:
            step = len(files) / args.limit
            files = [files[int(i * step)] for i in range(args.limit)]
        wavs = [corpus.load_audio(f) for f in files]
    if not wavs:
        raise ValueError("no utterances to evaluate; check --limit and the split.")
    if args.opus_backend == "auto":
        args.opus_backend = "ffmpeg" if opus.opus_available("ffmpeg") else "soundfile"

    codec = codec_object = None
    if args.checkpoint:
        try:
            codec_object = tts_eval.load_object("codec", args.checkpoint)
        except tts_eval.CheckpointLoaderUnavailable as e:
            raise ValueError(str(e)) from None
        codec = tts_eval.as_codec_resynthesis(codec_object)
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
    usage = codec_metrics.measure_codebook_usage(codec_object, wavs) if codec_object else None
    wall = time.perf_counter() - start
    json_path, md_path, _ = _outputs(args.out)
    result = {
        "rows": [r.as_dict() for r in rows],
        "codebook_usage": None if usage is None else [u.as_dict() for u in usage],
        "checkpoint": args.checkpoint,
        "files": files,
        "opus_backend": args.opus_backend,
        "timing": {"wall_s": wall, "audio_s": sum(len(w) for w in wavs) / SAMPLE_RATE},
    }
    report.write_json(result, json_path)
    table = codec_metrics.codec_table_markdown(rows)
    text = "## Codec quality\n\n" + table + "\n"
    if usage is not None:
        usage_table = codec_metrics.codebook_usage_markdown(usage, codec_object.codebook_size)
        text += "\n## Codebook usage\n\n" + usage_table + "\n"
    md_path.write_text(text, encoding="utf-8")
    print(text)
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
    source.add_argument(
        "--from_prepared",
        help="prepared dataset version dir (launch/prepare_data.py): phoneme-level prosody",
    )
    tts.add_argument("--split", default="dev", help="split of --from_prepared to evaluate")
    tts.add_argument("--ground_truth_only", action="store_true", help="evaluate references only")
    tts.add_argument("--checkpoint", help="NS2 checkpoint dir (model speech is evaluated)")
    tts.add_argument("--sampler", help="synthesis sampler (default: the synthesizer's)")
    tts.add_argument("--steps", type=int, help="sampler steps (default: the synthesizer's)")
    tts.add_argument(
        "--temperature", type=float, help="initial-noise std (default: the synthesizer's, 1/1.2)"
    )
    tts.add_argument(
        "--guidance_scale", type=float,
        help="classifier-free guidance (> 1 needs a model trained with model.cond_drop_prob > 0)",
    )  # fmt: skip
    tts.add_argument("--codec_checkpoint", help="codec checkpoint: adds ground truth via codec")
    tts.add_argument("--codec_quantizers", type=int, default=16, help="quantizers for that row")
    tts.add_argument("--out", required=True, help="result JSON path (.md and _plots/ beside it)")
    tts.add_argument("--limit", type=int, default=None, help="evaluate at most N pairs")
    tts.add_argument("--seed", type=int, default=0, help="pairing seed for --from_dir")
    tts.add_argument("--prompt_seconds", type=float, default=3.0)
    tts.add_argument(
        "--asr",
        default="moonshine,pocketsphinx",
        help="comma list, first is primary: moonshine | pocketsphinx (bundled) | models on disk:\n"
        "moonshine:DIR | whisper:DIR (Hugging Face, needs transformers) | whisper:FILE.pt\n"
        "(openai-whisper) | ctc:FILE.onnx (waveform-in CTC, vocab.json beside it)",
    )
    tts.add_argument(
        "--speaker_model",
        default="resemblyzer",
        help="resemblyzer (bundled) | wavlm:DIR (HF x-vector, needs transformers) |\n"
        "ecapa:DIR (SpeechBrain, needs speechbrain)",
    )
    tts.add_argument(
        "--skip", default="", help="comma list of evaluators to skip: asr,speaker,dnsmos,prosody"
    )
    tts.add_argument("--save_list", help="write the evaluated pairs as a list TSV")
    tts.add_argument("--no_plots", action="store_true")
    tts.add_argument("--log_every", type=int, default=10)
    tts.set_defaults(func=run_tts)

    rescore = sub.add_parser(
        "rescore", help="recompute WER of a tts report from its stored transcripts (no ASR)"
    )
    rescore.add_argument("--report", required=True, help="a tts result JSON")
    rescore.add_argument("--out", help="where to write (default: overwrite --report)")
    rescore.add_argument("--no_plots", action="store_true")
    rescore.set_defaults(func=run_rescore)

    codec = sub.add_parser("codec", help="codec quality beside Opus")
    codec.add_argument("--reference_dir", help="directory of held-out audio files")
    codec.add_argument("--data", help="prepared dataset dir DATA/<name>/<version> (or this)")
    codec.add_argument("--split", default="dev", help="split of --data (held-out speakers)")
    codec.add_argument("--checkpoint", help="codec checkpoint dir (codec rows)")
    codec.add_argument("--n_quantizers", default="4,8,16", help="comma list of quantizer counts")
    codec.add_argument("--codebook_size", type=int, default=1024)
    codec.add_argument(
        "--opus_kbps", default="", help="comma list of Opus targets (default: the codec's rates)"
    )
    codec.add_argument(
        "--opus_backend",
        default="auto",
        choices=["auto", "soundfile", "ffmpeg"],
        help="auto: ffmpeg/libopus when installed (EVALUATION.md's reference), else soundfile",
    )
    codec.add_argument("--limit", type=int, default=50)
    codec.add_argument("--out", required=True)
    codec.set_defaults(func=run_codec)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, or 2 with the reason on one line of stderr (``error: ...``): a missing
    folder or file, a checkpoint or evaluator that cannot load, a report that does not parse."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)

    def run():
        if args.func is not run_rescore:  # rescore only re-reads wavs; the others compile
            from naturalspeech2_jax import xla_cache

            xla_cache.enable()
        return args.func(args)

    return cli.one_line_errors(run)


if __name__ == "__main__":
    sys.exit(main())
