"""Drive the demo page in headless Chromium (Playwright), as a user would: the browser test and
the latency benchmark share this.

    with DemoServer(checkpoint, port) as server, DemoPage(server.url) as page:
        seconds, wav = page.speak("A sentence to say.", "prompt.wav")

``DemoServer`` runs ``launch/demo.py`` in its own process (as a user starts it) and waits until
the page answers and the model is ready. ``DemoPage`` opens Chromium through Playwright's Python
package pointed at a browser already on the machine (Debian's ``chromium``: ``chromium_path``);
nothing is downloaded. Chromium starts with the flags that keep it off the network (no background
requests, no component updates), which a machine without a way out needs.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import wave
from collections.abc import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHROMIUM_FLAGS = (
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
)  # fmt: skip


def chromium_path() -> str | None:
    """A Chromium/Chrome executable: $NS2_CHROMIUM, else the first of chromium, chromium-browser,
    google-chrome on PATH; None when there is none."""
    given = os.environ.get("NS2_CHROMIUM")
    if given:
        return given if os.path.exists(given) else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wav_info(data: bytes) -> tuple[int, float]:
    """(sample rate, seconds) of a WAV file's bytes."""
    with wave.open(io.BytesIO(data)) as w:
        return w.getframerate(), w.getnframes() / w.getframerate()


class DemoServer:
    """``python launch/demo.py --checkpoint ... --port ...`` in a subprocess, ready on enter."""

    def __init__(
        self,
        checkpoint: str,
        port: int | None = None,
        *,
        outputs: str | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        log_path: str | None = None,
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.args = [sys.executable, os.path.join(REPO, "launch", "demo.py"),
                     f"--checkpoint={checkpoint}", f"--port={self.port}", *extra_args]  # fmt: skip
        if outputs:
            self.args.append(f"--outputs={outputs}")
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    def __enter__(self) -> DemoServer:
        self._log = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=self.env)  # fmt: skip
        return self

    def wait_until_up(self, timeout: float = 300.0) -> float:
        """Seconds until the page answers HTTP 200 (the model may still be loading)."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the demo exited with status {self.proc.returncode}; see "
                                   f"{self.log_path or 'its output'}.")  # fmt: skip
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    if r.status == 200:
                        return time.perf_counter() - start
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the demo did not answer at {self.url} within {timeout:.0f} s.")

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=10) as r:
                return r.status == 200
        except OSError:
            return False

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()


class DemoPage:
    """The demo page in headless Chromium (context manager)."""

    def __init__(self, url: str, *, executable: str | None = None, width: int = 1280):
        self.url = url
        self.executable = executable or chromium_path()
        if self.executable is None:
            raise RuntimeError("no Chromium found; apt-get install chromium (or set NS2_CHROMIUM).")
        self.width = width

    def __enter__(self) -> DemoPage:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(
            executable_path=self.executable, headless=True, args=list(CHROMIUM_FLAGS)
        )
        self.page = self.browser.new_page(viewport={"width": self.width, "height": 900})
        self.page.goto(self.url)
        self.page.wait_for_selector("#speak-button")
        return self

    def __exit__(self, *exc) -> None:
        self.browser.close()
        self._pw.stop()

    def wait_until_ready(self, timeout: float = 600.0) -> str:
        """The model status line once it says Ready (or failed)."""
        self.page.wait_for_function(
            "() => { const t = document.querySelector('#model-status')?.innerText || '';"
            " return t.includes('Ready') || t.includes('failed'); }",
            timeout=timeout * 1000,
        )
        return self.page.inner_text("#model-status")

    def speak(
        self, text: str, prompt: str | None, *, timeout: float = 600.0
    ) -> tuple[float, bytes | None, str]:
        """Type ``text``, upload ``prompt`` (a path; None keeps the current one), press Speak.
        Returns (seconds from the click to the new result or error, the result's WAV bytes or
        None, the status line)."""
        page = self.page
        page.fill("#speak-text textarea", text)
        if prompt is not None:
            page.locator("#speak-prompt input[type=file]").set_input_files(prompt)
            page.wait_for_selector("#speak-prompt audio[src]", state="attached")
        before = page.inner_text("#speak-status")  # every status line has its request number
        start = time.perf_counter()
        page.click("#speak-button")
        # A request is over when the status line changes to "Done (request n): ..." or
        # "Error (request n): ...".
        page.wait_for_function(
            "(before) => { const t = document.querySelector('#speak-status')?.innerText || '';"
            " return t !== before && (t.startsWith('Done') || t.startsWith('Error')); }",
            arg=before, timeout=timeout * 1000,
        )  # fmt: skip
        status = page.inner_text("#speak-status")
        if not status.startswith("Done"):
            return time.perf_counter() - start, None, status
        link = page.wait_for_selector("#speak-audio a[download]", state="attached")
        page.wait_for_selector("#speak-audio audio", state="attached")
        seconds = time.perf_counter() - start
        response = page.request.get(link.get_attribute("href"))
        return seconds, response.body(), status

    def screenshot(self, path: str) -> None:
        self.page.screenshot(path=path, full_page=True)
