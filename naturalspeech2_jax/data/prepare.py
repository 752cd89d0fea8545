"""One command from a corpus on disk to a training-ready TFDS dataset, every invariant checked.

Stages (each utterance that fails is reported with its reason and skipped; the rest go on):

1. **Read** the corpus (any layout of ``data/readers.py``; a folder holding several corpora, such
   as the embedded corpus's ``train/`` and ``heldout/``, gives one split per sub-corpus).
2. **Text**: normalise and phonemize every transcript in one batched G2P call; encode with the
   dataset's versioned phoneme vocabulary (unknown symbols -> rejected).
3. **Audio** in parallel worker processes: load (any rate/channels -> 16 kHz mono), loudness
   normalisation, optional silence trimming, length limits, pad to whole frames, pitch (log-F0 +
   voiced at the codec hop, never NaN) and log-mel (for the aligner). Cached per utterance under
   ``<data_dir>/_work`` so an interrupted run resumes: each cache is written to a temporary file
   renamed when complete, and read back whole (checksums, shapes) before it is trusted; a damaged
   one is recomputed, with a warning. The workers end with the preparation, even when it is
   killed with SIGKILL, and never write a cache after it.
4. **Durations in codec frames**: exact timings when the corpus ships them (the embedded corpus),
   Praat/MFA TextGrids whose phones are our tokens, else the built-in aligner
   (``configs/aligner.py``) trained on the corpus itself; ``durations="aligner"`` uses it even
   where exact timings exist, and the card then scores it against them. Boundaries are
   rounded, not durations, so ``sum(durations) == n_frames``.
5. **Write** the TFDS ArrayRecord dataset (``data/tfds_builder.py``) plus ``vocab.json``,
   ``speakers.json``, ``rejected.tsv`` and a dataset card: its figures (``lengths.png``,
   ``alignment.png``) first, then ``card.md`` that links them, ``prepared_from.json`` (corpus
   paths with the number, size and a digest of the sizes and times of their files, the options
   that change the data, the readers' and this module's versions) and last ``card.json``, the
   mark of a complete dataset; each file is written whole or not at all. Preparing again under
   the same name reuses the dataset when those are the same, refuses naming what differs
   otherwise (an edited corpus included), and rebuilds with ``overwrite=True``; when nothing
   survives, ``rejected.tsv`` is written into ``<data_dir>/_work/<name>`` and the error tallies
   every reason. One preparation of a name runs at a time (a lock in ``<data_dir>/_work``); what
   a killed one left (TFDS's ``incomplete.*`` folders, a dataset without its card, partial
   caches) is removed by the next, which says so in one INFO line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from etils import epath
from tqdm import tqdm

from naturalspeech2_jax import HOP_LENGTH
from naturalspeech2_jax.align import sphinx
from naturalspeech2_jax.data import card as card_lib
from naturalspeech2_jax.data import readers
from naturalspeech2_jax.data import utterance as utt_lib
from naturalspeech2_jax.data.card import (  # noqa: F401 (reason_class: public here since before)
    FINGERPRINT_FILE,
    SPHINX_MODEL,
    PrepareResult,
    dataset_card,
    finish_alignment_report,
    reason_class,
)
from naturalspeech2_jax.data.card import MIN_FRAMES as _MIN_FRAMES
from naturalspeech2_jax.data.card import atomic_write as _atomic_write
from naturalspeech2_jax.data.card import surviving_splits as _surviving_splits
from naturalspeech2_jax.data.card import write_card as _write_card  # tests patch it here
from naturalspeech2_jax.data.readers import discover_splits
from naturalspeech2_jax.data.readers import listing_problems as _listing_problems
from naturalspeech2_jax.data.utterance import (  # noqa: F401 (public here since before the split)
    FEATURE_DTYPES,
    FRAME_RATE,
    AlignmentTally,
    SplitTally,
    boundaries_to_durations,
    check_aligner_checkpoint,
    exact_durations,
    load_aligner,
    resolve_aligner,
    textgrid_durations,
)
from naturalspeech2_jax.text.g2p import SIL, phonemize_batch
from naturalspeech2_jax.text.vocab import PhonemeVocab, default_vocab

# Imported where used, not here: data.tfds_builder (tfds and grain take seconds to import, and
# every spawned feature worker imports this module), align.api and tasks.aligner (JAX and the
# training stack, for the built-in aligner only), matplotlib, and pocketsphinx (an optional
# extra).

log = logging.getLogger(__name__)

ALIGNERS = ("auto", "pocketsphinx", "builtin")
DURATION_SOURCES = ("auto", "aligner", "exact")
#: Bumped when preparing the same corpus with the same options gives different data; recorded
#: in ``prepared_from.json`` with the readers' version. 2: utterances with characters the text
#: front end cannot pronounce are rejected.
PREPARE_VERSION = 2
# Options that do not change the prepared data (how fast, how loud, where): not fingerprinted.
_UNRECORDED_OPTIONS = ("name", "num_workers", "progress", "overwrite", "runner", "beam_options")
RUNNERS = ("local", "beam")


@dataclasses.dataclass
class PrepareOptions:
    """Knobs of the preparation; defaults suit read speech."""

    layout: str | None = None
    name: str = "corpus"
    durations: str = "auto"  # auto | aligner | exact
    # auto: pocketsphinx's pretrained en-us model when installed (the eval extra), else the
    # built-in aligner trained on the corpus; see align/sphinx.py for why
    aligner: str = "auto"  # auto | pocketsphinx | builtin
    aligner_preset: str = "tiny"
    aligner_steps: int = 0  # 0: the preset's total_steps
    # A built-in aligner trained before (``train_aligner_on_corpus``): used instead of training
    # one on the corpus; the Beam runner needs one when the built-in aligner is used.
    aligner_checkpoint: str | None = None
    pitch_method: str = "harvest"  # harvest (accurate) | dio (fast)
    trim_silence: bool = False
    # After alignment, cut the leading/trailing <sil> to at most this many seconds (None: keep).
    # Read-speech corpora hold long edge silences (speechocean762: 43% of train frames are
    # pauses, mostly at the edges); a TTS model would spend its capacity on them.
    max_edge_silence: float | None = None
    min_seconds: float = 0.5
    max_seconds: float = 20.0
    num_workers: int | None = None
    progress: bool = True
    # Rebuild a dataset already prepared under this name (and its feature cache) instead of
    # reusing it or refusing to when it was built from other inputs.
    overwrite: bool = False
    # "local": worker processes and a feature cache on this machine; "beam": the same stages as
    # Apache Beam transforms (data/prepare_beam.py), run by ``beam_options`` (Beam's own flags,
    # e.g. ["--runner=DataflowRunner", "--project=...", ...]; default the DirectRunner).
    runner: str = "local"
    beam_options: tuple[str, ...] = ()
    # Audio without a transcript (folder and librispeech layouts) is transcribed by the bundled
    # Moonshine recogniser and kept when its confidence (mean token log-probability) is at
    # least transcribe_min_confidence; otherwise it is a listing problem, as before. -0.35 on
    # ../shared/data (every 4th utterance, benchmarks/transcription.py): native speech keeps
    # 97-98% (cathy: WER 0.035 kept, 0.040 all), non-native 70% (speechocean762 dev: WER 0.109
    # kept, 0.294 all).
    transcribe: bool = False
    transcribe_min_confidence: float = -0.35


# One utterance on its way through the stages: (split, utterance, tokens, ids). The durations
# stage adds n_frames for the aligners' jobs: (split, utterance, tokens, ids, n_frames).
_Item = tuple[str, Any, list[str], Any]
_Rejected = list[tuple[str, str, str]]  # (split, item, reason): the rows of rejected.tsv


# ------------------------------------------------------------------------------------ main
def prepare_corpus(
    corpus: str | os.PathLike | Sequence[str | os.PathLike],
    data_dir: str | os.PathLike,
    options: PrepareOptions | None = None,
    **overrides: Any,
) -> PrepareResult:
    """Prepare one or more corpora into ``data_dir/<name>/<version>`` (see module docstring)."""
    from naturalspeech2_jax.data.tfds_builder import VERSION

    opts = _checked_options(options, overrides)
    corpora = [os.fspath(corpus)] if isinstance(corpus, str | os.PathLike) else list(corpus)
    data_dir = epath.Path(data_dir)
    out_dir = data_dir / opts.name / VERSION
    work = data_dir / "_work" / opts.name
    fingerprint = _fingerprint(corpora, opts)
    if not opts.overwrite and (out_dir / "card.json").exists():
        return PrepareResult(out_dir, _reused_card(out_dir, fingerprint))
    _check_data_dir(data_dir)
    with _preparation_lock(data_dir, opts.name):
        if opts.overwrite:
            for old in (out_dir, work):
                if old.exists():
                    log.info("--overwrite: removing %s", old)
                    shutil.rmtree(os.fspath(old))
        elif (out_dir / "card.json").exists():  # another run finished it while we waited
            return PrepareResult(out_dir, _reused_card(out_dir, fingerprint))
        _remove_unfinished(data_dir / opts.name, out_dir)
        return _prepare(corpora, data_dir, work, opts, fingerprint)


def _prepare(
    corpora: list[str],
    data_dir: epath.Path,
    work: epath.Path,
    opts: PrepareOptions,
    fingerprint: dict[str, Any],
) -> PrepareResult:
    """The stages of :func:`prepare_corpus`, under its lock, into a name with no dataset yet."""
    from naturalspeech2_jax.data.tfds_builder import VERSION, write_dataset

    start_time = time.time()
    _fresh_work_dir(work, fingerprint)
    if opts.runner == "beam":
        return _beam_runner().prepare_with_beam(corpora, data_dir, work, opts, fingerprint)

    splits = discover_splits(corpora, opts.layout, untranscribed=opts.transcribe)
    listing_rejects = _listing_problems(splits)
    splits, untranscribed, transcription = _transcription_stage(splits, work, opts)
    vocab = default_vocab()
    items, bad_text = _encode_transcripts(splits, vocab)
    kept, bad_audio = _audio_features_stage(items, work, opts)
    feature_seconds = time.time() - start_time
    durations, source_counts, align_report = _durations(kept, work, opts)
    final, unaligned = _with_durations(kept, durations)
    rejected = listing_rejects + untranscribed + bad_text + bad_audio + unaligned
    crops = _edge_crops(final, durations, opts.max_edge_silence)

    split_names = _surviving_splits(splits, final, corpora, rejected, work)
    # From kept, not final: a speaker whose every utterance failed alignment keeps its id.
    speakers = sorted({u.speaker for _, u, _, _ in kept})
    speaker_ids = {s: i for i, s in enumerate(speakers)}
    out_dir = write_dataset(
        data_dir,
        opts.name,
        {s: _split_examples(s, final, work, durations, crops, speaker_ids) for s in split_names},
        description=f"Prepared from {', '.join(corpora)}",
    )
    vocab.save(out_dir / "vocab.json")
    _atomic_write(out_dir / "speakers.json", json.dumps(speakers, indent=1))

    lengths = {s: np.load(os.fspath(out_dir / f"frames_{s}.npy")) for s in split_names}
    card = dataset_card(
        opts,
        corpora=corpora,
        version=VERSION,
        vocab=vocab,
        tallies=split_tallies(final, durations, split_names),
        source_counts=source_counts,
        align_report=align_report,
        rejected=rejected,
        seconds={"features": feature_seconds, "total": time.time() - start_time},
        transcription=transcription,
    )
    if align_report.get("figure"):
        _atomic_write(out_dir / "alignment.png", (work / "alignment.png").read_bytes())
    # Last: card.json says the dataset is complete (here and in data/embedded.py), so everything
    # it and card.md name, and prepared_from.json, exist before it does.
    _write_card(out_dir, card, lengths, rejected, fingerprint)
    log.info("prepared %s: %s", out_dir, json.dumps(card["splits"]))
    return PrepareResult(out_dir, card)


def _beam_runner():
    """``data/prepare_beam.py``, or one sentence naming the extra that installs Apache Beam."""
    # Beam logs what its optional Google Cloud modules lack at INFO while it is imported.
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    try:
        from naturalspeech2_jax.data import prepare_beam
    except ImportError as err:
        if "apache_beam" not in str(err):
            raise
        raise ImportError(
            "runner='beam' needs Apache Beam, an optional extra: pip install -e '.[beam]'."
        ) from err
    return prepare_beam


def _checked_options(options: PrepareOptions | None, overrides: dict[str, Any]) -> PrepareOptions:
    """``options`` with ``overrides`` applied; a bad value fails here, before any work."""
    opts = dataclasses.replace(options or PrepareOptions(), **overrides)
    if opts.durations not in DURATION_SOURCES:
        raise ValueError(f"durations={opts.durations!r}; use auto, aligner or exact.")
    if opts.aligner not in ALIGNERS:
        raise ValueError(f"aligner={opts.aligner!r}; use one of {', '.join(ALIGNERS)}.")
    if opts.max_edge_silence is not None and not opts.max_edge_silence >= 0:
        raise ValueError(f"max_edge_silence must be >= 0 seconds, not {opts.max_edge_silence}.")
    if not (0 <= opts.min_seconds < math.inf):
        raise ValueError(f"min_seconds must be >= 0, not {opts.min_seconds}; e.g. 0.5.")
    if not opts.max_seconds > opts.min_seconds:
        raise ValueError(f"max_seconds ({opts.max_seconds}) must be more than min_seconds "
                         f"({opts.min_seconds}); e.g. 20.")  # fmt: skip
    if opts.num_workers is not None and opts.num_workers < 1:
        raise ValueError(f"num_workers must be >= 1 (or None: all cores), not {opts.num_workers}.")
    if opts.aligner_steps < 0:
        raise ValueError(f"aligner_steps must be >= 0 (0: the preset's), not {opts.aligner_steps}.")
    if opts.pitch_method not in ("harvest", "dio"):
        raise ValueError(f"pitch_method={opts.pitch_method!r}; use harvest or dio.")
    if not -math.inf < opts.transcribe_min_confidence <= 0:
        raise ValueError(
            f"transcribe_min_confidence is a mean log-probability, <= 0; got "
            f"{opts.transcribe_min_confidence} (e.g. -0.35)."
        )
    if opts.runner not in RUNNERS:
        raise ValueError(f"runner={opts.runner!r}; use local or beam.")
    if opts.runner == "beam":
        _beam_runner()  # a missing extra is said now, before any work
    if opts.aligner_checkpoint:
        checkpoint = os.path.abspath(opts.aligner_checkpoint)
        opts = dataclasses.replace(opts, aligner_checkpoint=checkpoint)
        check_aligner_checkpoint(opts.aligner_checkpoint)  # now, not after the features
    return opts


# ------------------------------------------------------------------------------------ reruns
def _fingerprint(corpora: Sequence[str], opts: PrepareOptions) -> dict[str, Any]:
    """What the dataset is made from: the corpus folders with the number, total size and a
    digest of the paths, sizes and modification times of their files, the options that change
    the data, and the readers' and this module's versions (``prepared_from.json``)."""
    options = {k: v for k, v in dataclasses.asdict(opts).items() if k not in _UNRECORDED_OPTIONS}
    return {
        "corpora": [os.path.abspath(os.fspath(c)) for c in corpora],
        "inputs": [_corpus_files(c) for c in corpora],
        "options": options,
        "reader_version": readers.READER_VERSION,
        "prepare_version": PREPARE_VERSION,
    }


def _corpus_files(corpus: str | os.PathLike) -> dict[str, Any]:
    """``{"files", "bytes", "digest"}`` of the files under ``corpus`` (hidden ones aside): a
    file added, removed, resized or rewritten changes the digest. Sizes and times only, no
    content, so that a corpus of 100k files is summed up in about a second. A manifest corpus
    is its ``manifest.tsv`` alone: the listing of a corpus too large to walk (millions of
    files, or audio on gs://), which is what a rerun compares."""
    root = os.path.abspath(os.fspath(corpus))
    entries, seen = [], set()
    manifest = os.path.join(root, readers.MANIFEST_FILE)
    walk = [(root, [], [readers.MANIFEST_FILE])] if os.path.isfile(manifest) else None
    for folder, subdirs, names in walk or os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a symlink loop
            subdirs[:] = []
            continue
        seen.add(real)
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in names:
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError:  # a dangling link: the readers report the missing file
                continue
            entries.append((os.path.relpath(path, root), st.st_size, st.st_mtime_ns))
    digest = hashlib.sha256()
    for rel, size, mtime in sorted(entries):
        digest.update(f"{rel}\0{size}\0{mtime}\n".encode(errors="surrogateescape"))
    return {
        "files": len(entries),
        "bytes": sum(e[1] for e in entries),
        "digest": digest.hexdigest()[:16],
    }


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``what: old -> new`` for each fingerprint entry (an option by its name) that differs. A
    fingerprint recorded before an entry existed (``inputs``) is not compared on it."""
    out = []
    for key in sorted(set(old) | set(new)):
        if key == "options":
            a, b = old.get(key, {}), new.get(key, {})
            out += [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
                    if a.get(k) != b.get(k)]  # fmt: skip
        elif key == "inputs":
            if key in old and old[key] != new.get(key):
                out += _changed_inputs(old.get("corpora", []), old[key], new.get(key) or [])
        elif old.get(key) != new.get(key):
            out.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return out


def _changed_inputs(corpora: list[str], old: list, new: list) -> list[str]:
    """``corpus C changed since (12 files, 3.4 MB -> ...)`` per corpus whose files differ."""

    def summary(x: dict) -> str:
        return f"{x.get('files', '?')} files, {x.get('bytes', 0) / 1e6:.1f} MB"

    out = []
    for i, (a, b) in enumerate(zip(old, new, strict=False)):
        if a != b:
            name = corpora[i] if i < len(corpora) else f"corpus {i + 1}"
            same = summary(a) == summary(b)
            out.append(f"files of {name} changed since ({summary(a)} -> {summary(b)}"
                       f"{'; a file was rewritten' if same else ''})")  # fmt: skip
    return out


def _read_json(path: epath.Path, what: str) -> Any:
    """``path``'s JSON; a ValueError naming the file and the fix when it does not parse."""
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(
            f"{path} ({what}) is damaged ({e}); give --overwrite to rebuild the dataset."
        ) from None


def _reused_card(out_dir: epath.Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The card of the dataset already prepared in ``out_dir`` when it was made from the same
    corpora and options; a ValueError naming what differs otherwise."""
    recorded = out_dir / FINGERPRINT_FILE
    card = _read_json(out_dir / "card.json", "the dataset card")
    if not recorded.exists():
        log.warning(
            "%s was prepared before datasets recorded what they were made from (no %s); "
            "reusing it as it is. Prepare with --overwrite to rebuild it with these options.",
            out_dir, FINGERPRINT_FILE,
        )  # fmt: skip
        return card
    old = _read_json(recorded, "what the dataset was prepared from")
    gone = [c for c in fingerprint["corpora"] if not os.path.isdir(c)]
    if gone and old.get("corpora") == fingerprint["corpora"]:
        # The corpus was deleted after preparing it: its files cannot be compared.
        old = {k: v for k, v in old.items() if k != "inputs"}
        log.warning("corpus %s no longer exists; reusing %s as prepared from it", gone[0], out_dir)
    diff = _differences(old, fingerprint)
    if diff:
        raise ValueError(
            f"{out_dir} was prepared from other inputs ({'; '.join(diff)}); give --overwrite "
            "to rebuild it, or another --name to keep both."
        )
    log.info("%s is already prepared from the same corpora and options; reusing it", out_dir)
    return card


def _check_data_dir(data_dir: epath.Path) -> None:
    """A ValueError (one sentence) when ``data_dir`` is not a folder that can be written."""
    if data_dir.exists() and not data_dir.is_dir():
        raise ValueError(f"--data_dir {data_dir} is a file, not a folder; give a folder path.")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".write_test_{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(
            f"--data_dir {data_dir} cannot be written ({e.strerror or e}); give a folder you can "
            "write to."
        ) from e


@contextlib.contextmanager
def _preparation_lock(data_dir: epath.Path, name: str):
    """One preparation of ``name`` at a time: an exclusive ``flock`` on
    ``<data_dir>/_work/.<name>.lock`` (released by the kernel when the process ends, also on
    SIGKILL). A second run waits for the first (and then reuses what it made)."""
    path = data_dir / "_work" / f".{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (nor a second preparation of a name, please)
        yield
        return
    with open(os.fspath(path), "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.info("another process is preparing %s (%s); waiting for it", name, path)
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _remove_unfinished(name_dir: epath.Path, out_dir: epath.Path) -> None:
    """What an interrupted run left under ``<data_dir>/<name>``: TFDS's ``incomplete.*``
    folders, and a version folder without ``card.json`` (TFDS would otherwise reuse records that
    may come from other inputs). Called under the preparation lock; one INFO line."""
    left = sorted(name_dir.glob("incomplete.*")) if name_dir.exists() else []
    if out_dir.exists() and not (out_dir / "card.json").exists():
        left.append(out_dir)
    if not left:
        return
    log.info("removing what an interrupted preparation left: %s", ", ".join(map(str, left)))
    for path in left:
        if path.is_dir():
            shutil.rmtree(os.fspath(path), ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _fresh_work_dir(work: epath.Path, fingerprint: dict[str, Any]) -> None:
    """Create ``work``; its feature cache is kept (an interrupted run resumes) only when it was
    made from the same inputs, else it is emptied first."""
    stamp = work / FINGERPRINT_FILE
    if work.exists():
        try:
            same = not _differences(json.loads(stamp.read_text()), fingerprint)
        except (OSError, ValueError):  # no stamp, or a damaged one
            same = False
        if not same:
            log.info("%s holds features made from other inputs; removing them", work)
            shutil.rmtree(os.fspath(work))
    work.mkdir(parents=True, exist_ok=True)
    _atomic_write(stamp, json.dumps(fingerprint, indent=1))


def _cache_path(work: epath.Path, split: str, utt_id: str) -> str:
    """The utterance's feature cache (audio, pitch, mel) written by ``_audio_features``."""
    return os.fspath(work / split / f"{utt_id}.npz")


# ------------------------------------------------------------------------------------ reading


# ------------------------------------------------------------------------------------ transcripts
def _transcription_stage(
    splits: list[tuple[str, Any]], work: epath.Path, opts: PrepareOptions
) -> tuple[list[tuple[str, Any]], _Rejected, dict[str, Any]]:
    """Transcribe the utterances listed without a transcript (``opts.transcribe``) with the
    bundled recogniser in worker processes: the listings with their text filled in, the ones
    rejected (unreadable, nothing recognised, below ``opts.transcribe_min_confidence``) and
    the card's report. Each transcript is cached under ``work`` (a rerun does not transcribe
    again)."""
    jobs = []
    for split, listing in splits:
        for u in listing:
            if u.extra.get(readers.UNTRANSCRIBED):
                (work / split).mkdir(parents=True, exist_ok=True)
                cache = os.fspath(work / split / f"{u.id}.transcript.json")
                jobs.append((u.id, os.fspath(u.audio_path), u.start, u.end, cache,
                             opts.transcribe_min_confidence))  # fmt: skip
    if not jobs:
        return splits, [], {}
    workers = max(1, min(opts.num_workers or os.cpu_count() or 1, len(jobs)))
    results = dict(
        _map_in_workers(
            _transcribe_job, jobs, workers, 4, desc="transcription", progress=opts.progress
        )  # fmt: skip
    )
    out, rejected = [], []
    for split, listing in splits:
        utts = []
        for u in listing:
            got = results.get(u.id) if u.extra.get(readers.UNTRANSCRIBED) else None
            if isinstance(got, str):
                rejected.append((split, u.id, got))
            else:
                utts.append(u if got is None else utt_lib.transcribed(u, *got))
        out.append((split, dataclasses.replace(listing, utterances=utts)))
    return out, rejected, card_lib.transcription_report(len(jobs), len(jobs) - len(rejected), opts)


def _transcribe_job(job: tuple) -> tuple[str, tuple[str, float] | str]:
    """Worker: (id, audio, start, end, cache, min_confidence) -> (id, (text, confidence) or the
    reason it is rejected); the result is cached in ``cache`` (JSON)."""
    utt_id, path, start, end, cache, min_confidence = job
    cached = _cached_transcript(cache, min_confidence)
    if cached is not None:
        return utt_id, cached
    result = utt_lib.transcribe(utt_lib.transcriber(), path, start, end, min_confidence)
    tmp = f"{cache}{_PARTIAL}{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"min_confidence": min_confidence, "result": result}, f)
    if _parent_gone():
        os.unlink(tmp)
        os._exit(1)
    os.replace(tmp, cache)
    return utt_id, result


def _cached_transcript(cache: str, min_confidence: float) -> tuple[str, float] | str | None:
    """A transcription cached for the same threshold, or None (none, damaged, another one)."""
    try:
        with open(cache) as f:
            got = json.load(f)
        if got["min_confidence"] != min_confidence:
            return None
        result = got["result"]
        return tuple(result) if isinstance(result, list) else str(result)
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ------------------------------------------------------------------------------------ text
def _encode_transcripts(
    splits: list[tuple[str, Any]], vocab: PhonemeVocab
) -> tuple[list[_Item], _Rejected]:
    """Every transcript phonemized in one batched G2P call (one espeak-ng start, not one per
    utterance) and encoded with ``vocab``; the ones that cannot be are rejected."""
    utts = [(split, u) for split, listing in splits for u in listing]
    phon = phonemize_batch([u.text for _, u in utts], on_error="none")
    items, rejected = [], []
    for (split, u), tokens in zip(utts, phon, strict=True):
        ids = utt_lib.encode_text(u.text, tokens, vocab)
        if isinstance(ids, str):
            rejected.append((split, u.id, ids))
        else:
            items.append((split, u, tokens, ids))
    return items, rejected


# ------------------------------------------------------------------------------------ audio
def _audio_features_stage(
    items: list[_Item], work: epath.Path, opts: PrepareOptions
) -> tuple[list[_Item], _Rejected]:
    """Audio features of every item into the cache under ``work``, in parallel; the items whose
    audio fails a check (``_audio_features``) are rejected."""
    worker_opts = utt_lib.feature_options(
        opts.trim_silence, opts.min_seconds, opts.max_seconds, opts.pitch_method
    )
    jobs = []
    for split, u, _, _ in items:
        (work / split).mkdir(parents=True, exist_ok=True)
        cache = _cache_path(work, split, u.id)
        jobs.append((u.id, os.fspath(u.audio_path), u.start, u.end, cache, worker_opts))
    _remove_partial_caches(work)
    workers = opts.num_workers or os.cpu_count() or 1
    results = _map_in_workers(
        _audio_features, jobs, workers, 4, desc="audio features", progress=opts.progress
    )
    damaged = [note for _, _, note in results if note]
    if damaged:
        log.warning("%d feature cache(s) in %s were damaged and have been recomputed (first: %s)",
                    len(damaged), work, damaged[0])  # fmt: skip
    failed = {utt_id: reason for utt_id, reason, _ in results if reason}
    kept, rejected = [], []
    for split, u, tokens, ids in items:
        if u.id in failed:
            rejected.append((split, u.id, failed[u.id]))
        else:
            kept.append((split, u, tokens, ids))
    return kept, rejected


def _remove_partial_caches(work: epath.Path) -> None:
    """The temporary files of caches a killed run was writing (never trusted: only a finished
    file is renamed to its cache name)."""
    for tmp in work.glob(f"*/*{_PARTIAL}*"):
        tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ workers
# Feature and pocketsphinx workers are spawned processes. When the preparation is killed (even
# with SIGKILL) they must end at once rather than finish their jobs and write caches: on Linux
# the kernel kills them with their parent (PR_SET_PDEATHSIG); elsewhere, and as a second line,
# a watchdog thread ends a worker whose parent is gone, and a worker checks before each cache
# it makes final.
_PARENT_PID: int | None = None
_WATCH_SECONDS = 0.2


def _parent_gone() -> bool:
    """Whether this is a worker whose preparation process has ended (it was re-parented)."""
    return _PARENT_PID is not None and os.getppid() != _PARENT_PID


def _worker_init(parent_pid: int) -> None:
    """Pool initializer: tie this worker's life to ``parent_pid``."""
    global _PARENT_PID
    _PARENT_PID = parent_pid
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):  # no libc, a sandbox refusing prctl: the watchdog
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if _parent_gone():  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while not _parent_gone():
            time.sleep(_WATCH_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _map_in_workers(
    fn: Callable, jobs: list, workers: int, chunksize: int, *, desc: str, progress: bool
) -> list:
    """``[fn(job) for job in jobs]`` in completion order, in ``workers`` processes (spawned:
    never fork a process that runs JAX; they end with this one, see ``_worker_init``) or in this
    one when ``workers`` is 1, with a progress bar."""
    bar = tqdm(total=len(jobs), desc=desc, unit="utt", disable=not progress)
    results = []
    if workers > 1:
        pool = multiprocessing.get_context("spawn").Pool(
            workers, initializer=_worker_init, initargs=(os.getpid(),)
        )
        with pool:
            for result in pool.imap_unordered(fn, jobs, chunksize=chunksize):
                results.append(result)
                bar.update(1)
    else:
        for job in jobs:
            results.append(fn(job))
            bar.update(1)
    bar.close()
    return results


# ------------------------------------------------------------------------------------ caches
_PARTIAL = ".partial"  # in the name of a cache being written
_CACHE_KEYS = FEATURE_DTYPES


def cache_problem(cache: str) -> str | None:
    """Why the feature cache ``cache`` cannot be trusted (unreadable, truncated, a failed
    checksum, a missing or inconsistent array), or None when it is sound. Reads it whole: the
    zip checksums of every array are verified."""
    try:
        with np.load(cache) as f:
            arrays = {k: f[k] for k in _CACHE_KEYS}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        return f"{type(e).__name__}: {e}"
    for key, dtype in _CACHE_KEYS.items():
        if arrays[key].dtype != dtype:
            return f"{key} is {arrays[key].dtype}, not {np.dtype(dtype)}"
    n = len(arrays["log_f0"])
    sizes = (len(arrays["audio"]), len(arrays["voiced"]), len(arrays["mel"]))
    if n == 0 or sizes != (n * HOP_LENGTH, n, n):
        return f"array lengths {sizes} do not fit {n} frames"
    if not np.all(np.isfinite(arrays["log_f0"])):
        return "log_f0 has NaN or infinite values"
    return None


def _write_cache(cache: str, **arrays: np.ndarray) -> None:
    """``cache`` written whole or not at all: a temporary file renamed to it, unless the
    preparation this worker served is gone (then nothing is written and the worker ends)."""
    tmp = f"{cache}{_PARTIAL}{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    if _parent_gone():
        os.unlink(tmp)
        os._exit(1)
    os.replace(tmp, cache)


def _audio_features(job: tuple) -> tuple[str, str | None, str | None]:
    """Worker: one utterance -> cached npz (audio int16, log_f0, voiced, mel). Returns (id,
    reason the utterance is rejected or None, why its cache was damaged and recomputed or
    None)."""
    utt_id, path, start, end, cache, opts = job
    damaged = None
    if os.path.exists(cache):
        damaged = cache_problem(cache)
        if damaged is None:
            return utt_id, None, None
        damaged = f"{cache}: {damaged}"
        os.unlink(cache)
    return utt_id, _compute_features(path, start, end, cache, opts), damaged


def _compute_features(path: str, start, end, cache: str, opts: dict) -> str | None:
    """The features of one utterance into ``cache``; the reason it is rejected, or None."""
    features = utt_lib.audio_features(path, start, end, opts)
    if isinstance(features, str):
        return features
    _write_cache(cache, **features)
    return None


# ------------------------------------------------------------------------------------ durations
def _durations(kept, work: epath.Path, opts: PrepareOptions):
    """Per-utterance durations (or a rejection reason string), source counts, aligner report."""
    durations: dict[str, Any] = {}
    sources: Counter = Counter()
    need_aligner = []
    exact_ref: dict[str, np.ndarray] = {}
    for split, u, tokens, ids in kept:
        with np.load(_cache_path(work, split, u.id)) as f:
            n_frames = len(f["log_f0"])
        source, d, exact = utt_lib.corpus_durations(u, tokens, n_frames, opts.durations)
        if exact is not None:
            exact_ref[u.id] = exact
        if source != utt_lib.NEEDS_ALIGNER:
            durations[u.id] = d
            if source != "rejected":
                sources[source] += 1
            continue
        need_aligner.append((split, u, tokens, ids, n_frames))
    report: dict[str, Any] = {}
    if need_aligner:
        kind = resolve_aligner(opts.aligner)
        run = _run_sphinx if kind == "pocketsphinx" else _run_aligner
        report = run(need_aligner, work, opts, durations, exact_ref)
        sources["pocketsphinx" if kind == "pocketsphinx" else "built-in aligner"] += sum(
            1 for _, u, *_ in need_aligner if not isinstance(durations.get(u.id), str)
        )
    return durations, sources, report


def _with_durations(kept: list[_Item], durations: dict) -> tuple[list[_Item], _Rejected]:
    """The items that got durations, and the others rejected with the reason they got instead."""
    final, rejected = [], []
    for split, u, tokens, ids in kept:
        if isinstance(durations.get(u.id), str):
            rejected.append((split, u.id, durations[u.id]))
        else:
            final.append((split, u, tokens, ids))
    return final, rejected


def _edge_crops(final, durations: dict, max_seconds: float | None) -> dict[str, tuple[int, int]]:
    """Frames to cut from the start and end of each utterance (``utterance.edge_crop``);
    ``durations`` is updated in place to match."""
    keep = utt_lib.keep_frames(max_seconds)
    if keep is None:
        return {}
    crops = {}
    for _, u, tokens, _ in final:
        d, crop = utt_lib.edge_crop(tokens, durations[u.id], keep)
        if crop != (0, 0):
            durations[u.id] = d
            crops[u.id] = crop
    return crops


# ------------------------------------------------------------------------------------ writing


def _split_examples(
    split_name: str,
    final: list[_Item],
    work: epath.Path,
    durations: dict,
    crops: dict[str, tuple[int, int]],
    speaker_ids: dict[str, int],
) -> Callable[[], Any]:
    """The split's example generator for ``write_dataset``: features from the cache, the edge
    silence crops applied to audio, pitch and (already) durations alike."""

    def gen():
        for split, u, _, ids in final:
            if split != split_name:
                continue
            with np.load(_cache_path(work, split, u.id)) as f:
                crop = crops.get(u.id, (0, 0))
                yield utt_lib.example(u, ids, f, durations[u.id], crop, speaker_ids[u.speaker])

    return gen


# ------------------------------------------------------------------------------------ card
def split_tallies(final: list[_Item], durations: dict, splits: list[str]) -> dict[str, SplitTally]:
    """The card's figures of each split in ``splits``, added up over its examples."""
    tallies = {s: SplitTally() for s in splits}
    for split, u, tokens, _ in final:
        tallies[split].add(u.speaker, tokens, durations[u.id])
    return tallies


# ------------------------------------------------------------------------------------ aligners


def _silence_id(jobs) -> int:
    """The vocabulary id of ``<sil>`` (every utterance starts with one)."""
    for _, _, tokens, ids, _ in jobs:
        for t, i in zip(tokens, ids, strict=True):
            if t == SIL:
                return int(i)
    raise ValueError(f"no {SIL} token in any transcript; the G2P front-end must emit it.")


def _cached_mel(work: epath.Path, split: str, utt_id: str) -> np.ndarray:
    with np.load(_cache_path(work, split, utt_id)) as f:
        return f["mel"].astype(np.float32)


def _aligner_examples(jobs, work: epath.Path, sil: int) -> tuple[list[dict], list[np.ndarray]]:
    """The built-in aligner's examples (mel, token classes: ``utterance.aligner_classes``) and
    per-token minimum frames."""
    examples, min_frames = [], []
    for split, u, tokens, ids, _ in jobs:
        acoustic, minimum = utt_lib.aligner_classes(tokens, ids, sil)
        examples.append({"mel": _cached_mel(work, split, u.id), "phonemes": acoustic})
        min_frames.append(minimum)
    return examples, min_frames


def train_aligner(examples: list[dict], aligner_dir: epath.Path, opts: PrepareOptions, sil: int):
    """The built-in aligner (``configs/aligner.py``, ``opts.aligner_preset``) trained on these
    examples, with the silence class optional, into ``aligner_dir``."""
    from naturalspeech2_jax.tasks import aligner as aligner_task

    overrides: dict[str, Any] = {}
    if opts.aligner_steps > 0:
        overrides["total_steps"] = int(opts.aligner_steps)
    overrides["data__optional_ids"] = (sil,)
    aligner_task.train_aligner(
        examples, os.fspath(aligner_dir), preset=opts.aligner_preset, **overrides
    )


def train_aligner_on_corpus(
    corpora: str | os.PathLike | Sequence[str | os.PathLike],
    aligner_dir: str | os.PathLike,
    *,
    sample: int = 2000,
    **overrides: Any,
) -> dict[str, Any]:
    """Train the built-in aligner on ``sample`` utterances spread over the corpora, into
    ``aligner_dir``: the job that comes before a Beam preparation that needs the aligner
    (``aligner_checkpoint=aligner_dir``), since training is not per-utterance work. The
    sample's features are computed (and cached, so that a killed run resumes) by the local
    runner's stages under ``aligner_dir/_features``, and the training resumes from its last
    checkpoint when run again. Returns a short report."""
    opts = _checked_options(None, overrides)
    if sample < 1:
        raise ValueError(f"sample must be >= 1 utterances, not {sample}; e.g. 2000.")
    corpora = [os.fspath(corpora)] if isinstance(corpora, str | os.PathLike) else list(corpora)
    aligner_dir = epath.Path(os.path.abspath(os.fspath(aligner_dir)))
    start = time.time()
    splits = discover_splits(corpora, opts.layout)
    items, _ = _encode_transcripts(splits, default_vocab())
    if not items:
        raise ValueError(f"no transcript of {', '.join(corpora)} could be phonemized.")
    # spread over the listing (every speaker and split), not its first utterances
    picks = np.unique(np.linspace(0, len(items) - 1, min(sample, len(items))).round().astype(int))
    chosen = [items[i] for i in picks]
    features = aligner_dir / "_features"
    kept, _ = _audio_features_stage(chosen, features, opts)
    jobs = []
    for split, u, tokens, ids in kept:
        with np.load(_cache_path(features, split, u.id)) as f:
            jobs.append((split, u, tokens, ids, len(f["log_f0"])))
    if not jobs:
        raise ValueError(f"none of the {len(chosen)} sampled utterances has usable audio.")
    sil = _silence_id(jobs)
    examples, _ = _aligner_examples(jobs, features, sil)
    train_aligner(examples, aligner_dir, opts, sil)
    return {
        "aligner_checkpoint": os.fspath(aligner_dir),
        "utterances": len(examples),
        "seconds": round(time.time() - start, 1),
    }


def _run_aligner(jobs, work: epath.Path, opts: PrepareOptions, durations: dict, exact_ref: dict):
    """Align each utterance with the built-in aligner (``opts.aligner_checkpoint``, else one
    trained here on these utterances); score against exact timings.

    ``<sil>``, ``<wb>`` and punctuation may take zero frames (a word boundary or comma without a
    pause); every phoneme takes at least one. Writes ``alignment.png`` (mel, aligner boundaries
    and, where known, the exact ones) to ``work``.
    """
    sil = _silence_id(jobs)
    examples, min_frames = _aligner_examples(jobs, work, sil)
    start = time.time()
    if opts.aligner_checkpoint:
        aligner_dir = opts.aligner_checkpoint
    else:
        aligner_dir = work / "aligner"
        train_aligner(examples, aligner_dir, opts, sil)
    aligner = load_aligner(aligner_dir)
    train_seconds = time.time() - start
    results = aligner.align_batch(
        [e["mel"] for e in examples],
        [e["phonemes"] for e in examples],
        min_frames=min_frames,
        on_error="return",
    )
    tally = AlignmentTally()
    for (split, u, tokens, _, n_frames), res in zip(jobs, results, strict=True):
        d = utt_lib.checked_alignment(res, n_frames)
        durations[u.id] = d
        if isinstance(d, str):
            continue
        mel = functools.partial(_cached_mel, work, split, u.id)
        tally.add(u.id, split, tokens, d, exact_ref.get(u.id), res.confidence, mel)
    report = {
        "utterances": len(jobs),
        "train_seconds": round(train_seconds, 1),
        "align_seconds": round(time.time() - start - train_seconds, 1),
        "min_frames": _MIN_FRAMES,
        # mean per-token log-prob of the Viterbi path over the utterance's tokens: about
        # -log(tokens) (-3.5 for 35) when the emissions are no better than uniform
        "confidence_by_split": tally.means(),
    }
    return finish_alignment_report(report, tally, work, "built-in aligner")


_SPHINX = None  # one decoder per worker process


def _sphinx_job(job: tuple) -> tuple[str, Any, dict | None]:
    """Worker: (id, cache npz, text, tokens, n_frames) -> (id, durations | reason, stats)."""
    global _SPHINX
    utt_id, cache, text, tokens, n_frames = job
    if _SPHINX is None:
        _SPHINX = sphinx.SphinxAligner()
    with np.load(cache) as f:
        audio = f["audio"]
    d, stats = utt_lib.sphinx_durations(_SPHINX, audio, text, tokens, n_frames)
    return utt_id, d, stats


def _run_sphinx(jobs, work: epath.Path, opts: PrepareOptions, durations: dict, exact_ref: dict):
    """Align with pocketsphinx in worker processes (``align/sphinx.py``); the report has the
    share of pocketsphinx's phones that equal our espeak phonemes' ARPAbet units, per split
    (low means the transcript and the audio disagree, or the G2P front-ends do), and the
    boundary error against exact timings where the corpus has them."""
    start = time.time()
    by_id = {u.id: (split, tokens) for split, u, tokens, _, _ in jobs}
    work_items = [
        (u.id, _cache_path(work, split, u.id), u.text, list(tokens), int(n))
        for split, u, tokens, _, n in jobs
    ]
    workers = max(1, min(opts.num_workers or os.cpu_count() or 1, len(work_items)))
    results = _map_in_workers(
        _sphinx_job, work_items, workers, 8, desc="pocketsphinx", progress=opts.progress
    )
    tally = AlignmentTally()
    for utt_id, d, stats in sorted(results, key=lambda r: r[0]):
        durations[utt_id] = d
        if isinstance(d, str):
            continue
        split, tokens = by_id[utt_id]
        mel = functools.partial(_cached_mel, work, split, utt_id)
        tally.add(utt_id, split, tokens, d, exact_ref.get(utt_id), stats["exact_match_share"], mel)
    report: dict[str, Any] = {
        "model": SPHINX_MODEL,
        "utterances": len(jobs),
        "align_seconds": round(time.time() - start, 1),
        "min_frames": _MIN_FRAMES,
        "phone_match_by_split": tally.means(),
    }
    return finish_alignment_report(report, tally, work, "pocketsphinx")
