"""Corpus readers: turn a speech corpus on disk into a list of :class:`Utterance` records.

Every reader returns a :class:`CorpusListing`: the good utterances plus a list of
``(item, reason)`` problems (missing audio, missing or empty transcript, unknown speaker, piped
``wav.scp`` command, duplicate id, ...). A bad item is reported and skipped, never silently
dropped, so data preparation can print what was left out and why.

Layouts (``detect_layout`` tries them in this order, ``manifest`` first):

``kaldi``        ``text`` (``<utt> <transcript>``) + ``utt2spk`` and/or ``wav.scp`` (optionally
                 with ``segments``); without ``wav.scp`` the audio is found as
                 ``<dir>/<speaker>/<utt>.<ext>`` or ``<dir>/<utt>.<ext>`` (the layout of
                 ../shared/data). ``spk2gender``/``spk2age`` go into ``extra``.
``mls``          Multilingual LibriSpeech split: ``transcripts.txt`` (``<utt>\\t<text>``) +
                 ``audio/<spk>/<book>/<utt>.flac`` (or ``.opus``/``.wav``).
``ljspeech``     ``metadata.csv`` (``id|text|normalized``) + ``wavs/<id>.wav``.
``vctk``         ``txt/<spk>/<utt>.txt`` + ``wav48*/<spk>/<utt>[_mic1|_mic2].flac|wav``.
``libritts``     ``<spk>/<chapter>/<utt>.wav`` + ``<utt>.normalized.txt`` (any depth above).
``librispeech``  ``<spk>/<chapter>/<spk>-<chapter>.trans.txt`` + ``<utt>.flac`` (any depth above).
``folder``       audio files with a same-name ``.txt`` (or MFA's ``.lab``) transcript, any depth;
                 the speaker is the parent folder's name.
``manifest``     ``manifest.tsv``: a header line, then ``id<TAB>speaker<TAB>audio<TAB>text``
                 (optionally ``<TAB>start<TAB>end`` seconds), audio relative to the folder,
                 absolute, or a URL (``gs://...``). The listing of a corpus too large to walk:
                 the Beam runner streams it (``manifest_line`` per line) instead of holding it;
                 ``python launch/prepare_data.py --corpus=C --write_manifest=F`` writes one
                 from any layout. An id on several lines is rejected on each of them.

Transcripts are only whitespace-normalised here (text normalisation and G2P belong to the text
module). Audio is checked for existence and non-zero size; ``check_audio=True`` also opens each
header with soundfile (catches corrupt files at ~1 ms per file).

TextGrids (Montreal Forced Aligner output) are attached when found: ``<audio stem>.TextGrid``
beside the audio, or ``<utt id>.TextGrid`` anywhere under ``alignment_dir`` (MFA mirrors the
corpus' speaker folders, so the whole folder is indexed by file stem once).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "AUDIO_EXTENSIONS",
    "LAYOUTS",
    "CorpusError",
    "CorpusEncodingError",
    "READER_VERSION",
    "Utterance",
    "CorpusListing",
    "detect_layout",
    "read_corpus",
    "read_kaldi",
    "read_libritts",
    "read_librispeech",
    "read_vctk",
    "read_mls",
    "read_ljspeech",
    "read_folder",
    "read_manifest",
    "manifest_line",
    "write_manifest",
    "MANIFEST_FILE",
    "discover_splits",
    "listing_problems",
]

# Order = preference when one stem exists with several extensions.
AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".opus", ".mp3", ".aiff", ".aif")


#: Bumped when a reader's output for the same files changes (recorded with prepared datasets).
#: 2: transcripts that are not UTF-8 are refused, never decoded with U+FFFD; 3: a folder with a
#: manifest.tsv is a manifest corpus.
READER_VERSION = 3


class CorpusError(ValueError):
    """The corpus folder cannot be read at all (unknown layout, missing index file)."""


class CorpusEncodingError(CorpusError):
    """An index file of the corpus (Kaldi ``text``, ``metadata.csv`` ...) is not UTF-8: the
    message names the file, line and column. Layout detection must not swallow it."""


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One utterance of a corpus.

    ``start``/``end`` (seconds) select a segment of ``audio_path`` (Kaldi ``segments``);
    ``None`` means the file's start/end. ``extra`` holds layout-specific metadata (chapter,
    gender, original text, ...).
    """

    id: str
    speaker: str
    text: str
    audio_path: Path
    start: float | None = None
    end: float | None = None
    textgrid_path: Path | None = None
    # hash=False: a dict cannot be hashed, and id/paths already identify the utterance.
    extra: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)


