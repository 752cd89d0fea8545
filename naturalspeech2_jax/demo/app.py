"""The Gradio page over :class:`~naturalspeech2_jax.demo.service.DemoService` (``launch/demo.py``).

Tabs Speak / Sing / Convert / Model. Every button runs in Gradio's queue under one concurrency
group of size one (``MODEL_QUEUE``): one synthesis at a time per model, the others wait with their
position shown. A request's error (empty text, nothing pronounceable, a short or silent prompt, a
score that does not parse...) is the service's one sentence, written into the tab's status line;
the server keeps serving. The model loads in the background after the server starts: the status
line at the top says what it is doing (a timer polls it) until it is ready.

The page loads nothing from the internet (no web fonts, no analytics): this project's machines and
many clusters have no way out, and a page waiting on a font never finishes loading.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Any

import gradio as gr

from naturalspeech2_jax.demo.service import PAGE_SAMPLERS, DemoResult, DemoService
from naturalspeech2_jax.diffusion.defaults import DEFAULT_SAMPLER, DEFAULT_STEPS

log = logging.getLogger(__name__)

MODEL_QUEUE = "ns2-model"  # the concurrency_id every synthesis button shares
_SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
_MONO_FONTS = ["ui-monospace", "monospace"]

INTRO = """# NaturalSpeech 2 (JAX)
Type a sentence, give a few seconds of the target voice (upload or record; 3 s works best) and
press **Speak**. **Sing** takes a score (JSON, MIDI or MusicXML with lyrics); **Convert** re-speaks
a recording, given its transcript, in the voice of a target prompt. Requests run one at a time."""


def theme() -> gr.themes.Base:
    """The default look with system fonts (Gradio's default fetches Google Fonts)."""
    return gr.themes.Default(font=_SYSTEM_FONTS, font_mono=_MONO_FONTS)


_REQUESTS = itertools.count(1)  # numbers each request's status line, so two equal ones differ


def _serve(call, *args: Any, **kwargs: Any) -> tuple[Any, Any, Any, str]:
    """Run one request -> (audio, WAV download, picture, status line). A bad input becomes the
    status line (the same sentence the CLI gives); an unexpected failure is logged with its
    traceback and named in one line. Either way the server keeps serving."""
    n = next(_REQUESTS)
    try:
        r: DemoResult = call(*args, **kwargs)
    except (ValueError, FileNotFoundError) as e:  # SynthesisError, CheckpointError, DemoError
        return None, None, None, f"**Error** (request {n}): {e}"
    except Exception as e:
        log.exception("demo: request %d failed", n)
        why = f"internal error ({type(e).__name__}: {str(e)[:200]})"
        return None, None, None, (
            f"**Error** (request {n}): {why}; the server log has the traceback, and the demo "
            "keeps serving."
        )  # fmt: skip
    return r.wav_path, r.wav_path, r.png_path, f"**Done** (request {n}): {r.summary()}"


def _result_column(prefix: str) -> tuple[gr.Audio, gr.File, gr.Image, gr.Markdown]:
    status = gr.Markdown("", elem_id=f"{prefix}-status")
    audio = gr.Audio(label="Result", type="filepath", interactive=False, elem_id=f"{prefix}-audio")
    wav = gr.File(label="WAV (16 kHz)", interactive=False, elem_id=f"{prefix}-wav")
    image = gr.Image(
        label="Mel, pitch and phoneme boundaries", type="filepath", interactive=False,
        elem_id=f"{prefix}-plot",
    )  # fmt: skip
    return audio, wav, image, status


def _voice(label: str, elem_id: str) -> gr.Audio:
    """An audio input (upload or record) that hands the handler a file path."""
    return gr.Audio(label=label, type="filepath", sources=["upload", "microphone"],
                    elem_id=elem_id)  # fmt: skip


def _sampler_and_steps(prefix: str, steps: int) -> tuple[gr.Dropdown, gr.Slider]:
    sampler = gr.Dropdown(list(PAGE_SAMPLERS), value=DEFAULT_SAMPLER, label="Sampler",
                          elem_id=f"{prefix}-sampler")  # fmt: skip
    n = gr.Slider(1, 200, value=steps, step=1, label="Steps", elem_id=f"{prefix}-steps")
    return sampler, n


def build_app(service: DemoService) -> gr.Blocks:
    """The page (not launched): see the module docstring."""
    with gr.Blocks(title="NaturalSpeech 2 (JAX)", analytics_enabled=False) as app:
        gr.Markdown(INTRO)
        model_status = gr.Markdown(f"**Model:** {service.status()}", elem_id="model-status")
        with gr.Tab("Speak"):
            with gr.Row():
                with gr.Column():
                    text = gr.Textbox(label="Text", lines=3, elem_id="speak-text",
                                      placeholder="Type a sentence to synthesise.")  # fmt: skip
                    prompt = _voice("Prompt (the target voice)", "speak-prompt")
                    sampler, steps = _sampler_and_steps("speak", DEFAULT_STEPS)
                    with gr.Row():
                        seed = gr.Number(0, label="Seed", precision=0, elem_id="speak-seed")
                        speed = gr.Slider(0.5, 2.0, value=1.0, step=0.05, label="Speed")
                        pitch = gr.Slider(
                            -12, 12, value=0, step=0.5, label="Pitch shift (semitones)"
                        )
                    guidance = gr.Slider(
                        0, 5, value=1.0, step=0.1, label="Guidance (1 = none; needs a model "
                        "trained with condition dropout)",
                    )  # fmt: skip
                    speak = gr.Button("Speak", variant="primary", elem_id="speak-button")
                with gr.Column():
                    s_out = _result_column("speak")
            speak.click(
                lambda *a: _serve(
                    service.speak, a[0], a[1], sampler=a[2], steps=a[3], seed=a[4], speed=a[5],
                    pitch_shift=a[6], guidance_scale=a[7],
                ),
                [text, prompt, sampler, steps, seed, speed, pitch, guidance], list(s_out),
                concurrency_limit=1, concurrency_id=MODEL_QUEUE, api_name="speak",
            )  # fmt: skip
        with gr.Tab("Sing"):
            with gr.Row():
                with gr.Column():
                    score = gr.File(label="Score (.json, .mid, .musicxml)", type="filepath",
                                    file_types=[".json", ".mid", ".midi", ".musicxml", ".xml"],
                                    elem_id="sing-score")  # fmt: skip
                    sing_prompt = _voice("Prompt (the target voice)", "sing-prompt")
                    sing_sampler, sing_steps = _sampler_and_steps("sing", 50)
                    with gr.Row():
                        sing_seed = gr.Number(0, label="Seed", precision=0)
                        sing_pitch = gr.Slider(
                            -12, 12, value=0, step=1, label="Transpose (semitones)"
                        )
                        vibrato = gr.Slider(0, 100, value=30, step=5, label="Vibrato (cents)")
                    sing_button = gr.Button("Sing", variant="primary", elem_id="sing-button")
                with gr.Column():
                    g_out = _result_column("sing")
            sing_button.click(
                lambda *a: _serve(
                    service.sing, a[0], a[1], sampler=a[2], steps=a[3], seed=a[4],
                    pitch_shift=a[5], vibrato_cents=a[6],
                ),
                [score, sing_prompt, sing_sampler, sing_steps, sing_seed, sing_pitch, vibrato],
                list(g_out), concurrency_limit=1, concurrency_id=MODEL_QUEUE, api_name="sing",
            )  # fmt: skip
        with gr.Tab("Convert"):
            with gr.Row():
                with gr.Column():
                    source = _voice("Source recording", "convert-source")
                    source_text = gr.Textbox(label="What the source says", lines=2,
                                             elem_id="convert-text")  # fmt: skip
                    target = _voice("Target prompt (the voice to convert to)", "convert-prompt")
                    conv_sampler, conv_steps = _sampler_and_steps("convert", 25)
                    keep_pitch = gr.Checkbox(False, label="Keep the source's pitch register")
                    conv_button = gr.Button("Convert", variant="primary",
                                            elem_id="convert-button")  # fmt: skip
                with gr.Column():
                    c_out = _result_column("convert")
            conv_button.click(
                lambda *a: _serve(
                    service.convert, a[0], a[1], a[2], sampler=a[3], steps=a[4], keep_pitch=a[5]
                ),
                [source, source_text, target, conv_sampler, conv_steps, keep_pitch], list(c_out),
                concurrency_limit=1, concurrency_id=MODEL_QUEUE, api_name="convert",
            )  # fmt: skip
        with gr.Tab("Model"):
            info = gr.Markdown(service.info_markdown(), elem_id="model-info")
            refresh = gr.Button("Refresh", elem_id="model-refresh")
            refresh.click(service.info_markdown, None, info, queue=False)

        # Until the model is ready the top line says what it is doing; then the timer stops.
        timer = gr.Timer(1.0)

        def poll() -> tuple[str, str, gr.Timer]:
            done = service.ready or service.status().startswith("The model failed")
            return (f"**Model:** {service.status()}", service.info_markdown(),
                    gr.Timer(active=not done))  # fmt: skip

        timer.tick(poll, None, [model_status, info, timer], queue=False)
        app.load(poll, None, [model_status, info, timer], queue=False)
        for out in (s_out, g_out, c_out):  # the model card's "last request" follows each result
            out[3].change(service.info_markdown, None, info, queue=False)
    return app


def serve(
    service: DemoService,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    max_queue: int = 32,
    block: bool = True,
) -> tuple[gr.Blocks, str]:
    """Start the page on host:port (the model keeps loading in the background); returns the app
    and its URL. ``block=False`` returns at once (tests, notebooks)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = build_app(service)
    app.queue(max_size=max_queue, default_concurrency_limit=1)
    _, url, _ = app.launch(
        server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
        allowed_paths=[service.outputs_dir], theme=theme(), footer_links=[], ssr_mode=False,
        show_error=True,
    )  # fmt: skip
    log.info("demo: serving %s at %s", service.checkpoint, url)
    if block:
        app.block_thread()
    return app, url
