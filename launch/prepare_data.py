"""Turn a corpus on disk into a training-ready TFDS dataset, checking every invariant.

    python launch/prepare_data.py --corpus=PATH[,PATH...] --data_dir=DIR [--name=N] [--layout=L]
    python launch/prepare_data.py --embedded --data_dir=DIR          # the embedded corpus
    python launch/prepare_data.py --corpus=PATH --data_dir=DIR --runner=beam [--beam_options=...]
    python launch/prepare_data.py --corpus=PATH --train_aligner=DIR [--aligner_sample=2000]
    python launch/prepare_data.py --corpus=PATH --write_manifest=FILE.tsv

Layouts (detected, or named with --layout): kaldi (text, utt2spk, wav.scp or <spk>/<utt>.flac),
libritts, librispeech, vctk, mls, ljspeech, folder (audio + same-name .txt). A folder holding
several corpora (e.g. train/ and dev/) gives one split each. Durations come from exact timings
(embedded corpus), TextGrids whose phones are our tokens, or the built-in aligner
(--durations=aligner forces it; configs/aligner.py:tiny, 1000 steps by default, about 10 min on 2
cores, then a minute to align a few thousand utterances). The result opens with
``tfds.builder_from_directory(DIR/<name>/1.0.0)``; its card.md lists hours, speakers and the
rejected utterances with their reasons.

``--runner=beam`` runs the same per-utterance stages as Apache Beam transforms (the ``beam``
extra; data/prepare_beam.py): by default Beam's DirectRunner with --num_workers processes here,
or any runner given in --beam_options (Beam's own flags, e.g. "--runner=DataflowRunner
--project=P --region=R --temp_location=gs://B/tmp"). It writes the same dataset, card and
rejected.tsv as the local runner. Where the built-in aligner is needed, train it first on a
sample of the corpus (--train_aligner=DIR, its own job) and pass --aligner_checkpoint=DIR to
either runner. A folder with a ``manifest.tsv`` (id, speaker, audio, text [, start, end]) is a
corpus that the Beam workers read line by line; --write_manifest writes one from any layout.
--transcribe lists audio without a transcript (a plain folder of audio, LibriSpeech without
*.trans.txt) and transcribes it with the bundled Moonshine recogniser, keeping what it hears
with a mean token log-probability of at least --transcribe_min_confidence (the rest is in
rejected.tsv with the recognised text and its confidence).

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
import shlex
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
    ["manifest", "kaldi", "libritts", "librispeech", "vctk", "mls", "ljspeech", "folder"],
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
_RUNNER = flags.DEFINE_enum(
    "runner", "local", ["local", "beam"],
    "local: worker processes here; beam: Apache Beam transforms (pip install -e '.[beam]').",
)  # fmt: skip
_BEAM_OPTIONS = flags.DEFINE_string(
    "beam_options", "",
    "Beam pipeline options, space-separated (e.g. '--runner=DataflowRunner --project=P "
    "--region=R --temp_location=gs://B/tmp'); default the DirectRunner with --num_workers.",
)  # fmt: skip
_ALIGNER_CHECKPOINT = flags.DEFINE_string(
    "aligner_checkpoint", None,
    "A built-in aligner trained by --train_aligner: used instead of training one on the corpus.",
)  # fmt: skip
_TRAIN_ALIGNER = flags.DEFINE_string(
    "train_aligner", None,
    "Only train the built-in aligner on a sample of --corpus into this folder, then stop.",
)  # fmt: skip
_ALIGNER_SAMPLE = flags.DEFINE_integer(
    "aligner_sample", 2000, "Utterances (spread over the corpus) that --train_aligner trains on."
)
_WRITE_MANIFEST = flags.DEFINE_string(
    "write_manifest", None, "Only write the corpus listing as a manifest.tsv here, then stop."
)
_TRANSCRIBE = flags.DEFINE_bool(
    "transcribe", False,
    "Transcribe audio that has no transcript (folder and librispeech layouts) with the bundled "
    "Moonshine recogniser (the eval extra); keep it above --transcribe_min_confidence.",
)  # fmt: skip
_MIN_CONFIDENCE = flags.DEFINE_float(
    "transcribe_min_confidence", -0.35,
    "Lowest mean token log-probability of a kept transcription; the others go to rejected.tsv.",
)  # fmt: skip
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
    if _WRITE_MANIFEST.value or _TRAIN_ALIGNER.value:
        if not _CORPUS.value or _EMBEDDED.value:
            _usage_error("--write_manifest and --train_aligner need --corpus=PATH")
        sys.exit(cli.one_line_errors(_manifest_or_aligner))
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
        durations=_DURATIONS.value,
        aligner=_ALIGNER.value,
        max_edge_silence=_EDGE.value,
        overwrite=_OVERWRITE.value,
        aligner_checkpoint=_ALIGNER_CHECKPOINT.value,
        runner=_RUNNER.value,
        beam_options=tuple(shlex.split(_BEAM_OPTIONS.value)),
        transcribe=_TRANSCRIBE.value,
        transcribe_min_confidence=_MIN_CONFIDENCE.value,
        **_feature_options(),
    )
    print(json.dumps({"dataset_dir": str(result.dataset_dir), **result.card}, indent=1))


def _feature_options() -> dict:
    """The options a preparation and --train_aligner share (how the audio becomes features)."""
    return dict(
        layout=_LAYOUT.value,
        aligner_preset=_ALIGNER_PRESET.value,
        aligner_steps=_ALIGNER_STEPS.value,
        pitch_method=_PITCH.value,
        trim_silence=_TRIM.value,
        min_seconds=_MIN_S.value,
        max_seconds=_MAX_S.value,
        num_workers=_WORKERS.value or None,
    )


def _manifest_or_aligner() -> None:
    """--write_manifest or --train_aligner: the jobs that come before a (Beam) preparation."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    from naturalspeech2_jax.data import prepare, readers

    for c in _CORPUS.value:
        if not os.path.isdir(c):
            _usage_error(f"--corpus {c} is not a directory; give a corpus folder")
    if _WRITE_MANIFEST.value:
        listings = prepare.discover_splits(_CORPUS.value, _LAYOUT.value)
        if len(listings) != 1:
            names = ", ".join(n for n, _ in listings)
            raise ValueError(f"--write_manifest writes one corpus; --corpus holds "
                             f"{len(listings)} ({names}): give one of them.")  # fmt: skip
        listing = listings[0][1]
        n = readers.write_manifest(listing, _WRITE_MANIFEST.value)
        print(f"{_WRITE_MANIFEST.value}: {n} utterances ({len(listing.problems)} not listed: "
              f"{listing.summary(3)})")  # fmt: skip
        return
    report = prepare.train_aligner_on_corpus(
        _CORPUS.value,
        _TRAIN_ALIGNER.value,
        sample=_ALIGNER_SAMPLE.value,
        **_feature_options(),
    )
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    app.run(main)
