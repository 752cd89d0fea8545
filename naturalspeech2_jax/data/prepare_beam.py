"""Data preparation as an Apache Beam pipeline: ``prepare_corpus(..., runner="beam")``.

The stages of ``data/prepare.py`` with the same per-utterance code (``data/utterance.py``), as
Beam transforms, so that a corpus too large for one machine is prepared by a Beam runner
(DirectRunner with several worker processes here; Dataflow, Flink or Spark on a cluster):

1. **List** the utterances: a corpus folder of any layout is listed by the driver
   (``data/readers.py``); a ``manifest.tsv`` corpus (``readers.read_manifest``) is streamed by
   the workers line by line (``ReadFromText``), so the driver never holds the listing.
2. **Text** in batches (one espeak-ng call per batch; G2P is per clause, so the batch does not
   change the tokens) with the fixed phoneme vocabulary: unknown symbols are rejected.
3. **Audio features** per utterance (load, resample, loudness, length limits, pitch, log-mel).
4. **Durations**: exact timings, TextGrids, pocketsphinx (one decoder per worker), or a built-in
   aligner trained BEFORE the run (``--train_aligner``; its checkpoint is loaded once per
   worker): training it is not per-utterance work.
5. **Examples**: the edge-silence crop, the speaker index (a side input: the sorted speakers of
   every utterance whose audio was kept, as the local runner numbers them), the frame invariant
   check; TFDS writes the ArrayRecord shards (its Beam writer: records ordered by the hash of
   their ids, as the local writer orders them).
6. **Card**: per-split figures, duration statistics, aligner scores and duration sources are
   Beam combiners (``utterance.SplitTally``, ``AlignmentTally``); rejected utterances (every
   stage's, with the reason) and the frame count of each example are written by the workers
   under ``<data_dir>/_work/<name>/beam`` and read back by the driver, which writes
   ``rejected.tsv``, ``frames_<split>.npy`` (in record order), the card and ``card.json`` last.

What does not change with the runner: the options' checks, the lock, the fingerprint (a rerun
with the same inputs reuses the dataset, other inputs are refused naming what differs), the
removal of what a killed run left. What does: the local runner's per-utterance feature cache is
not used (a failed Beam run is rerun whole; the runner retries failed work items itself), and a
run that fails leaves no dataset (TFDS writes into ``incomplete.*`` and renames at the end).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from etils import epath

from naturalspeech2_jax.align import sphinx
from naturalspeech2_jax.data import card as card_lib
from naturalspeech2_jax.data import readers
from naturalspeech2_jax.data import utterance as utt_lib
from naturalspeech2_jax.data.pipeline import check_example
from naturalspeech2_jax.data.tfds_builder import VERSION, write_dataset_with_beam
from naturalspeech2_jax.text.g2p import SIL, phonemize_batch
from naturalspeech2_jax.text.vocab import default_vocab

# Imported for runner="beam" only (prepare.py turns a missing Beam into one sentence naming the
# extra): Apache Beam is not in the core install.

log = logging.getLogger(__name__)

TEXT_BATCH = 256  # utterances per G2P call
ALIGN_BATCH = 16  # utterances per built-in aligner call (its own batch size)


# ------------------------------------------------------------------------------------ stages
# Each stage is a DoFn whose main output goes on and whose "rejected" output is (split, item,
# reason): the rows of rejected.tsv.
REJECTED = "rejected"
TRANSCRIBED = "transcribed"  # a count of the utterances whose recognised transcript was kept


class Text(beam.DoFn):
    """A batch of (split, utterance) -> (split, utterance, tokens, ids)."""

    def setup(self):
        self.vocab = default_vocab()

    def process(self, batch):
        tokens = phonemize_batch([u.text for _, u in batch], on_error="none")
        for (split, u), toks in zip(batch, tokens, strict=True):
            ids = utt_lib.encode_text(u.text, toks, self.vocab)
            if isinstance(ids, str):
                yield beam.pvalue.TaggedOutput(REJECTED, (split, u.id, ids))
            else:
                yield split, u, toks, ids


class Transcribe(beam.DoFn):
    """(split, u) listed without a transcript -> (split, u with the recognised text), or its
    rejection; utterances with a transcript pass through (one recogniser per worker)."""

    def __init__(self, min_confidence: float):
        self.min_confidence = min_confidence

    def process(self, item):
        split, u = item
        if not u.extra.get(readers.UNTRANSCRIBED):
            yield item
            return
        asr = utt_lib.transcriber()
        got = utt_lib.transcribe(asr, os.fspath(u.audio_path), u.start, u.end, self.min_confidence)
        if isinstance(got, str):
            yield beam.pvalue.TaggedOutput(REJECTED, (split, u.id, got))
        else:
            yield beam.pvalue.TaggedOutput(TRANSCRIBED, 1)
            yield split, utt_lib.transcribed(u, *got)


class Audio(beam.DoFn):
    """(split, u, tokens, ids) -> (split, u, tokens, ids, features)."""

    def __init__(self, feature_options: dict[str, Any]):
        self.opts = feature_options

    def process(self, item):
        split, u, tokens, ids = item
        features = utt_lib.audio_features(os.fspath(u.audio_path), u.start, u.end, self.opts)
        if isinstance(features, str):
            yield beam.pvalue.TaggedOutput(REJECTED, (split, u.id, features))
        else:
            yield split, u, tokens, ids, features


class CorpusDurations(beam.DoFn):
    """Durations the corpus gives; the utterances that need an aligner go to "aligner"."""

    def __init__(self, mode: str):
        self.mode = mode

    def process(self, item):
        split, u, tokens, ids, features = item
        n_frames = len(features["log_f0"])
        source, d, exact = utt_lib.corpus_durations(u, tokens, n_frames, self.mode)
        if source == "rejected":
            yield beam.pvalue.TaggedOutput(REJECTED, (split, u.id, d))
        elif source == utt_lib.NEEDS_ALIGNER:
            yield beam.pvalue.TaggedOutput(utt_lib.NEEDS_ALIGNER, (*item, exact))
        else:
            yield (*item, d, source, exact, None)


def _aligned(item: tuple, d, source: str, exact, score):
    """An aligner's result for ``item`` (split, u, tokens, ids, features): the item with its
    durations, source, exact timings and score, or its rejection when ``d`` is a reason."""
    if isinstance(d, str):
        return beam.pvalue.TaggedOutput(REJECTED, (item[0], item[1].id, d))
    return (*item, d, source, exact, score)


class Sphinx(beam.DoFn):
    """pocketsphinx durations (one decoder per worker)."""

    def setup(self):
        self.aligner = sphinx.SphinxAligner()

    def process(self, item):
        split, u, tokens, ids, features, exact = item
        n = len(features["log_f0"])
        d, stats = utt_lib.sphinx_durations(self.aligner, features["audio"], u.text, tokens, n)
        score = None if stats is None else stats["exact_match_share"]
        yield _aligned((split, u, tokens, ids, features), d, "pocketsphinx", exact, score)


class BuiltinAligner(beam.DoFn):
    """Built-in aligner durations over a batch (the checkpoint loaded once per worker)."""

    def __init__(self, checkpoint: str):
        self.checkpoint = checkpoint

    def setup(self):
        self.aligner = utt_lib.load_aligner(self.checkpoint)

    def process(self, batch):
        mels, classes, minimum = [], [], []
        for _, _, tokens, ids, features, _ in batch:
            sil = next(int(i) for t, i in zip(tokens, ids, strict=True) if t == SIL)
            acoustic, mf = utt_lib.aligner_classes(tokens, ids, sil)
            mels.append(np.asarray(features["mel"], np.float32))
            classes.append(acoustic)
            minimum.append(mf)
        results = self.aligner.align_batch(mels, classes, min_frames=minimum, on_error="return")
        for (split, u, tokens, ids, features, exact), res in zip(batch, results, strict=True):
            d = utt_lib.checked_alignment(res, len(features["log_f0"]))
            score = None if isinstance(d, str) else float(res.confidence)
            yield _aligned((split, u, tokens, ids, features), d, "built-in aligner", exact, score)


class SplitTallies(beam.CombineFn):
    """{split: SplitTally} over (split, speaker, tokens, durations)."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, row):
        split, speaker, tokens, d = row
        acc.setdefault(split, utt_lib.SplitTally()).add(speaker, tokens, d)
        return acc

    def merge_accumulators(self, accs):
        out: dict[str, utt_lib.SplitTally] = {}
        for acc in accs:
            for split, tally in acc.items():
                out.setdefault(split, utt_lib.SplitTally()).merge(tally)
        return out

    def extract_output(self, acc):
        return acc