@dataclasses.dataclass
class CorpusListing:
    """Utterances read from ``root`` with ``layout``, and the problems met while reading."""

    root: Path
    layout: str
    utterances: list[Utterance]
    problems: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.utterances)

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self.utterances)

    def __getitem__(self, i: int) -> Utterance:
        return self.utterances[i]

    @property
    def speakers(self) -> list[str]:
        """Sorted distinct speaker ids."""
        return sorted({u.speaker for u in self.utterances})

    def summary(self, max_problems: int = 10) -> str:
        """Human-readable report: counts and the first ``max_problems`` problems."""
        lines = [
            f"{self.root} ({self.layout}): {len(self.utterances)} utterances, "
            f"{len(self.speakers)} speakers, {len(self.problems)} problem(s)"
        ]
        for item, reason in self.problems[:max_problems]:
            lines.append(f"  skipped {item}: {reason}")
        if len(self.problems) > max_problems:
            lines.append(f"  ... and {len(self.problems) - max_problems} more")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _clean_text(text: str) -> str:
    return " ".join(text.split())


def _decode(path: Path) -> tuple[str | None, tuple[str, str] | None]:
    """(text, None), or (None, (``PATH:LINE``, ``byte 0xNN at column C``)) when ``path`` is not
    UTF-8: never decoded with replacement characters, which would put wrong phonemes into the
    training data silently."""
    data = path.read_bytes()
    try:
        # utf-8-sig: some hand-edited files start with a BOM, which would corrupt the first id.
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        return None, (f"{path}:{line}", f"byte 0x{data[e.start]:02x} at column {column}")


def _read_lines(path: Path) -> list[str]:
    """The lines of an index file; CorpusEncodingError (file, line, column) if not UTF-8."""
    text, bad = _decode(path)
    if bad is not None:
        raise CorpusEncodingError(f"{bad[0]}: not UTF-8 ({bad[1]}); re-encode it as UTF-8.")
    return text.splitlines()


def _read_transcript(b: _Builder, path: Path, item: str) -> str | None:
    """One utterance's transcript file, or None after reporting it when it is not UTF-8."""
    text, bad = _decode(path)
    if bad is not None:
        b.problem(item, f"transcript is not UTF-8 ({bad[0]}: {bad[1]}); re-encode it as UTF-8")
    return text


def _read_table(path: Path, problems: list[tuple[str, str]], min_fields: int = 2) -> dict:
    """``key value...`` lines as {key: rest-of-line}; malformed lines become problems."""
    table: dict[str, str] = {}
    for n, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) < min_fields:
            problems.append((f"{path.name}:{n}", f"line has no value after the key: {line!r}"))
            continue
        key = parts[0]
        if key in table:
            problems.append((f"{path.name}:{n}", f"duplicate key {key!r}; the first is kept"))
            continue
        table[key] = parts[1] if len(parts) > 1 else ""
    return table


def _index_audio(root: Path, max_depth: int | None = None) -> dict[str, Path]:
    """{file stem: path} for audio files under ``root`` at most ``max_depth`` folders deep
    (0 = directly in ``root``); for a stem with several extensions, AUDIO_EXTENSIONS order wins,
    then the shallower/alphabetically first path."""
    rank = {e: i for i, e in enumerate(AUDIO_EXTENSIONS)}
    found: dict[str, Path] = {}
    root_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).parts) - root_depth
        if max_depth is not None and depth >= max_depth:
            dirnames[:] = []  # do not descend further
        dirnames.sort()
        for fn in sorted(filenames):
            ext = os.path.splitext(fn)[1].lower()
            if ext in rank:
                stem = fn[: -len(ext)]
                p = Path(dirpath) / fn
                old = found.get(stem)
                if old is None or rank[ext] < rank[old.suffix.lower()]:
                    found[stem] = p
    return found


def _index_textgrids(root: Path | None) -> dict[str, Path]:
    if root is None:
        return {}
    if not Path(root).is_dir():
        raise CorpusError(f"alignment folder {root} does not exist")
    out: dict[str, Path] = {}
    for p in sorted(Path(root).rglob("*")):
        if p.suffix.lower() == ".textgrid" and p.stem not in out:
            out[p.stem] = p
    return out


