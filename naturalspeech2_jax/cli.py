"""What the command lines in launch/ share: flags, output files and one-line errors.

The voice commands (launch/synthesize.py, sing.py, convert.py) write a wav with
``<stem>.alignment.json`` and a PNG beside it (:func:`write_outputs`) and report a bad checkpoint,
text, score or prompt as one ``error: ...`` line on stderr with exit status 2
(:func:`one_line_errors`). launch/prepare_data.py and quickstart.py share their alignment flags
(:func:`define_alignment_flags`).

This module imports only the standard library at the top: the scripts build their flags from it,
and ``--help`` answers in a fraction of a second, before JAX and the models load (the functions
that need them import them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from naturalspeech2_jax.diffusion.defaults import DEFAULT_SAMPLER, DEFAULT_STEPS

__all__ = [
    "check_numbers",
    "check_output",
    "check_prompt",
    "define_alignment_flags",
    "one_line_errors",
    "rtf_line",
    "synthesize_to_file",
    "voice_parser",
    "write_outputs",
]

# Where prepare_corpus takes phoneme durations from (the values data/prepare.py accepts).


def voice_parser(
    doc: str, inputs: dict[str, str], steps: int, steps_help: str | None = None
) -> argparse.ArgumentParser:
    """The flags of a command that turns ``inputs`` (flag -> help; required) into speech in the
    voice of a prompt: --checkpoint, the inputs, --prompt, --out, --sampler, --steps. The
    description is the first line of ``doc``; the command adds its own flags after these."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="NS2 run (--workdir of its training)")
    for flag, text in inputs.items():
        p.add_argument(flag, required=True, help=text)
    p.add_argument("--prompt", required=True, help="a recording of the target voice (>= 1 s)")
    p.add_argument("--out", required=True, help="output wav")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER)
    p.add_argument("--steps", type=int, default=steps, help=steps_help)
    return p


# flag -> (test, what it must be, an example): every number a voice command takes.
_NUMBERS: dict[str, tuple[Callable[[float], bool], str, str]] = {
    "steps": (lambda x: x >= 1, "an integer >= 1", str(DEFAULT_STEPS)),
    "seed": (lambda x: 0 <= x < 2**32, "an integer in [0, 2**32)", "0"),
    "speed": (lambda x: x > 0, "> 0", "1 (normal) or 1.5 (faster)"),
    "temperature": (lambda x: x > 0, "> 0", "0.83 (1/1.2)"),
    "guidance_scale": (lambda x: x >= 0, ">= 0", "1 (no guidance)"),
    "pitch_shift": (lambda x: True, "a finite number of semitones", "0"),
    "vibrato_cents": (lambda x: x >= 0, ">= 0 cents", "30"),
}


def check_numbers(args: argparse.Namespace) -> None:
    """ValueError (one sentence naming the flag) for a number flag of ``args`` out of range:
    --steps >= 1, --seed in [0, 2**32), --speed > 0, --temperature > 0, --guidance_scale >= 0,
    --pitch_shift finite, --vibrato_cents >= 0 (those the command has)."""
    for name, (ok, what, example) in _NUMBERS.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if not (math.isfinite(value) and ok(value)):
            raise ValueError(f"--{name} must be {what}, got {value}; try --{name} {example}.")


def rtf_line(compute_s: float, audio_s: float) -> str:
    """``RTF 0.42 (3.10 s of compute for 7.38 s of audio)``: wall-clock synthesis seconds (model
    loading excluded, compilation included) per second of audio written."""
    rtf = compute_s / audio_s if audio_s > 0 else math.nan
    return f"RTF {rtf:.3f} ({compute_s:.2f} s of compute for {audio_s:.2f} s of audio)"


def write_outputs(path: str, result, title: str, plot: bool = True) -> None:
    """wav + alignment json (+ PNG) for one SynthesisResult."""
    from naturalspeech2_jax.inference.codec import save_audio
    from naturalspeech2_jax.inference.plots import plot_synthesis

    save_audio(path, result.wav)
    stem = os.path.splitext(path)[0]
    alignment = [{"phoneme": p, "start": s, "end": e} for p, s, e in result.alignment]
    # Not <stem>.json: a score or text file beside the output may have that name.
    with open(stem + ".alignment.json", "w", encoding="utf-8") as f:
        json.dump({"text": title, "alignment": alignment}, f, ensure_ascii=False, indent=1)
    if plot:
        plot_synthesis(stem + ".png", result, title)


def one_line_errors(run: Callable[[], object]) -> int:
    """``run()``; exit status 0, or 2 with its error on one line of stderr.

    Checkpoint, text, score and prompt errors (FileNotFoundError, ValueError and their
    CheckpointError / SynthesisError) carry one sentence naming the file and the fix; a missing
    optional package (ImportError) and a file the system refuses (OSError: permissions, a full
    disk) are reported the same way. An exception that carries an ``exit_status`` (training
    stopped by a signal, its checkpoint saved: ``train.loop.TrainingInterrupted``) is printed on
    one line and exits with that status.
    """
    try:
        status = run()
    except Exception as e:
        if not isinstance(getattr(e, "exit_status", None), int):
            return _reported(e)
        print(f"stopped: {_one_line(str(e))}", file=sys.stderr)
        return e.exit_status
    return status if isinstance(status, int) else 0


