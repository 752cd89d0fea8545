"""What a listener waits for in the web demo: time from pressing Speak to playable audio.

    python -m naturalspeech2_jax.benchmarks.demo_latency --checkpoint W/ns2 --prompt p.wav \
        [--repeats 5 --text "A ten word sentence ..." --warmup_tokens 32,64 \
         --warmup_frames 128,256,384,512]

starts ``launch/demo.py`` as a user would (its own process, model loaded and warmed there), drives
the page in headless Chromium (``demo/browser.py``: Debian's chromium + Playwright, nothing
downloaded) and prints one JSON object: seconds until the page answers and until the model is
ready, then for each request the seconds from the click to the audio element with its WAV (the
first one after warm-up included), the audio's length and the real-time factor the page reports.
Pick warm-up buckets that cover the sentence (a 10-word sentence is ~40 phonemes: 64; its frames
depend on the model's durations: the first request's status line shows them) or the first request
includes a compile. Timings are measurements, never pass/fail criteria.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time

from naturalspeech2_jax.demo.browser import DemoPage, DemoServer, wav_info

TEN_WORDS = "Grace said the basket was much cheaper than last year."
_RTF = re.compile(r"RTF (\d+\.\d+)")


def measure(
    checkpoint: str,
    prompt: str,
    *,
    text: str = TEN_WORDS,
    repeats: int = 5,
    extra_args: tuple[str, ...] = (),
    log_path: str | None = None,
) -> dict:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as outputs:
        server = DemoServer(checkpoint, outputs=outputs, extra_args=extra_args,
                            log_path=log_path)  # fmt: skip
        with server:
            up = server.wait_until_up()
            with DemoPage(server.url) as page:
                status = page.wait_until_ready()
                ready = time.perf_counter() - started
                requests = []
                for i in range(repeats):
                    seconds, wav, line = page.speak(text, prompt if i == 0 else None)
                    if wav is None:
                        raise RuntimeError(f"the demo answered {line!r}")
                    rtf = _RTF.search(line)
                    requests.append({
                        "seconds": round(seconds, 3),
                        "audio_seconds": round(wav_info(wav)[1], 3),
                        "server_rtf": float(rtf.group(1)) if rtf else None,
                    })  # fmt: skip
    times = [r["seconds"] for r in requests]
    return {
        "checkpoint": checkpoint,
        "text": text,
        "words": len(text.split()),
        "page_up_s": round(up, 2),
        "model_ready_s": round(ready, 2),
        "model_status": status,
        "time_to_audio_s": {
            "first": times[0],
            "median": round(statistics.median(times), 3),
            "min": min(times),
            "max": max(times),
        },
        "requests": requests,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--prompt", required=True, help="a recording of the target voice")
    p.add_argument("--text", default=TEN_WORDS)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup_tokens", default="32,64")
    p.add_argument("--warmup_frames", default="128,256,384,512")
    p.add_argument("--log", help="the demo server's log file")
    args = p.parse_args(argv)
    if not os.path.isfile(args.prompt):
        raise SystemExit(f"error: prompt {args.prompt} does not exist; pass a wav file.")
    extra = (f"--warmup_tokens={args.warmup_tokens}", f"--warmup_frames={args.warmup_frames}")
    result = measure(args.checkpoint, args.prompt, text=args.text, repeats=args.repeats,
                     extra_args=extra, log_path=args.log)  # fmt: skip
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