class Alignment(beam.CombineFn):
    """AlignmentTally over (id, split, tokens, durations, exact, score, mel)."""

    def create_accumulator(self):
        return utt_lib.AlignmentTally()

    def add_input(self, acc, row):
        acc.add(*row)
        return acc

    def merge_accumulators(self, accs):
        out = utt_lib.AlignmentTally()
        for acc in accs:
            out.merge(acc)
        return out

    def extract_output(self, acc):
        return acc


# ------------------------------------------------------------------------------------ listing
def _listed(pipeline, splits: list[tuple[str, Any]], manifests: list[tuple[str, str]]):
    """PCollection of (split, Utterance): the driver's listings, and the manifests read by the
    workers (with their unparsable lines as rejects)."""
    parts, rejects = [], []
    if splits:
        items = [(name, u) for name, listing in splits for u in listing]
        parts.append(pipeline | "ListedCorpora" >> beam.Create(items, reshuffle=True))
    for k, (split, path) in enumerate(manifests):
        root = os.path.dirname(path)
        lines = pipeline | f"ReadManifest{k}" >> beam.io.ReadFromText(path, skip_header_lines=1)
        parsed = (
            lines
            | f"NonBlank{k}" >> beam.Filter(str.strip)  # blank lines are skipped, as locally
            | f"ParseManifest{k}" >> beam.Map(lambda line, r=root: readers.manifest_line(r, line))
        )
        ok = parsed | f"Manifest{k}Ok" >> beam.Filter(lambda x: isinstance(x, readers.Utterance))
        bad = parsed | f"Manifest{k}Bad" >> beam.Filter(lambda x: isinstance(x, tuple))
        rejects.append(bad | f"Manifest{k}Rejects" >> beam.Map(lambda x, s=split: (s, *x)))
        # An id on several lines: each is rejected (no line numbers in a sharded read to say
        # which came first).
        unique = (
            ok
            | f"Manifest{k}ById" >> beam.Map(lambda u: (u.id, u))
            | f"Manifest{k}Group" >> beam.GroupByKey()
            | f"Manifest{k}Unique"
            >> beam.ParDo(UniqueId(), split).with_outputs(REJECTED, main="ok")
        )
        rejects.append(unique[REJECTED])
        parts.append(unique.ok)
    listed = parts[0] if len(parts) == 1 else parts | "AllListed" >> beam.Flatten()
    return listed, rejects