def _audio_problem(path: Path, check_audio: bool) -> str | None:
    """Why ``path`` is not usable audio, or None."""
    try:
        size = path.stat().st_size
    except OSError:
        return f"audio file {path} is missing"
    if size == 0:
        return f"audio file {path} is empty (0 bytes)"
    if check_audio:
        import soundfile as sf

        try:
            info = sf.info(str(path))
        except Exception as e:  # noqa: BLE001 - any libsndfile failure means unusable
            return f"audio file {path} cannot be decoded ({e})"
        if info.frames == 0:
            return f"audio file {path} has no samples"
    return None


class _Builder:
    """Collects utterances and problems with the checks every reader shares."""

    def __init__(
        self, root: Path, layout: str, check_audio: bool, alignment_dir: Path | None
    ) -> None:
        self.root, self.layout, self.check_audio = root, layout, check_audio
        self.utts: list[Utterance] = []
        self.problems: list[tuple[str, str]] = []
        self.seen: set[str] = set()
        self.textgrids = _index_textgrids(alignment_dir)
        # Audio without a transcript is listed (text "") for data preparation to transcribe,
        # instead of being a problem; readers that support it set this.
        self.untranscribed = False

    def problem(self, item: str | Path, reason: str) -> None:
        self.problems.append((str(item), reason))

    def add(
        self,
        utt_id: str,
        speaker: str | None,
        text: str | None,
        audio: Path | None,
        start: float | None = None,
        end: float | None = None,
        **extra: Any,
    ) -> None:
        if utt_id in self.seen:
            self.problem(utt_id, "duplicate utterance id; the first one is kept")
            return
        if text is None and self.untranscribed:
            text, extra = "", {**extra, UNTRANSCRIBED: True}
        elif text is None:
            self.problem(utt_id, "missing transcript")
            return
        text = _clean_text(text)
        if not text and not extra.get(UNTRANSCRIBED):
            self.problem(utt_id, "empty transcript")
            return
        if not speaker:
            self.problem(utt_id, "no speaker")
            return
        if audio is None:
            self.problem(utt_id, "missing audio (no file found for this utterance)")
            return
        why = _audio_problem(audio, self.check_audio)
        if why:
            self.problem(utt_id, why)
            return
        if start is not None and end is not None and 0 <= end <= start:
            self.problem(utt_id, f"segment end {end} is not after its start {start}")
            return
        tg = self.textgrids.get(utt_id)
        if tg is None:
            for cand in (audio.with_suffix(".TextGrid"), audio.with_suffix(".textgrid")):
                if cand.is_file():
                    tg = cand
                    break
        self.seen.add(utt_id)
        self.utts.append(
            Utterance(
                utt_id, speaker, text, audio, start, end, tg, {k: v for k, v in extra.items()}
            )
        )

    def listing(self) -> CorpusListing:
        return CorpusListing(self.root, self.layout, self.utts, self.problems)


def _orphans(b: _Builder, audio: Iterable[tuple[str, Path]], known: set[str], speaker=None) -> None:
    """Report audio files that no transcript refers to (they would otherwise vanish silently),
    or list them to be transcribed when the reader was asked to (``speaker(stem)`` names the
    speaker)."""
    for stem, path in audio:
        if stem in known:
            continue
        if b.untranscribed and speaker is not None:
            b.add(stem, speaker(stem), None, path)
        else:
            b.problem(path, "audio file has no transcript")


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


def _resolve_scp_path(root: Path, value: str) -> Path:
    """wav.scp paths are relative to the Kaldi recipe folder (usually two levels above
    ``data/train``); try the data folder itself first, then its parents."""
    p = Path(value)
    if p.is_absolute():
        return p
    for base in (root, root.parent, root.parent.parent):
        if (base / p).exists():
            return base / p
    return root / p


