"""DemoService without a model or a browser: a stand-in Synthesizer shows the loading states,
the one-request-at-a-time lock, the number checks and the files a request writes."""

from __future__ import annotations

import json
import pathlib
import threading
import time
import wave

import ml_collections
import numpy as np
import pytest

from naturalspeech2_jax.demo.service import DemoError, DemoService
from naturalspeech2_jax.inference.synthesizer import SynthesisResult, check_options


class FakeSynth:
    """What DemoService uses of a Synthesizer; synthesize() sleeps and records its interval."""

    def __init__(self, seconds: float = 0.2):
        self.seconds = seconds
        self.intervals: list[tuple[float, float]] = []
        self.warmed: list[tuple] = []
        self.config = ml_collections.ConfigDict({"preset": "fake", "model": {}})

    def warmup(self, **kw):
        self.warmed.append((kw["tokens"], tuple(kw["frames"])))

    def synthesize(self, text, prompt, **options):
        if not text:
            from naturalspeech2_jax.inference.synthesizer import SynthesisError

            raise SynthesisError("the text is empty; pass a sentence to synthesise.")
        check_options(**{k: options[k] for k in ("steps", "seed", "speed", "pitch_shift")})
        start = time.perf_counter()
        time.sleep(self.seconds)
        self.intervals.append((start, time.perf_counter()))
        frames = 80  # 1 s
        return SynthesisResult(
            wav=np.sin(np.arange(frames * 200) / 10.0).astype(np.float32) * 0.1,
            durations=np.array([40, 40], np.int32), phonemes=["h", "i"],
            log_f0=np.full((frames,), np.log(120.0), np.float32),
        )  # fmt: skip


def service(tmp_path, synth=None, loader=None, **kw) -> DemoService:
    synth = synth or FakeSynth()
    return DemoService(
        "RUN", outputs_dir=str(tmp_path / "out"), loader=loader or (lambda *a, **k: synth), **kw
    )


def test_a_request_writes_wav_picture_and_alignment(tmp_path):
    s = service(tmp_path, warmup_tokens=(32, 64), warmup_frames=(128, 256))
    s.start(background=False)
    assert s.ready and s.status().startswith("Ready")
    # Each phoneme bucket is warmed with the frame buckets at least as long as it.
    assert s.synthesizer().warmed == [((32,), (128, 256)), ((64,), (128, 256))]
    r = s.speak("hi", str(tmp_path / "p.wav"), steps=25.0, seed=3)  # a slider sends 25.0
    with wave.open(r.wav_path) as w:
        assert (w.getframerate(), w.getnframes(), w.getsampwidth()) == (16000, 16000, 2)
    assert r.png_path.endswith(".png") and (tmp_path / "out" / "0001_speak.png").stat().st_size
    alignment = json.loads(pathlib.Path(r.alignment_path).read_text())["alignment"]
    assert [a["phoneme"] for a in alignment] == ["h", "i"] and alignment[1]["end"] == 1.0
    assert r.audio_seconds == 1.0 and 0 < r.rtf < 10
    assert s.last is r and "RTF" in r.summary()


def test_requests_run_one_at_a_time(tmp_path):
    synth = FakeSynth(seconds=0.3)
    s = service(tmp_path, synth)
    s.start(background=False)
    threads = [threading.Thread(target=s.speak, args=("hi", "p.wav")) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans = sorted(synth.intervals)
    assert len(spans) == 3
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans


def test_status_says_loading_until_ready_and_requests_wait(tmp_path):
    gate = threading.Event()
    synth = FakeSynth()

    def slow_loader(*a, **k):
        gate.wait(10)
        return synth

    s = service(tmp_path, loader=slow_loader)
    s.start()
    time.sleep(0.1)
    assert not s.ready and s.status().startswith("Loading the model from RUN")
    assert "Loading" in s.info_markdown()
    with pytest.raises(DemoError, match="the model is still loading; try again in a moment"):
        s.synthesizer(timeout=0.05)
    gate.set()
    result = s.speak("hi", "p.wav")  # waits for the loader
    assert s.ready and result.audio_seconds == 1.0


def test_a_model_that_fails_to_load_is_one_sentence_and_the_service_answers(tmp_path):
    def broken(*a, **k):
        raise FileNotFoundError("NS2 checkpoint RUN does not exist; pass the --workdir of a run.")

    s = service(tmp_path, loader=broken)
    s.start(background=False)
    assert not s.ready
    assert s.status() == (
        "The model failed to load: NS2 checkpoint RUN does not exist; pass the --workdir of a run."
    )
    for _ in range(2):  # still answering
        with pytest.raises(DemoError, match=r"^the model failed to load \(NS2 checkpoint RUN"):
            s.speak("hi", "p.wav")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps="many"), "steps must be a number, got 'many'."),
        (dict(steps=2.5), "steps must be a whole number, got 2.5."),
        (dict(steps=0), "steps must be an integer >= 1"),  # the Synthesizer's own check
        (dict(seed=float("nan")), "seed must be a whole number, got nan."),
        (dict(speed=float("inf")), "speed must be a finite number, got inf."),
        (dict(speed=0), "speed must be > 0"),
        (dict(sampler="magic"), "unknown sampler 'magic'; choose one of "),
    ],
)
def test_numbers_and_choices_are_checked(tmp_path, kwargs, message):
    s = service(tmp_path)
    s.start(background=False)
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        s.speak("hi", "p.wav", **kwargs)
    assert s.speak("hi", "p.wav").audio_seconds == 1.0  # and the next request is served


def test_missing_files_are_named(tmp_path):
    s = service(tmp_path)
    s.start(background=False)
    with pytest.raises(DemoError, match="^no score; upload a .json, .mid or .musicxml score.$"):
        s.sing(None, "p.wav")
    with pytest.raises(DemoError, match="^no source recording; upload or record one.$"):
        s.convert("", "hello", "p.wav")
    with pytest.raises(DemoError, match="^the source's transcript is empty"):
        s.convert("s.wav", "  ", "p.wav")
    with pytest.raises(DemoError, match="^vibrato must be >= 0 cents, got -1"):
        s.sing("s.json", "p.wav", vibrato_cents=-1)