class UniqueId(beam.DoFn):
    """(id, utterances) -> the utterance when its id is on one manifest line; else each line is
    rejected (as ``readers.read_manifest`` rejects them)."""

    def process(self, kv, split):
        _, utts = kv
        utts = list(utts)
        if len(utts) == 1:
            yield split, utts[0]
            return
        reason = readers.duplicate_in_manifest(len(utts))
        for u in utts:
            yield beam.pvalue.TaggedOutput(REJECTED, (split, u.id, reason))


# ------------------------------------------------------------------------------------ pipeline
@dataclasses.dataclass
class _Outputs:
    """Where the workers leave what the driver reads after the run."""

    root: epath.Path

    @property
    def summary(self) -> epath.Path:
        return self.root / "summary.pkl"

    def rejected_prefix(self) -> str:
        return os.fspath(self.root / "rejected")

    def frames_prefix(self, split: str) -> str:
        return os.fspath(self.root / f"frames_{split}")

    def clear(self) -> None:
        if self.root.exists():
            for old in self.root.iterdir():
                old.unlink()
        self.root.mkdir(parents=True, exist_ok=True)

    def read_lines(self, prefix: str) -> Iterable[str]:
        for path in sorted(epath.Path(os.path.dirname(prefix)).glob(
            os.path.basename(prefix) + "-*"
        )):  # fmt: skip
            yield from (line for line in path.read_text().splitlines() if line)


