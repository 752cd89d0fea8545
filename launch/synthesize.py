"""Text-to-speech from the command line with a trained NS2 run.

    python launch/synthesize.py --checkpoint runs/ns2_tiny --text "Hello there." \
        --prompt prompt.wav --out out.wav [--sampler dpm++2m --steps 12 --seed 0]
                              # a long --text: "synthesizing N sentences in B batches" and a
                              # progress bar over the batches, on stderr
    python launch/synthesize.py --checkpoint W/ns2 --text_file lines.txt --prompt p.wav \
        --out out_dir/        # one sentence per line -> out_dir/0000.wav ... (progress bar)
    python launch/synthesize.py --checkpoint W/ns2 --manifest rows.tsv
                              # rows "text<TAB>prompt<TAB>output" (header optional; an empty
                              # prompt column takes --prompt), one model load (progress bar)
    python launch/synthesize.py --checkpoint W/ns2 --prompt p.wav --rtf euler:150,dpm++2m:12

Beside every wav a PNG shows the mel spectrogram, the pitch and the phoneme boundaries, and
``<stem>.alignment.json`` holds the phoneme alignment. The last line printed is the real-time
factor (synthesis seconds, compilation included, per second of audio). ``--rtf`` measures it for
each ``sampler:steps`` on this machine after a warm-up call (compile time reported apart).
Errors (bad checkpoint, empty text, short, silent or unreadable prompt, a number out of range, an
unusable --out...) are one line on stderr, exit 2; those that need no model come before it loads.
A prompt longer than the model's prompt window (3 s for the presets) is cut to its start, and
never read further. With --text_file or --manifest a line that fails is reported as
``FILE:LINE: reason`` and the other lines are written; the exit status is then 2.
Relative paths in a manifest are relative to the current directory, as on the command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from naturalspeech2_jax import cli
from naturalspeech2_jax.diffusion.defaults import DEFAULT_SAMPLER, DEFAULT_STEPS

RTF_TEXT = (
    "The quick brown fox jumps over the lazy dog. A second sentence makes the batch a little "
    "longer, as real text would."
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="NS2 run (--workdir of its training)")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--text", help="text to speak (long text is split at sentences)")
    text.add_argument("--text_file", help="a UTF-8 file: one utterance per line")
    text.add_argument(
        "--manifest", help="a UTF-8 TSV: rows text<TAB>prompt<TAB>output (header optional)"
    )
    p.add_argument(
        "--prompt", help="a recording of the target voice (>= 1 s); with --manifest, the default"
    )
    p.add_argument("--out", help="output wav (--text) or directory (--text_file)")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, help="euler | heun | dpm++2m | sde")
    p.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS, help="sampler steps (paper: euler 150)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speed", type=float, default=1.0, help="> 1 speaks faster")
    p.add_argument("--pitch_shift", type=float, default=0.0, help="semitones")
    p.add_argument("--temperature", type=float, default=1 / 1.2)
    p.add_argument(
        "--guidance_scale", type=float, default=1.0,
        help="classifier-free guidance (> 1 needs a model trained with model.cond_drop_prob > 0)",
    )  # fmt: skip
    p.add_argument("--codec_checkpoint", default=None, help="override the recorded codec run")
    p.add_argument("--no_plot", action="store_true", help="skip the PNG")
    p.add_argument("--rtf", default="", help="measure RTF: comma list of sampler:steps")
    return p


def measure_rtf(synth, prompt: str, specs: str, text: str = RTF_TEXT) -> list[dict]:
    """Per sampler:steps, the first call's seconds (compile + run) and the mean of two warm runs."""
    rows = []
    for spec in [s for s in specs.split(",") if s]:
        sampler, _, steps = spec.partition(":")
        steps = int(steps or DEFAULT_STEPS)
        t0 = time.perf_counter()
        synth.synthesize(text, prompt, sampler=sampler, steps=steps)
        first = time.perf_counter() - t0
        runs = []
        for seed in (1, 2):
            t0 = time.perf_counter()
            out = synth.synthesize(text, prompt, sampler=sampler, steps=steps, seed=seed)
            runs.append(time.perf_counter() - t0)
        audio = len(out.wav) / out.sample_rate
        warm = sum(runs) / len(runs)
        rows.append({
            "sampler": sampler, "steps": steps, "audio_s": round(audio, 2),
            "warm_s": round(warm, 3), "rtf": round(warm / audio, 4),
            "compile_s": round(max(first - warm, 0.0), 1),
            "diffusion_s": round(synth.timing["prior_diffusion_s"], 3),
            "decode_s": round(synth.timing["decode_s"], 3),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


MANIFEST_HEADER = ("text", "prompt", "output")


def read_manifest(path: str) -> tuple[list[tuple[int, tuple[str, ...]]], dict[int, str]]:
    """Rows ``(line number, (text, prompt, output))`` of a manifest and {line number: reason} for
    each row that is not three tab-separated columns with a text and an output (blank lines and a
    ``text<TAB>prompt<TAB>output`` header are skipped)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--manifest {path} does not exist; check the path.")
    rows, errors, outputs = [], {}, {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cols = tuple(c.strip() for c in line.split("\t"))
            if n == 1 and tuple(c.lower() for c in cols) == MANIFEST_HEADER:
                continue
            if len(cols) != 3:
                errors[n] = (f"{len(cols)} tab-separated columns; a row is "
                             "text<TAB>prompt<TAB>output.")  # fmt: skip
            elif not cols[0] or not cols[2]:
                errors[n] = (f"the {'text' if not cols[0] else 'output'} column is empty; a "
                             "row is text<TAB>prompt<TAB>output.")  # fmt: skip
            elif cols[2] in outputs:
                errors[n] = (f"output {cols[2]} is also line {outputs[cols[2]]}'s; give "
                             "every row its own output.")  # fmt: skip
            else:
                outputs[cols[2]] = n
                rows.append((n, cols))
    if not rows and not errors:
        raise ValueError(f"{path} holds no rows; write text<TAB>prompt<TAB>output per line.")
    return rows, errors


def _report(errors: list[str], written: int, where: str, unit: str) -> int:
    """The failures (one line each), the ``N written, M failed`` summary; exit status."""
    for e in errors:
        print(e, file=sys.stderr)
    print(f"{where}: {written} {unit} written, {len(errors)} failed")
    if errors:
        print(f"error: {len(errors)} of {written + len(errors)} {unit} failed (listed above).",
              file=sys.stderr)  # fmt: skip
    return 2 if errors else 0


def run_text_file(args: argparse.Namespace, synth, kw: dict) -> tuple[int, float, float]:
    """One wav per non-empty line (out/0000.wav ...: numbered among the non-empty lines); a line
    that cannot be synthesised is reported with its line number. (status, compute s, audio s)"""
    from naturalspeech2_jax.inference import SynthesisError

    if not os.path.isfile(args.text_file):
        raise FileNotFoundError(f"--text_file {args.text_file} does not exist; check the path.")
    with open(args.text_file, encoding="utf-8") as f:
        numbered = [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]
    if not numbered:
        raise ValueError(f"{args.text_file} holds no text; write one utterance per line.")
    os.makedirs(args.out, exist_ok=True)
    errors: dict[int, str] = {}
    good = []  # (index among non-empty lines, line number, text)
    for i, (n, line) in enumerate(numbered):
        try:
            synth.sentence_tokens(line)  # G2P only: unpronounceable text fails here
            good.append((i, n, line))
        except SynthesisError as e:
            errors[n] = str(e)
    start = time.perf_counter()
    results: list = []
    if good:
        try:
            results = synth.synthesize_batch([t for _, _, t in good], args.prompt, progress=True,
                                             **kw)  # fmt: skip
        except SynthesisError:
            # One line failed later (e.g. it lasts too long): each line alone, to name it. A
            # prompt's error fails every line, so it stops here.
            synth.load_prompt(args.prompt)
            results = []
            for _, n, line in good:
                try:
                    results.append(synth.synthesize(line, args.prompt, **kw))
                except SynthesisError as e:
                    errors[n] = str(e)
                    results.append(None)
    compute = time.perf_counter() - start
    audio = 0.0
    written = 0
    for (i, _, line), result in zip(good, results, strict=True):
        if result is None:
            continue
        cli.write_outputs(os.path.join(args.out, f"{i:04d}.wav"), result, line, not args.no_plot)
        audio += len(result.wav) / result.sample_rate
        written += 1
    lines = [f"{args.text_file}:{n}: {errors[n]}" for n in sorted(errors)]
    return _report(lines, written, args.out, "utterances"), compute, audio


def run_manifest(args: argparse.Namespace, synth, kw: dict) -> tuple[int, float, float]:
    """One wav per manifest row, the model loaded once; a row that fails is reported with its
    line number and the others are written. (status, compute s, audio s)"""
    from tqdm import tqdm

    rows, errors = read_manifest(args.manifest)
    compute = audio = 0.0
    written = 0
    for n, (text, prompt, out) in tqdm(rows, unit="row", desc="synthesize"):
        prompt = prompt or args.prompt
        try:
            if not prompt:
                raise ValueError("the prompt column is empty and no --prompt is given.")
            start = time.perf_counter()
            result = synth.synthesize(text, prompt, **kw)
            compute += time.perf_counter() - start
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            cli.write_outputs(out, result, text, not args.no_plot)
        except (FileNotFoundError, ValueError, OSError) as e:
            errors[n] = str(e)
            continue
        audio += len(result.wav) / result.sample_rate
        written += 1
    lines = [f"{args.manifest}:{n}: {errors[n]}" for n in sorted(errors)]
    return _report(lines, written, args.manifest, "rows"), compute, audio


def check_inputs(args: argparse.Namespace) -> None:
    """What can be checked before the checkpoint loads: the numbers, --prompt (a readable,
    long enough, not silent recording), --out (a wav path for --text, a folder for --text_file),
    and that --text_file / --manifest exist; one sentence each."""
    cli.check_numbers(args)
    if not args.manifest and not args.prompt:
        raise ValueError("--prompt is required; pass a recording of the target voice (>= 1 s).")
    if not args.rtf and not args.manifest:
        if not args.out:
            raise ValueError(
                "--out is required; pass the output wav (or a directory for --text_file)."
            )
        if not args.text_file and args.text is None:
            raise ValueError('pass --text "...", --text_file F or --manifest F.')
    if args.text is not None and not args.text.strip():
        raise ValueError('--text is empty; pass a sentence, e.g. --text "Hello there."')
    if args.text is not None and not args.rtf:
        cli.check_output(args.out)
    if args.text_file:
        if not os.path.isfile(args.text_file):
            raise FileNotFoundError(f"--text_file {args.text_file} does not exist; check the path.")
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise ValueError(f"--out {args.out} is a file; with --text_file pass a folder for "
                             "the numbered wavs.")  # fmt: skip
    if args.manifest and not os.path.isfile(args.manifest):
        raise FileNotFoundError(f"--manifest {args.manifest} does not exist; check the path.")
    if args.prompt:
        cli.check_prompt(args.prompt)


def synthesize_text(synth, args: argparse.Namespace, kw: dict):
    """``--text``: one utterance, with progress on stderr when the text is long (how many
    sentences, then a bar over their batches of up to 8)."""
    from naturalspeech2_jax.inference.synthesizer import BATCH_BUCKETS

    pieces = len(synth.sentence_tokens(args.text))  # also refuses unpronounceable text here
    batches = -(-pieces // BATCH_BUCKETS[-1])
    if pieces > 1:
        print(f"synthesizing {pieces} sentences in {batches} batch{'es' if batches > 1 else ''}"
              f" of up to {BATCH_BUCKETS[-1]}", file=sys.stderr, flush=True)  # fmt: skip
    return synth.synthesize_batch([args.text], args.prompt, progress=batches > 1, **kw)[0]


def run(args: argparse.Namespace) -> int:
    check_inputs(args)  # before the checkpoint loads
    from naturalspeech2_jax import xla_cache
    from naturalspeech2_jax.inference import Synthesizer

    xla_cache.enable()

    synth = Synthesizer.from_checkpoint(args.checkpoint, codec_checkpoint=args.codec_checkpoint)
    if args.rtf:
        measure_rtf(synth, args.prompt, args.rtf)
        return 0
    kw = dict(sampler=args.sampler, steps=args.steps, seed=args.seed, speed=args.speed,
              pitch_shift=args.pitch_shift, temperature=args.temperature,
              guidance_scale=args.guidance_scale)  # fmt: skip
    if args.manifest:
        status, compute, audio = run_manifest(args, synth, kw)
    elif args.text_file:
        status, compute, audio = run_text_file(args, synth, kw)
    else:
        start = time.perf_counter()
        result = synthesize_text(synth, args, kw)
        compute = time.perf_counter() - start
        cli.write_outputs(args.out, result, args.text, not args.no_plot)
        audio = len(result.wav) / result.sample_rate
        print(f"{args.out}: {audio:.2f} s, {len(result.phonemes)} phonemes")
        status = 0
    if audio > 0:
        print(cli.rtf_line(compute, audio))
    return status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    return cli.one_line_errors(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
