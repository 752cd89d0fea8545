"""Turn a corpus on disk into a training-ready TFDS dataset, checking every invariant.

    python launch/prepare_data.py --corpus=PATH[,PATH...] --data_dir=DIR [--name=N] [--layout=L]
    python launch/prepare_data.py --embedded --data_dir=DIR          # the embedded corpus

Layouts (detected, or named with --layout): kaldi (text, utt2spk, wav.scp or <spk>/<utt>.flac),
libritts, librispeech, vctk, mls, ljspeech, folder (audio + same-name .txt). A folder holding
several corpora (e.g. train/ and dev/) gives one split each. Durations come from exact timings
(embedded corpus), TextGrids whose phones are our tokens, or the built-in aligner
(--durations=aligner forces it; configs/aligner.py:tiny, 1000 steps by default, about 10 min on 2
cores, then a minute to align a few thousand utterances). The result opens with
``tfds.builder_from_directory(DIR/<name>/1.0.0)``; its card.md lists hours, speakers and the
rejected utterances with their reasons.

Preparing again under the same --name reuses the dataset when it was made from the same corpora
(their files' sizes and times included) and options (recorded in its prepared_from.json), refuses
naming what differs otherwise, and rebuilds it with --overwrite. An interrupted preparation (even
kill -9: its worker processes end with it) resumes from its feature cache when run again, and
removes what the interruption left; the dataset is the one an uninterrupted run makes. Errors are
one line on stderr (exit status 2).
"""

from __future__ import annotations

import json
import logging
import os
import sys

from absl import app, flags

from naturalspeech2_jax import cli

_CORPUS = flags.DEFINE_list("corpus", [], "Corpus folder(s), comma-separated.")
_EMBEDDED = flags.DEFINE_bool("embedded", False, "Generate and prepare the embedded corpus.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Output folder for prepared datasets.")
_NAME = flags.DEFINE_string("name", None, "Dataset name (default: from the corpus folder).")
_LAYOUT = flags.DEFINE_enum(
    "layout",
    None,
    ["kaldi", "libritts", "librispeech", "vctk", "mls", "ljspeech", "folder"],
    "Corpus layout (default: detected).",
)
_DURATIONS, _ALIGNER = cli.define_alignment_flags()
_ALIGNER_PRESET = flags.DEFINE_string("aligner_preset", "tiny", "configs/aligner.py preset.")
_ALIGNER_STEPS = flags.DEFINE_integer(
    "aligner_steps", 0, "Aligner training steps (0: the preset's total_steps)."
)
_PITCH = flags.DEFINE_enum("pitch_method", "harvest", ["harvest", "dio"], "pyworld method.")
_TRIM = flags.DEFINE_bool("trim_silence", False, "Trim leading/trailing silence.")
_EDGE = flags.DEFINE_float(
    "max_edge_silence", None,
    "Cut each utterance's leading/trailing silence (as aligned) to at most this many seconds.",
)  # fmt: skip
_MIN_S = flags.DEFINE_float("min_seconds", 0.5, "Shorter utterances are rejected.")
_MAX_S = flags.DEFINE_float("max_seconds", 20.0, "Longer utterances are rejected.")
_WORKERS = flags.DEFINE_integer("num_workers", 0, "Worker processes (0 = all cores).")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False,
    "Rebuild a dataset already prepared under --name (needed when the corpus or options differ).",
)  # fmt: skip


def _usage_error(reason: str) -> None:
    """The reason and a pointer to --help on stderr, exit status 2 (not the whole help text)."""
    print(f"error: {reason} (see --help)", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        _usage_error(f"unexpected arguments {argv[1:]}; flags only")
    if not _DATA_DIR.value:
        _usage_error("--data_dir is required, e.g. --data_dir=work/data")
    if bool(_CORPUS.value) == _EMBEDDED.value:
        _usage_error("give exactly one of --corpus=PATH or --embedded")
    sys.exit(cli.one_line_errors(_prepare))


def _prepare() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    from naturalspeech2_jax.data.prepare import prepare_corpus

    corpora = list(_CORPUS.value)
    name = _NAME.value
    if _EMBEDDED.value:
        from naturalspeech2_jax.data.synthetic import generate_corpus

        if os.path.exists(_DATA_DIR.value) and not os.path.isdir(_DATA_DIR.value):
            _usage_error(f"--data_dir {_DATA_DIR.value} is a file, not a folder")

        corpus_dir = os.path.join(_DATA_DIR.value, "embedded_corpus")
        generate_corpus(corpus_dir)
        corpora, name = [corpus_dir], name or "embedded"
    for c in corpora:
        if not os.path.isdir(c):
            _usage_error(f"--corpus {c} is not a directory; give a corpus folder")
    if not name:
        name = "_".join(os.path.basename(os.path.normpath(c)) for c in corpora).lower()
        name = "".join(ch if ch.isalnum() else "_" for ch in name)
    result = prepare_corpus(
        corpora,
        _DATA_DIR.value,
        name=name,
        layout=_LAYOUT.value,
        durations=_DURATIONS.value,
        aligner=_ALIGNER.value,
        aligner_preset=_ALIGNER_PRESET.value,
        aligner_steps=_ALIGNER_STEPS.value,
        pitch_method=_PITCH.value,
        trim_silence=_TRIM.value,
        max_edge_silence=_EDGE.value,
        min_seconds=_MIN_S.value,
        max_seconds=_MAX_S.value,
        num_workers=_WORKERS.value or None,
        overwrite=_OVERWRITE.value,
    )
    print(json.dumps({"dataset_dir": str(result.dataset_dir), **result.card}, indent=1))


if __name__ == "__main__":
    app.run(main)