def build_pipeline(
    pipeline,
    *,
    splits: list[tuple[str, Any]],
    manifests: list[tuple[str, str]],
    opts: Any,
    aligner_kind: str,
    outputs: _Outputs,
    split_names: Sequence[str],
) -> dict[str, Any]:
    """The stages on ``pipeline``: returns {split: PCollection of (id, example)} for TFDS, and
    writes the rejects, frame counts and card summary under ``outputs.root``."""

    feature_opts = utt_lib.feature_options(
        opts.trim_silence, opts.min_seconds, opts.max_seconds, opts.pitch_method
    )

    listed, rejects = _listed(pipeline, splits, manifests)
    if opts.transcribe:
        heard = listed | "Transcribe" >> beam.ParDo(
            Transcribe(opts.transcribe_min_confidence)
        ).with_outputs(REJECTED, TRANSCRIBED, main="ok")
        rejects.append(heard[REJECTED])
        listed = heard.ok
        transcribed = heard[TRANSCRIBED] | "CountTranscribed" >> beam.combiners.Count.Globally()
    else:
        transcribed = pipeline | "NoneTranscribed" >> beam.Create([0])
    text = (
        listed
        | "TextBatches" >> beam.BatchElements(min_batch_size=1, max_batch_size=TEXT_BATCH)
        | "Text" >> beam.ParDo(Text()).with_outputs(REJECTED, main="ok")
    )
    audio = text.ok | "Audio" >> beam.ParDo(Audio(feature_opts)).with_outputs(REJECTED, main="ok")
    corpus = audio.ok | "CorpusDurations" >> beam.ParDo(
        CorpusDurations(opts.durations)
    ).with_outputs(REJECTED, utt_lib.NEEDS_ALIGNER, main="ok")
    need = corpus[utt_lib.NEEDS_ALIGNER]
    if aligner_kind == "pocketsphinx":
        aligned = need | "Pocketsphinx" >> beam.ParDo(Sphinx()).with_outputs(REJECTED, main="ok")
    else:
        aligned = (
            need
            | "AlignBatches" >> beam.BatchElements(min_batch_size=1, max_batch_size=ALIGN_BATCH)
            | "BuiltinAligner"
            >> beam.ParDo(BuiltinAligner(opts.aligner_checkpoint or "")).with_outputs(
                REJECTED, main="ok"
            )
        )
    rejects += [text[REJECTED], audio[REJECTED], corpus[REJECTED], aligned[REJECTED]]
    timed = (corpus.ok, aligned.ok) | "WithDurations" >> beam.Flatten()

    # Speaker ids: the sorted speakers of every utterance whose audio was kept (before the
    # durations stage), as the local runner numbers them.
    speakers = (
        audio.ok
        | "Speakers" >> beam.Map(lambda x: x[1].speaker)
        | "DistinctSpeakers" >> beam.Distinct()
        | "SpeakerList" >> beam.combiners.ToList()
        | "Sorted" >> beam.Map(sorted)
    )
    keep = utt_lib.keep_frames(opts.max_edge_silence)

    def to_example(item, speaker_list):
        split, u, tokens, ids, features, d, _, _, _ = item
        d, crop = utt_lib.edge_crop(tokens, d, keep)
        ex = utt_lib.example(u, ids, features, d, crop, speaker_list.index(u.speaker))
        check_example(ex, where=u.id)
        return split, ex, tokens

    examples = timed | "Examples" >> beam.Map(
        to_example, speaker_list=beam.pvalue.AsSingleton(speakers)
    )

    # What the card needs, computed by combiners.
    tallies = (
        examples
        | "TallyRows" >> beam.Map(lambda x: (x[0], x[1]["speaker"], x[2], x[1]["durations"]))
        | "SplitTallies" >> beam.CombineGlobally(SplitTallies())
    )
    sources = (
        timed
        | "Sources" >> beam.Map(lambda x: x[6])
        | "CountSources" >> beam.combiners.Count.PerElement()
        | "SourceDict" >> beam.combiners.ToDict()
    )
    alignment = (
        aligned.ok
        | "AlignmentRows"
        >> beam.Map(lambda x: (x[1].id, x[0], x[2], x[5], x[7], x[8], x[4]["mel"]))
        | "AlignmentTally" >> beam.CombineGlobally(Alignment())
    )
    all_rejects = rejects | "AllRejects" >> beam.Flatten()
    _ = (
        all_rejects
        | "RejectLines" >> beam.Map(lambda r: json.dumps(list(r)))
        | "WriteRejects" >> beam.io.WriteToText(outputs.rejected_prefix())
    )
    summary_path = os.fspath(outputs.summary)

    def write_summary(_, tallies, sources, alignment, transcribed):
        summary = {"tallies": tallies, "sources": sources, "alignment": alignment}
        summary["transcribed"] = transcribed
        epath.Path(summary_path).write_bytes(pickle.dumps(summary))

    _ = (
        pipeline
        | "SummaryTrigger" >> beam.Create([None])
        | "WriteSummary"
        >> beam.Map(
            write_summary,
            tallies=beam.pvalue.AsSingleton(tallies),
            sources=beam.pvalue.AsSingleton(sources),
            alignment=beam.pvalue.AsSingleton(alignment),
            transcribed=beam.pvalue.AsSingleton(transcribed),
        )
    )
    out = {}
    for split in split_names:
        of_split = examples | f"Split_{split}" >> beam.Filter(lambda x, s=split: x[0] == s)
        _ = (
            of_split
            | f"Frames_{split}" >> beam.Map(lambda x: f"{x[1]['id']}\t{len(x[1]['log_f0'])}")
            | f"WriteFrames_{split}" >> beam.io.WriteToText(outputs.frames_prefix(split))
        )
        out[split] = of_split | f"Keyed_{split}" >> beam.Map(lambda x: (str(x[1]["id"]), x[1]))
    return out