def read_kaldi(
    root: str | os.PathLike,
    check_audio: bool = False,
    alignment_dir: str | os.PathLike | None = None,
) -> CorpusListing:
    """Kaldi data folder (see the module docstring)."""
    root = Path(root)
    b = _Builder(root, "kaldi", check_audio, Path(alignment_dir) if alignment_dir else None)
    if not (root / "text").is_file():
        raise CorpusError(f"{root} has no Kaldi 'text' file, so it is not a Kaldi data folder; "
                          "pass a folder with text, utt2spk and the audio.")  # fmt: skip
    # Keep empty transcripts (min_fields=1) so they are reported as "empty transcript".
    text = _read_table(root / "text", b.problems, min_fields=1)
    utt2spk = _read_table(root / "utt2spk", b.problems) if (root / "utt2spk").is_file() else None
    extra_spk: dict[str, dict[str, str]] = {}
    for name, key in (("spk2gender", "gender"), ("spk2age", "age")):
        if (root / name).is_file():
            for spk, val in _read_table(root / name, b.problems).items():
                extra_spk.setdefault(spk, {})[key] = val.strip()

    def speaker_of(utt: str) -> str | None:
        # Without utt2spk, Kaldi's convention is one speaker per utterance.
        return utt if utt2spk is None else utt2spk.get(utt, "").strip() or None

    if (root / "wav.scp").is_file():
        recordings: dict[str, Path] = {}
        bad_rec: dict[str, str] = {}
        for rec, value in _read_table(root / "wav.scp", b.problems).items():
            value = value.strip()
            if value.endswith("|"):
                bad_rec[rec] = (
                    "wav.scp entry is a piped command, which this reader does not run; "
                    "convert the audio to files (sox/ffmpeg) and list their paths"
                )
            elif ".ark:" in value or value.endswith(".ark"):
                bad_rec[rec] = "wav.scp entry points into a Kaldi archive (.ark); extract it first"
            else:
                recordings[rec] = _resolve_scp_path(root, value)
        segments = None
        if (root / "segments").is_file():
            segments = {}
            for utt, rest in _read_table(root / "segments", b.problems).items():
                parts = rest.split()
                try:
                    segments[utt] = (parts[0], float(parts[1]), float(parts[2]))
                except (IndexError, ValueError):
                    b.problem(utt, f"malformed segments line: {rest!r}")
                    segments[utt] = None
        for utt, transcript in text.items():
            spk = speaker_of(utt)
            if spk is None:
                b.problem(utt, "utterance is not listed in utt2spk")
                continue
            start = end = None
            if segments is not None:
                if utt not in segments:
                    b.problem(utt, "utterance is not listed in segments")
                    continue
                if segments[utt] is None:
                    continue  # already reported as malformed
                rec, start, end = segments[utt]
                end = None if end < 0 else end
            else:
                rec = utt
            if rec in bad_rec:
                b.problem(utt, bad_rec[rec])
                continue
            if rec not in recordings:
                b.problem(utt, f"recording {rec!r} is not listed in wav.scp")
                continue
            b.add(utt, spk, transcript, recordings[rec], start, end, **extra_spk.get(spk, {}))
    else:
        # <dir>/<speaker>/<utt>.<ext> or <dir>/<utt>.<ext>: index two levels once.
        audio = _index_audio(root, max_depth=1)
        for utt, transcript in text.items():
            spk = speaker_of(utt)
            if spk is None:
                b.problem(utt, "utterance is not listed in utt2spk")
                continue
            b.add(utt, spk, transcript, audio.get(utt), **extra_spk.get(spk, {}))
        _orphans(b, audio.items(), set(text))
    return b.listing()


def read_libritts(
    root: str | os.PathLike,
    check_audio: bool = False,
    alignment_dir: str | os.PathLike | None = None,
) -> CorpusListing:
    """LibriTTS (any split or the whole corpus): ``<spk>/<chapter>/<utt>.wav`` +
    ``<utt>.normalized.txt``; ``.original.txt`` goes into ``extra['original_text']``."""
    root = Path(root)
    b = _Builder(root, "libritts", check_audio, Path(alignment_dir) if alignment_dir else None)
    audio = _index_audio(root)
    transcripts = {
        p.name[: -len(".normalized.txt")]: p for p in sorted(root.rglob("*.normalized.txt"))
    }
    for utt, tpath in transcripts.items():
        text = _read_transcript(b, tpath, utt)
        if text is None:
            continue
        orig_path = tpath.with_name(utt + ".original.txt")
        extra = {"chapter": tpath.parent.name}
        if orig_path.is_file():
            original, _ = _decode(orig_path)  # informative only; the normalized text is used
            if original is not None:
                extra["original_text"] = original.strip()
        wav = tpath.with_name(utt + ".wav")
        b.add(utt, tpath.parent.parent.name, text, wav if wav.exists() else audio.get(utt), **extra)
    _orphans(b, audio.items(), set(transcripts))
    return b.listing()


