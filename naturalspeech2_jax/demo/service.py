"""What the web demo does, without the web: load a checkpoint once, then speak, sing and convert.

``DemoService`` owns one :class:`~naturalspeech2_jax.inference.Synthesizer`. ``start()`` restores
and warms it up in a background thread (the page shows ``status()`` until it is ready); each
request runs under one lock, so one synthesis runs at a time per model whatever serves it (the
Gradio queue in ``demo/app.py`` also keeps the waiting requests in order and shows their
position). A request writes a WAV (16 kHz PCM), its ``.alignment.json`` and the mel / pitch /
phoneme-boundary PNG the CLIs write (``cli.write_outputs``) into the service's output folder and
returns them with the real-time factor of that request. Bad input raises the same one-sentence
errors the CLIs print (``SynthesisError``, ``CheckpointError``, ``ValueError``): the page shows
them and the server keeps serving.

Nothing here imports Gradio: the tests and the latency benchmark drive it directly.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from naturalspeech2_jax import cli
from naturalspeech2_jax.diffusion.defaults import DEFAULT_SAMPLER, DEFAULT_STEPS

log = logging.getLogger(__name__)

# The sampler choices the page offers (diffusion/samplers.py's registry has these and more).
PAGE_SAMPLERS = ("dpm++2m", "heun", "euler", "euler_maruyama")


class DemoError(ValueError):
    """A request the demo cannot serve (no prompt, the model failed to load...): one sentence."""


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """One request's outputs: files in the service's output folder and what it cost."""

    wav_path: str
    png_path: str
    alignment_path: str
    audio_seconds: float
    compute_seconds: float

    @property
    def rtf(self) -> float:
        """Compute seconds per second of audio (< 1: faster than real time)."""
        return self.compute_seconds / self.audio_seconds if self.audio_seconds > 0 else math.nan

    def summary(self) -> str:
        return f"{self.audio_seconds:.2f} s of audio; " + cli.rtf_line(
            self.compute_seconds, self.audio_seconds
        )


def _as_int(value: Any, name: str) -> int:
    """A page number that must be an integer (sliders send 25.0): one sentence otherwise."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise DemoError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(f) or f != int(f):
        raise DemoError(f"{name} must be a whole number, got {value!r}.")
    return int(f)