def pipeline_options(args: Sequence[str], num_workers: int | None):
    """Beam's PipelineOptions from its own flags; without a ``--runner``, the DirectRunner in
    multi-processing mode with ``num_workers`` processes (default: all cores)."""
    args = list(args)
    if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
        args.append("--default_sdk_harness_log_level=WARNING")  # not every bundle's INFO lines
    if not any(a.startswith("--runner") for a in args):
        workers = num_workers or os.cpu_count() or 1
        args += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    return beam.options.pipeline_options.PipelineOptions(args)


def needs_builtin_aligner(splits: list[tuple[str, Any]], opts: Any) -> bool:
    """Whether some listed utterance would need the built-in aligner (no exact timings and no
    TextGrid to try), so that a missing ``aligner_checkpoint`` is reported before the run."""
    if opts.durations == "exact":
        return False
    if opts.durations == "aligner":
        return any(len(listing) for _, listing in splits)
    for _, listing in splits:
        for u in listing:
            if not u.textgrid_path and not utt_lib.exact_timings_file(u).exists():
                return True
    return False


def prepare_with_beam(
    corpora: list[str],
    data_dir: epath.Path,
    work: epath.Path,
    opts: Any,
    fingerprint: dict[str, Any],
):
    """The Beam runner of ``prepare.prepare_corpus`` (under its lock, into a name with no
    dataset yet); returns its ``PrepareResult``."""

    start_time = time.time()
    splits, manifests = [], []
    for name, listing in readers.discover_splits(corpora, opts.layout, opts.transcribe):
        manifest = epath.Path(listing.root) / readers.MANIFEST_FILE
        if listing.layout == "manifest":
            manifests.append((name, os.fspath(manifest)))
        else:
            splits.append((name, listing))
    aligner_kind = utt_lib.resolve_aligner(opts.aligner)
    if (
        aligner_kind == "builtin"
        and not opts.aligner_checkpoint
        and (manifests or needs_builtin_aligner(splits, opts))
    ):
        raise ValueError(
            "runner='beam' aligns with a built-in aligner trained before the run; train it "
            "with python launch/prepare_data.py --corpus=... --train_aligner=DIR and pass "
            "--aligner_checkpoint=DIR (or use --aligner=pocketsphinx, the eval extra)."
        )
    outputs = _Outputs(work / "beam")
    split_names = [name for name, _ in splits] + [name for name, _ in manifests]

    def build(pipeline, written_splits):
        outputs.clear()  # an earlier (failed) run's files: never read with this run's
        return build_pipeline(
            pipeline,
            splits=splits,
            manifests=manifests,
            opts=opts,
            aligner_kind=aligner_kind,
            outputs=outputs,
            split_names=written_splits,
        )

    def nothing_survived() -> Exception:
        """The local runner's error (and ``rejected.tsv`` in ``work``): the stages run once
        more without a dataset to write, for their rejects."""
        with beam.Pipeline(options=pipeline_options(opts.beam_options, opts.num_workers)) as p:
            build(p, [])
        rejected = listing_rejects + _rejects(outputs)
        try:
            card_lib.surviving_splits([], [], corpora, rejected, work)
        except ValueError as e:
            return e
        raise AssertionError("_surviving_splits accepted no splits")

    listing_rejects = readers.listing_problems(splits)
    frames = {}

    def frames_of(split: str) -> dict[str, int]:
        if split not in frames:
            rows = (line.split("\t") for line in outputs.read_lines(outputs.frames_prefix(split)))
            frames[split] = {utt_id: int(n) for utt_id, n in rows}
        return frames[split]

    out_dir = write_dataset_with_beam(
        data_dir,
        opts.name,
        split_names,
        build,
        pipeline_options(opts.beam_options, opts.num_workers),
        frames_of=frames_of,
        description=f"Prepared from {', '.join(corpora)}",
        nothing_survived=nothing_survived,
    )
    summary = pickle.loads(outputs.summary.read_bytes())
    rejected = listing_rejects + _rejects(outputs)
    tallies = {s: summary["tallies"][s] for s in split_names if s in summary["tallies"]}
    vocab = default_vocab()
    vocab.save(out_dir / "vocab.json")
    speakers = sorted({sp for t in tallies.values() for sp in t.speakers})
    card_lib.atomic_write(out_dir / "speakers.json", json.dumps(speakers, indent=1))
    align_report = _alignment_report(summary["alignment"], aligner_kind, work)
    card = card_lib.dataset_card(
        opts,
        corpora=corpora,
        version=VERSION,
        vocab=vocab,
        tallies=tallies,
        source_counts=Counter(summary["sources"]),
        align_report=align_report,
        rejected=rejected,
        seconds={"total": time.time() - start_time},
        transcription=_transcription_report(splits, summary["transcribed"], opts),
    )
    if align_report.get("figure"):
        card_lib.atomic_write(out_dir / "alignment.png", (work / "alignment.png").read_bytes())
    lengths = {s: np.load(os.fspath(out_dir / f"frames_{s}.npy")) for s in tallies}
    card_lib.write_card(out_dir, card, lengths, rejected, fingerprint)
    log.info("prepared %s with Beam: %s", out_dir, json.dumps(card["splits"]))
    return card_lib.PrepareResult(out_dir, card)