def _reported(e: Exception) -> int:
    """Status 2 and the one-line error for the kinds ``one_line_errors`` reports; else raise."""
    if isinstance(e, (ValueError, ImportError)):
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    if isinstance(e, OSError):  # FileNotFoundError with our sentence, or the system's reason
        text = str(e) if e.strerror is None else f"{e.filename or ''}: {e.strerror}".lstrip(": ")
        print(f"error: {_one_line(text)}", file=sys.stderr)
        return 2
    raise e


def _one_line(text: str) -> str:
    """``text`` on one line (a library's reason may hold line breaks)."""
    return " ".join(text.split())


def check_output(path: str | None, flag: str = "--out") -> None:
    """ValueError (one sentence naming ``flag``) when ``path`` cannot take an audio file: it is
    missing, a folder, not of a format soundfile writes (by its extension), or its folder cannot
    be created or written. Checked before a model loads, so a bad path fails in a second."""
    import soundfile

    if not path:
        raise ValueError(f"{flag} is required; pass the output file, e.g. {flag} out.wav.")
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path} is a folder; pass a file path such as {path}/out.wav.")
    ext = os.path.splitext(path)[1].lstrip(".").upper()
    if ext not in soundfile.available_formats():
        raise ValueError(f"{flag} {path} does not end in an audio format soundfile writes (.wav, "
                         ".flac, .ogg); name it e.g. out.wav.")  # fmt: skip
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{flag} {path}: its folder cannot be created ({e.strerror or e}); pass "
                         "a path you can write to.") from None  # fmt: skip
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} {path}: its folder {folder} cannot be written; pass a path you "
                         "can write to.")  # fmt: skip


def synthesize_to_file(
    args: argparse.Namespace,
    make: Callable,
    source: str,
    title: str,
    verb: str,
    *,
    preflight: Callable[[], object] | None = None,
    **options: Any,
) -> int:
    """The body of a :func:`voice_parser` command: load the NS2 run ``args.checkpoint``, write
    ``make(synth, source, args.prompt, sampler=, steps=, **options)`` to ``args.out``
    (:func:`write_outputs`) and print its length (``OUT: 2.40 s <verb>``) and real-time factor
    (:func:`rtf_line`); returns the exit status of :func:`one_line_errors`. Before the
    checkpoint loads, a number flag out of range (:func:`check_numbers`), an unusable --out
    (:func:`check_output`), a prompt that is missing, not audio, too short or silent, and what
    ``preflight()`` checks (the command's own inputs) fail in one sentence."""

    def run() -> None:
        check_numbers(args)  # before the checkpoint loads
        check_output(args.out)
        if preflight is not None:
            preflight()
        check_prompt(args.prompt)
        from naturalspeech2_jax import xla_cache
        from naturalspeech2_jax.inference import Synthesizer

        xla_cache.enable()
        synth = Synthesizer.from_checkpoint(args.checkpoint)
        start = time.perf_counter()
        result = make(synth, source, args.prompt, sampler=args.sampler, steps=args.steps, **options)
        compute = time.perf_counter() - start
        write_outputs(args.out, result, title)
        audio = len(result.wav) / result.sample_rate
        print(f"{args.out}: {audio:.2f} s {verb}")
        print(rtf_line(compute, audio))

    return one_line_errors(run)


# Seconds of a prompt the checks before a model loads read (the model then uses its own
# max_prompt_seconds, 3 s for the presets): enough to find speech after a pause.
PROMPT_CHECK_SECONDS = 30.0


def check_prompt(prompt: str | None, flag: str = "--prompt") -> None:
    """SynthesisError (one sentence) when the prompt recording is missing, not audio, NaN,
    shorter than 1 s or silent in its first ``PROMPT_CHECK_SECONDS``."""
    from naturalspeech2_jax.inference.synthesizer import read_prompt

    if not prompt:
        raise ValueError(f"{flag} is required; pass a recording of the target voice (>= 1 s).")
    read_prompt(prompt, PROMPT_CHECK_SECONDS)


def define_alignment_flags() -> tuple[Any, Any]:
    """absl flags ``--durations`` and ``--aligner`` (prepare_corpus's ``durations`` and
    ``aligner``, both ``auto`` by default); returns their holders."""
    from absl import flags

    from naturalspeech2_jax.data.prepare import ALIGNERS, DURATION_SOURCES

    flags.disclaim_key_flags()  # the flags belong to the calling script: its --help lists them
    choices_and_help = {
        "durations": (DURATION_SOURCES,
                      "Phoneme durations: auto (exact timings where the corpus has them, as the "
                      "embedded one does; else TextGrids whose phones are our tokens; else "
                      "--aligner), aligner (--aligner even where exact timings exist: they then "
                      "score it) or exact."),
        "aligner": (ALIGNERS,
                    "Where no exact timings or TextGrids exist: pocketsphinx (pretrained en-us "
                    "acoustic model; needs the eval extra), builtin (trained on the corpus "
                    "itself) or auto (pocketsphinx when installed)."),
    }  # fmt: skip
    durations, aligner = (
        flags.DEFINE_enum(name, "auto", list(choices), text)
        for name, (choices, text) in choices_and_help.items()
    )
    return durations, aligner