def read_librispeech(
    root: str | os.PathLike,
    check_audio: bool = False,
    alignment_dir: str | os.PathLike | None = None,
    untranscribed: bool = False,
) -> CorpusListing:
    """LibriSpeech (any split or the whole corpus): ``<spk>/<chapter>/<spk>-<chapter>.trans.txt``
    lines ``<utt> <TEXT>`` + ``<utt>.flac`` in the same folder. ``untranscribed=True`` lists
    audio that no ``.trans.txt`` names, with empty text (speaker: the id before its first
    ``-``), to be transcribed."""
    root = Path(root)
    b = _Builder(root, "librispeech", check_audio, Path(alignment_dir) if alignment_dir else None)
    b.untranscribed = untranscribed
    known: set[str] = set()
    for trans in sorted(root.rglob("*.trans.txt")):
        folder = trans.parent
        lines = _read_table(trans, b.problems, min_fields=1)
        for utt, text in lines.items():
            known.add(utt)
            audio = next(
                (folder / (utt + e) for e in AUDIO_EXTENSIONS if (folder / (utt + e)).exists()),
                None,
            )
            b.add(utt, utt.split("-")[0], text, audio, chapter=folder.name)
    _orphans(b, _index_audio(root).items(), known, speaker=lambda stem: stem.split("-")[0])
    return b.listing()


def read_vctk(
    root: str | os.PathLike,
    check_audio: bool = False,
    alignment_dir: str | os.PathLike | None = None,
    mic: str = "mic1",
) -> CorpusListing:
    """VCTK 0.80 (``wav48/p225/p225_001.wav``) or 0.92 (``wav48_silence_trimmed/p225/
    p225_001_mic1.flac``, ``mic`` picks mic1/mic2); transcripts ``txt/p225/p225_001.txt``."""
    root = Path(root)
    b = _Builder(root, "vctk", check_audio, Path(alignment_dir) if alignment_dir else None)
    wav_dirs = sorted(p for p in root.glob("wav48*") if p.is_dir())
    if not (root / "txt").is_dir() or not wav_dirs:
        raise CorpusError(f"{root} is not a VCTK folder (needs txt/ and wav48*/).")
    audio: dict[str, Path] = {}
    with_mic: set[str] = set()
    for wd in wav_dirs:
        for stem, path in _index_audio(wd).items():
            utt = stem
            if stem.endswith(("_mic1", "_mic2")):
                utt, this_mic = stem[:-5], stem[-4:]
                if this_mic != mic:
                    continue  # the other microphone's copy of the same utterance
                with_mic.add(utt)
            audio.setdefault(utt, path)
    texts = {p.stem: p for p in sorted((root / "txt").rglob("*.txt"))}
    for utt, tpath in texts.items():
        text = _read_transcript(b, tpath, utt)
        if text is None:
            continue
        b.add(
            utt,
            tpath.parent.name,
            text,
            audio.get(utt),
            **({"mic": mic} if utt in with_mic else {}),
        )
    # p315 and a few files have audio but no text: report them.
    _orphans(b, audio.items(), set(texts))
    return b.listing()


def read_mls(
    root: str | os.PathLike,
    check_audio: bool = False,
    alignment_dir: str | os.PathLike | None = None,
) -> CorpusListing:
    """Multilingual LibriSpeech split folder (``train``/``dev``/``test``)."""
    root = Path(root)
    b = _Builder(root, "mls", check_audio, Path(alignment_dir) if alignment_dir else None)
    if not (root / "transcripts.txt").is_file():
        raise CorpusError(f"{root} has no transcripts.txt; point at an MLS split folder.")
    known: set[str] = set()
    for n, line in enumerate(_read_lines(root / "transcripts.txt"), 1):
        if not line.strip():
            continue
        utt, sep, text = line.partition("\t")
        if not sep:  # tolerate space-separated copies
            utt, _, text = line.strip().partition(" ")
        utt = utt.strip()
        known.add(utt)
        parts = utt.split("_")
        if len(parts) < 3:
            b.problem(f"transcripts.txt:{n}", f"utterance id {utt!r} is not <spk>_<book>_<seq>")
            continue
        folder = root / "audio" / parts[0] / parts[1]
        audio = next(
            (folder / (utt + e) for e in AUDIO_EXTENSIONS if (folder / (utt + e)).exists()), None
        )
        b.add(utt, parts[0], text, audio, book=parts[1])
    if (root / "audio").is_dir():
        _orphans(b, _index_audio(root / "audio").items(), known)
    return b.listing()