def _transcription_report(splits, kept: int, opts: Any) -> dict[str, Any]:
    listed = sum(1 for _, listing in splits for u in listing if u.extra.get(readers.UNTRANSCRIBED))
    return card_lib.transcription_report(listed, kept, opts) if listed else {}


def _alignment_report(tally: utt_lib.AlignmentTally, kind: str, work: epath.Path) -> dict:
    """The card's aligner report from the pipeline's ``AlignmentTally`` (as the local
    runner's, without its timings: they are the pipeline's)."""
    if not tally.utterances:
        return {}
    if kind == "pocketsphinx":
        report: dict[str, Any] = {"model": card_lib.SPHINX_MODEL, "utterances": tally.utterances}
        report["min_frames"] = card_lib.MIN_FRAMES
        report["phone_match_by_split"] = tally.means()
        label = "pocketsphinx"
    else:
        report = {"utterances": tally.utterances, "min_frames": card_lib.MIN_FRAMES}
        report["confidence_by_split"] = tally.means()
        label = "built-in aligner"
    return card_lib.finish_alignment_report(report, tally, work, label)


def _rejects(outputs: _Outputs) -> list[tuple[str, str, str]]:
    """The rejected utterances the workers wrote (split, item, reason)."""
    return [tuple(json.loads(line)) for line in outputs.read_lines(outputs.rejected_prefix())]
