"""The whole pipeline in one command, resumable: corpus -> data -> codec -> codes -> NS2 -> samples.

    python launch/quickstart.py --workdir=W [--preset=smoke|tiny] [--corpus=PATH]

Without ``--corpus`` it generates the embedded corpus (a multi-speaker English corpus synthesised
by espeak-ng, which ships with pip) under ``W/corpus``. Each stage writes its outputs under ``W``
and a ``W/<stage>.done`` marker; running the command again skips finished stages and resumes an
interrupted training stage from its last checkpoint. Stages that the project has not built yet are
listed as such at the end (the main job runs whatever exists).

Expected: ``--preset=smoke`` finishes in a few minutes on 2 CPU cores, ``tiny`` in under 30.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from absl import app, flags  # noqa: E402
from etils import epath  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Where every stage writes its outputs.")
_PRESET = flags.DEFINE_enum("preset", "tiny", ["smoke", "tiny"], "Size of every stage.")
_CORPUS = flags.DEFINE_string("corpus", None, "A corpus on disk instead of the embedded one.")
_LAYOUT = flags.DEFINE_string("layout", None, "Corpus layout when it cannot be detected.")

log = logging.getLogger("quickstart")

# Embedded corpus size per preset: (speakers, utterances per speaker, held-out speakers).
CORPUS_SIZE = {"smoke": (6, 6, 2), "tiny": (24, 20, 4)}


def stage_corpus(workdir: epath.Path, preset: str) -> dict:
    if _CORPUS.value:
        return {"corpus": _CORPUS.value}
    from naturalspeech2_jax.data.synthetic import generate_corpus

    speakers, utts, heldout = CORPUS_SIZE[preset]
    manifest = generate_corpus(
        workdir / "corpus", num_speakers=speakers, utts_per_speaker=utts, num_heldout=heldout
    )
    return {"corpus": str(workdir / "corpus"), "utterances": manifest.get("num_utterances")}


def stage_data(workdir: epath.Path, preset: str) -> dict:
    from naturalspeech2_jax.data.prepare import prepare_corpus

    if _CORPUS.value:  # a real corpus: durations from TextGrids or the built-in aligner
        result = prepare_corpus(
            _CORPUS.value, workdir / "data", layout=_LAYOUT.value, name="quickstart"
        )
    else:  # the embedded corpus ships exact timings; DIO pitch suffices for synthetic speech
        result = prepare_corpus(
            str(workdir / "corpus"),
            workdir / "data",
            name="quickstart",
            durations="exact",
            pitch_method="dio",
        )
    return {"dataset_dir": str(result.dataset_dir)}


# (name, function, issue that builds it when missing). A function is None until that stage exists.
STAGES: list[tuple[str, Callable | None, str]] = [
    ("corpus", stage_corpus, ""),
    ("data", stage_data, ""),
    ("codec", None, "neural codec (issue 4)"),
    ("codes", None, "neural codec (issue 4)"),
    ("ns2", None, "NaturalSpeech 2 model (issue 5)"),
    ("samples", None, "inference (issue 6)"),
    ("eval", None, "evaluation suite (issue 7)"),
]


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; flags only (see --help).")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required, e.g. --workdir=work/quickstart.")
    if _CORPUS.value and not os.path.isdir(_CORPUS.value):
        raise app.UsageError(f"--corpus={_CORPUS.value} is not a directory; give a corpus folder.")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    workdir = epath.Path(_WORKDIR.value)
    workdir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict] = {}
    pending = []
    for name, fn, issue in STAGES:
        marker = workdir / f"{name}.done"
        if fn is None:
            pending.append(f"{name} ({issue})")
            continue
        if marker.exists():
            summary[name] = json.loads(marker.read_text())
            log.info("stage %s: already done", name)
            continue
        start = time.time()
        log.info("stage %s: running", name)
        result = fn(workdir, _PRESET.value)
        result["seconds"] = round(time.time() - start, 1)
        marker.write_text(json.dumps(result))
        summary[name] = result
        log.info("stage %s: done in %.0f s", name, result["seconds"])
    (workdir / "quickstart.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    if pending:
        print("not built yet, skipped: " + ", ".join(pending))


if __name__ == "__main__":
    app.run(main)