def _as_float(value: Any, name: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise DemoError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(f):
        raise DemoError(f"{name} must be a finite number, got {value!r}.")
    return f


def _require_file(path: Any, what: str, how: str = "upload or record one") -> str:
    """The path of an uploaded file (Gradio passes the upload's path), or one sentence."""
    if path is None or (isinstance(path, str) and not path.strip()):
        raise DemoError(f"no {what}; {how}.")
    if not isinstance(path, str | os.PathLike):
        raise DemoError(f"the {what} must be a file path, got {type(path).__name__}.")
    return os.fspath(path)


class DemoService:
    """One NS2 checkpoint served to the demo page (see the module docstring)."""

    def __init__(
        self,
        checkpoint: str,
        *,
        codec_checkpoint: str | None = None,
        aligner: str | None = None,
        outputs_dir: str | None = None,
        warmup_tokens: Sequence[int] = (32, 64),
        warmup_frames: Sequence[int] = (128, 256, 384, 512),
        warmup_steps: int = DEFAULT_STEPS,
        loader: Callable[..., Any] | None = None,
    ):
        self.checkpoint = checkpoint
        self.codec_checkpoint = codec_checkpoint
        self.aligner = aligner or None
        self.outputs_dir = outputs_dir or tempfile.mkdtemp(prefix="ns2_demo_")
        os.makedirs(self.outputs_dir, exist_ok=True)
        self.warmup_tokens = tuple(int(t) for t in warmup_tokens)
        self.warmup_frames = tuple(int(f) for f in warmup_frames)
        self.warmup_steps = int(warmup_steps)
        self._loader = loader
        self._synth: Any = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()  # one synthesis at a time per model
        self._counter = itertools.count(1)
        self._status = "Not started."
        self.load_seconds = math.nan
        self.warmup_seconds = math.nan
        self.last: DemoResult | None = None

    # ------------------------------------------------------------------------ loading
    def start(self, *, background: bool = True) -> None:
        """Restore the checkpoint and compile the warm-up buckets (in a thread by default)."""
        if background:
            threading.Thread(target=self._load, name="ns2-demo-load", daemon=True).start()
        else:
            self._load()

    def _load(self) -> None:
        try:
            self._status = f"Loading the model from {self.checkpoint} ..."
            start = time.perf_counter()
            if self._loader is None:
                from naturalspeech2_jax.inference import Synthesizer  # JAX: after the page is up

                self._loader = Synthesizer.from_checkpoint
            synth = self._loader(self.checkpoint, codec_checkpoint=self.codec_checkpoint)
            self.load_seconds = time.perf_counter() - start
            start = time.perf_counter()
            for i, tokens in enumerate(self.warmup_tokens):
                self._status = (
                    f"Warming up: compiling the programs for up to {tokens} phonemes "
                    f"({i + 1} of {len(self.warmup_tokens)}) ..."
                )
                frames = [f for f in self.warmup_frames if f >= tokens] or [max(self.warmup_frames)]
                synth.warmup(tokens=(tokens,), frames=frames, steps=self.warmup_steps)
            self.warmup_seconds = time.perf_counter() - start
            self._synth = synth
            self._status = (
                f"Ready: loaded in {self.load_seconds:.1f} s, warmed up in "
                f"{self.warmup_seconds:.1f} s."
            )
            log.info("demo: %s", self._status)
        except Exception as e:  # shown in the page; the server keeps answering
            self._error = e
            self._status = f"The model failed to load: {e}"
            log.exception("demo: loading %s failed", self.checkpoint)
        finally:
            self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self._error is None

    def status(self) -> str:
        """One line for the page: loading, warming up (which program), ready, or the failure."""
        return self._status

    def synthesizer(self, timeout: float | None = None) -> Any:
        """The loaded Synthesizer, waiting for the loader if it is still running."""
        if not self._ready.wait(timeout):
            raise DemoError("the model is still loading; try again in a moment.")
        if self._error is not None:
            raise DemoError(f"the model failed to load ({self._error}); restart the demo.")
        return self._synth

    # ---------------------------------------------------------------------- model card
    def info(self) -> dict[str, Any]:
        """What the checkpoint is: preset, parameters, training steps, vocabulary, codec."""
        synth = self.synthesizer()
        import jax  # loaded already by the Synthesizer

        from naturalspeech2_jax.models.ns2 import param_count_groups

        groups = param_count_groups(synth.model)
        cfg = synth.config
        return {
            "checkpoint": synth.checkpoint,
            "preset": cfg.get("preset", "?"),
            "training_step": synth.step,
            "parameters": int(sum(groups.values())),
            "parameters_by_part": {k: int(v) for k, v in groups.items()},
            "vocabulary": {"version": synth.vocab.version, "tokens": len(synth.vocab)},
            "codec": str(synth.codec.workdir),
            "codebooks": list(synth.codec.codebooks.shape),
            "max_prompt_seconds": synth.max_prompt_seconds,
            "guidance": bool(
                cfg.model.get("cond_drop_prob", 0.0) > 0
                or cfg.model.get("prompt_drop_prob", 0.0) > 0
            ),
            "device": str(jax.devices()[0].device_kind),
            "load_seconds": round(self.load_seconds, 2),
            "warmup_seconds": round(self.warmup_seconds, 2),
        }

    def info_markdown(self) -> str:
        if not self.ready:
            return f"**Model:** {self.status()}"
        i = self.info()
        rows = [
            ("checkpoint", f"`{i['checkpoint']}`"),
            ("preset", i["preset"]),
            ("parameters", f"{i['parameters'] / 1e6:.2f} M"),
            ("training steps", i["training_step"]),
            ("vocabulary", f"{i['vocabulary']['tokens']} phonemes, `{i['vocabulary']['version']}`"),
            ("codec", f"`{i['codec']}` (codebooks {' x '.join(map(str, i['codebooks']))})"),
            ("prompt", f"first {i['max_prompt_seconds']:.1f} s used"),
            ("guidance", "yes" if i["guidance"] else "no (trained without condition dropout)"),
            ("device", i["device"]),
            ("last request", self.last.summary() if self.last else "none yet"),
        ]
        return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)

    # ------------------------------------------------------------------------ requests
    def _run(self, kind: str, title: str, make: Callable[[Any], Any]) -> DemoResult:
        synth = self.synthesizer()
        with self._lock:
            start = time.perf_counter()
            result = make(synth)
            compute = time.perf_counter() - start
            n = next(self._counter)
            wav = os.path.join(self.outputs_dir, f"{n:04d}_{kind}.wav")
            cli.write_outputs(wav, result, title)
        stem = os.path.splitext(wav)[0]
        out = DemoResult(
            wav_path=wav,
            png_path=stem + ".png",
            alignment_path=stem + ".alignment.json",
            audio_seconds=len(result.wav) / result.sample_rate,
            compute_seconds=compute,
        )
        self.last = out
        log.info("demo: %s request %d: %s", kind, n, out.summary())
        return out

    def speak(
        self,
        text: str,
        prompt: Any,
        *,
        sampler: str = DEFAULT_SAMPLER,
        steps: Any = DEFAULT_STEPS,
        seed: Any = 0,
        speed: Any = 1.0,
        pitch_shift: Any = 0.0,
        guidance_scale: Any = 1.0,
    ) -> DemoResult:
        """Text in the voice of the prompt (a path). Empty or unpronounceable text and a missing,
        short or silent prompt get the Synthesizer's own sentences: the ones the CLI prints."""
        if prompt is not None:
            prompt = _require_file(prompt, "prompt recording")
        options = self._options(sampler, steps, seed, pitch_shift)
        options.update(speed=_as_float(speed, "speed"),
                       guidance_scale=_as_float(guidance_scale, "guidance"))  # fmt: skip
        return self._run("speak", text, lambda s: s.synthesize(text, prompt, **options))

    def sing(
        self,
        score: Any,
        prompt: Any,
        *,
        sampler: str = "dpm++2m",
        steps: Any = 50,
        seed: Any = 0,
        pitch_shift: Any = 0.0,
        vibrato_cents: Any = 30.0,
    ) -> DemoResult:
        """A score file (JSON, MIDI or MusicXML) sung in the voice of the prompt."""
        from naturalspeech2_jax.inference.singing import sing

        score = _require_file(score, "score", "upload a .json, .mid or .musicxml score")
        prompt = _require_file(prompt, "prompt recording")
        vibrato = _as_float(vibrato_cents, "vibrato")
        if vibrato < 0:
            raise DemoError(f"vibrato must be >= 0 cents, got {vibrato:g}; try 30.")
        options = self._options(sampler, steps, seed, pitch_shift)
        options["vibrato_cents"] = vibrato
        title = os.path.basename(score)
        return self._run("sing", title, lambda s: sing(s, score, prompt, **options))

    def convert(
        self,
        source: Any,
        text: str,
        prompt: Any,
        *,
        sampler: str = "dpm++2m",
        steps: Any = 25,
        keep_pitch: bool = False,
    ) -> DemoResult:
        """The source recording (with its transcript) re-spoken in the voice of the prompt."""
        from naturalspeech2_jax.inference.voice_conversion import convert

        source = _require_file(source, "source recording")
        if not isinstance(text, str) or not text.strip():
            raise DemoError(
                "the source's transcript is empty; type what the source recording says."
            )
        prompt = _require_file(prompt, "target prompt recording")
        steps = _as_int(steps, "steps")
        if steps < 1:
            raise DemoError(f"steps must be >= 1, got {steps}; try 25.")
        sampler = self._sampler(sampler)
        return self._run(
            "convert",
            text,
            lambda s: convert(
                s, source, prompt, text=text, sampler=sampler, steps=steps,
                keep_pitch=bool(keep_pitch), aligner=self.aligner,
            ),
        )  # fmt: skip

    def _options(self, sampler: Any, steps: Any, seed: Any, pitch_shift: Any) -> dict[str, Any]:
        """The page's numbers as the Synthesizer takes them (it checks their ranges itself)."""
        return {
            "sampler": self._sampler(sampler),
            "steps": _as_int(steps, "steps"),
            "seed": _as_int(seed, "seed"),
            "pitch_shift": _as_float(pitch_shift, "pitch shift"),
        }

    @staticmethod
    def _sampler(name: Any) -> str:
        from naturalspeech2_jax.diffusion.samplers import SAMPLERS

        if name not in SAMPLERS:
            raise DemoError(
                f"unknown sampler {name!r}; choose one of {', '.join(sorted(SAMPLERS))}."
            )
        return str(name)