def read_ljspeech(
    root: str | os.PathLike,
    check_audio: bool = False,
    alignment_dir: str | os.PathLike | None = None,
    speaker: str | None = None,
) -> CorpusListing:
    """LJSpeech-style ``metadata.csv`` (``id|text|normalized`` or ``id|text``) + ``wavs/``.

    The normalized column is used when present and non-empty (the raw one goes to
    ``extra['original_text']``). Single speaker: ``speaker`` or the folder's name.
    Lines are split on ``|`` without CSV quoting because transcripts contain bare quotes.
    """
    root = Path(root)
    b = _Builder(root, "ljspeech", check_audio, Path(alignment_dir) if alignment_dir else None)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise CorpusError(f"{root} has no metadata.csv; it is not an LJSpeech-style folder.")
    spk = speaker or root.resolve().name
    wav_dir = root / "wavs" if (root / "wavs").is_dir() else root
    known: set[str] = set()
    for n, line in enumerate(_read_lines(meta), 1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < 2:
            b.problem(f"metadata.csv:{n}", f"expected 'id|text[|normalized]', got {line!r}")
            continue
        utt = fields[0].strip()
        known.add(utt)
        text = fields[2] if len(fields) > 2 and fields[2].strip() else fields[1]
        audio = next(
            (wav_dir / (utt + e) for e in AUDIO_EXTENSIONS if (wav_dir / (utt + e)).exists()),
            None,
        )
        b.add(utt, spk, text, audio, original_text=fields[1].strip())
    _orphans(b, _index_audio(wav_dir, max_depth=0).items(), known)
    return b.listing()


def read_folder(
    root: str | os.PathLike,
    check_audio: bool = False,
    alignment_dir: str | os.PathLike | None = None,
    untranscribed: bool = False,
) -> CorpusListing:
    """Audio files with same-name ``.txt``/``.lab`` transcripts at any depth; the speaker is the
    parent folder's name (the folder's own name for files directly in ``root``); the id is the
    file stem (made unique with the speaker when stems repeat across folders).
    ``untranscribed=True`` lists audio without a transcript, with empty text, to be
    transcribed (a plain folder of audio, such as ../shared/data/librispeech_tc100)."""
    root = Path(root)
    b = _Builder(root, "folder", check_audio, Path(alignment_dir) if alignment_dir else None)
    b.untranscribed = untranscribed
    rank = {e: i for i, e in enumerate(AUDIO_EXTENSIONS)}
    audio_files = sorted(p for p in root.rglob("*") if p.suffix.lower() in rank and p.is_file())
    counts = Counter(p.stem for p in audio_files)
    dup = {s for s, c in counts.items() if c > 1}
    used_transcripts: set[Path] = set()
    for p in audio_files:
        spk = root.resolve().name if p.parent == root else p.parent.name
        utt = f"{spk}_{p.stem}" if p.stem in dup else p.stem
        tpath = next(
            (p.with_suffix(s) for s in (".txt", ".lab") if p.with_suffix(s).is_file()), None
        )
        if tpath is None:
            if b.untranscribed:
                b.add(utt, spk, None, p)
            else:
                b.problem(p, "audio file has no transcript (.txt or .lab beside it)")
            continue
        used_transcripts.add(tpath)
        text = _read_transcript(b, tpath, utt)
        if text is not None:
            b.add(utt, spk, text, p)
    for t in sorted(root.rglob("*.txt")) + sorted(root.rglob("*.lab")):
        if t not in used_transcripts:
            b.problem(t, "transcript has no audio file beside it")
    return b.listing()


#: ``Utterance.extra`` key of audio listed without a transcript, for data preparation to
#: transcribe (``read_corpus(..., untranscribed=True)``, folder and librispeech layouts).
UNTRANSCRIBED = "untranscribed"
UNTRANSCRIBED_LAYOUTS = ("folder", "librispeech")

MANIFEST_FILE = "manifest.tsv"
MANIFEST_COLUMNS = ("id", "speaker", "audio", "text", "start", "end")


def _manifest_audio(root: str, value: str) -> Path | str:
    if "://" in value:
        return value  # a URL: the audio stage reads it through etils.epath
    p = Path(value)
    return p if p.is_absolute() else Path(root) / p


def manifest_line(root: str | os.PathLike, line: str) -> Utterance | tuple[str, str]:
    """One line of a ``manifest.tsv`` in ``root``: the utterance, or (item, reason) when it
    cannot be one. Stateless, so that Beam workers parse a manifest's lines independently."""
    fields = line.rstrip("\n").split("\t")
    item = fields[0].strip() or f"{MANIFEST_FILE} line {line[:40]!r}"
    if len(fields) not in (4, 6):
        columns = ", ".join(MANIFEST_COLUMNS)
        return item, f"expected 4 or 6 tab-separated fields ({columns}), got {len(fields)}"
    utt_id, speaker, audio, text = (f.strip() for f in fields[:4])
    start = end = None
    if len(fields) == 6:
        try:
            start, end = (float(f) if f.strip() else None for f in fields[4:])
        except ValueError:
            return item, f"start/end are not numbers: {fields[4]!r}, {fields[5]!r}"
    text = _clean_text(text)
    if not text:
        return item, "empty transcript"
    if not speaker:
        return item, "no speaker"
    if not audio:
        return item, "missing audio (no file found for this utterance)"
    path = _manifest_audio(os.fspath(root), audio)
    if isinstance(path, Path):
        why = _audio_problem(path, check_audio=False)
        if why:
            return item, why
    if start is not None and end is not None and 0 <= end <= start:
        return item, f"segment end {end} is not after its start {start}"
    return Utterance(utt_id, speaker, text, path, start, end)


def read_manifest(
    root: str | os.PathLike, check_audio: bool = False, alignment_dir=None
) -> CorpusListing:
    """A ``manifest.tsv`` corpus read whole (the local runner; Beam streams it)."""
    root = Path(root)
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise CorpusError(f"{root} has no {MANIFEST_FILE}; it is not a manifest corpus.")
    lines = [line for line in _read_lines(path)[1:] if line.strip()]
    parsed = [manifest_line(root, line) for line in lines]
    counts = Counter(p.id for p in parsed if isinstance(p, Utterance))
    utts, problems = [], []
    for p in parsed:
        if isinstance(p, tuple):
            problems.append(p)
        elif counts[p.id] > 1:
            problems.append((p.id, duplicate_in_manifest(counts[p.id])))
        else:
            utts.append(p)
    return CorpusListing(root, "manifest", utts, problems)


def duplicate_in_manifest(times: int) -> str:
    return f"utterance id on {times} lines of the manifest; give each utterance its own id"


def write_manifest(listing: CorpusListing, path: str | os.PathLike) -> int:
    """Write ``listing`` as a ``manifest.tsv`` at ``path`` (absolute audio paths); returns the
    number of utterances written. Tabs and newlines in transcripts become spaces."""
    rows = ["\t".join(MANIFEST_COLUMNS) + "\n"]
    for u in listing:
        start = "" if u.start is None else repr(u.start)
        end = "" if u.end is None else repr(u.end)
        text = " ".join(u.text.split())
        audio = u.audio_path if "://" in str(u.audio_path) else Path(u.audio_path).resolve()
        rows.append(f"{u.id}\t{u.speaker}\t{audio}\t{text}\t{start}\t{end}\n")
    Path(path).write_text("".join(rows), encoding="utf-8")
    return len(rows) - 1


_READERS = {
    "manifest": read_manifest,
    "kaldi": read_kaldi,
    "mls": read_mls,
    "ljspeech": read_ljspeech,
    "vctk": read_vctk,
    "libritts": read_libritts,
    "librispeech": read_librispeech,
    "folder": read_folder,
}
LAYOUTS = tuple(_READERS)


def _first(paths: Iterator[Path]) -> Path | None:
    return next(paths, None)


def detect_layout(path: str | os.PathLike) -> str:
    """Name of the layout of the corpus folder ``path`` (one of :data:`LAYOUTS`).

    Raises CorpusError naming what was looked for when nothing matches.
    """
    root = Path(path)
    if not root.is_dir():
        raise CorpusError(f"corpus folder {root} does not exist")
    if (root / MANIFEST_FILE).is_file():
        return "manifest"
    if (root / "text").is_file() and any(
        (root / f).is_file() for f in ("utt2spk", "wav.scp", "segments")
    ):
        return "kaldi"
    if (root / "transcripts.txt").is_file() and (root / "audio").is_dir():
        return "mls"
    if (root / "metadata.csv").is_file():
        return "ljspeech"
    if (root / "txt").is_dir() and any(p.is_dir() for p in root.glob("wav48*")):
        return "vctk"
    if _first(root.rglob("*.normalized.txt")) is not None:
        return "libritts"
    if _first(root.rglob("*.trans.txt")) is not None:
        return "librispeech"
    if any(_first(root.rglob("*" + e)) is not None for e in AUDIO_EXTENSIONS):
        return "folder"
    raise CorpusError(
        f"cannot tell the layout of {root}: no Kaldi text+utt2spk/wav.scp, MLS transcripts.txt, "
        "metadata.csv, VCTK txt/+wav48*/, LibriTTS *.normalized.txt, LibriSpeech *.trans.txt "
        "or audio files found; pass layout=... explicitly"
    )


def read_corpus(
    path: str | os.PathLike,
    layout: str | None = None,
    alignment_dir: str | os.PathLike | None = None,
    check_audio: bool = False,
    **kwargs: Any,
) -> CorpusListing:
    """Read a corpus folder with ``layout`` (detected when None); extra keyword arguments go to
    the reader (``mic=`` for VCTK, ``speaker=`` for LJSpeech). ``untranscribed=True`` lists
    audio without a transcript (folder and librispeech layouts; the others have none to
    list)."""
    untranscribed = kwargs.pop("untranscribed", False)
    layout = layout or detect_layout(path)
    if untranscribed and layout in UNTRANSCRIBED_LAYOUTS:
        kwargs["untranscribed"] = True
    if layout not in _READERS:
        raise CorpusError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    if not Path(path).is_dir():
        raise CorpusError(f"corpus folder {path} does not exist")
    return _READERS[layout](path, check_audio=check_audio, alignment_dir=alignment_dir, **kwargs)


def _split_name(path: Path) -> str:
    name = re.sub(r"[^0-9a-zA-Z_]", "_", path.name).strip("_").lower()
    return name or "train"


def discover_splits(
    corpora: Sequence[str], layout: str | None, untranscribed: bool = False
) -> list[tuple[str, Any]]:
    """(split name, CorpusListing) for each corpus path, or each sub-corpus of a folder;
    ``untranscribed``: see :func:`read_corpus`."""
    out = []
    for corpus in corpora:
        path = Path(corpus)
        if not path.is_dir():
            raise FileNotFoundError(f"corpus {path} is not a directory; pass a corpus folder.")
        # CorpusEncodingError is never swallowed: a file that is not UTF-8 is the reason the
        # corpus cannot be read, whatever the layout, and its message names file and line.
        subs = []
        for sub in sorted(p for p in path.iterdir() if p.is_dir()):
            try:
                if layout or detect_layout(sub) != "folder":
                    subs.append(
                        (_split_name(sub), read_corpus(sub, layout, untranscribed=untranscribed))
                    )
            except CorpusEncodingError:
                raise
            except CorpusError:
                continue
        root_error = None
        try:
            # A folder of corpora (train/, dev/ ...) would also read as one plain "folder"
            # corpus; the structured sub-corpora win then.
            root_layout = layout or detect_layout(path)
            if not (subs and root_layout == "folder"):
                out.append(
                    (_split_name(path), read_corpus(path, layout, untranscribed=untranscribed))
                )
                continue
        except CorpusEncodingError:
            raise
        except CorpusError as e:
            root_error = e
        if not subs:
            if layout and root_error is not None:  # the reader of the named layout says why
                raise CorpusError(f"{root_error} (--layout={layout})") from root_error
            raise ValueError(
                f"{path} is not a corpus of any known layout and holds none; give "
                "--layout=kaldi|libritts|librispeech|vctk|mls|ljspeech|folder or another path."
            )
        out.extend(subs)
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"two corpora map to the same split name in {names}; rename a folder.")
    return out


def listing_problems(splits: list[tuple[str, Any]]) -> list[tuple[str, str, str]]:
    """What the readers could not list (missing audio, lines that do not parse), as (split,
    item, reason) rows of ``rejected.tsv``."""
    return [
        (split, str(item), reason) for split, listing in splits for item, reason in listing.problems
    ]
