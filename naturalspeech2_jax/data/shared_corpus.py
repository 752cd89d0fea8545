"""The project's real speech (``../shared/data``) as the corpora of the real-speech recipe.

``../shared/data`` holds speechocean762 (``train``: 67 non-native adults; ``dev``: 20 others, the
zero-shot test speakers), ``cathy`` (one native speaker) and ``librispeech_tc100`` (251 native
readers, one untranscribed utterance each). The recipe trains NS2 on all of it but the dev
speakers and a gender-balanced set of librispeech_tc100 readers, held out as a check of voice
similarity on native speech. A preparation split is a corpus folder, so :func:`link_corpora`
writes the division as folders of symbolic links (one per audio file: the readers do not follow
links to folders), and returns the corpus paths ``prepare_data`` takes:

    W/corpus/speechocean762_adult -> train/, dev/   (links to the two folders' files)
    W/corpus/cathy/                                 (links)
    W/corpus/native/<speaker>/<utt>.flac            the readers NS2 trains on
    W/corpus/native_heldout/<speaker>/<utt>.flac    the held-out readers

The split names are the folder names (``train``, ``dev``, ``cathy``, ``native``,
``native_heldout``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

SPEECHOCEAN = "speechocean762_adult"
CATHY = "cathy"
LIBRISPEECH = "librispeech_tc100"
NATIVE, NATIVE_HELDOUT = "native", "native_heldout"
# Splits that no model trains on: the zero-shot test speakers and the native hold-out.
HELDOUT_SPLITS = ("dev", NATIVE_HELDOUT)


class SharedDataError(FileNotFoundError):
    """``../shared/data`` is missing a corpus the recipe needs."""


def read_spk2gender(path: Path) -> dict[str, str]:
    """``<speaker> <m|f>`` lines -> {speaker: gender}."""
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("m", "f"):
            raise SharedDataError(f"{path}:{n} is not '<speaker> <m|f>'; fix or remove that line.")
        out[parts[0]] = parts[1]
    return out


def _spread(items: Sequence[str], count: int) -> list[str]:
    """``count`` items evenly spaced over ``items`` (all of them when there are fewer)."""
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def native_heldout_speakers(spk2gender: dict[str, str], count: int) -> list[str]:
    """``count`` speakers, half of each gender (the odd one female), evenly spaced over the
    speakers sorted by id: deterministic, so every run of the recipe holds out the same ones."""
    key = lambda s: (len(s), s)  # numeric ids sort as numbers
    female = sorted((s for s, g in spk2gender.items() if g == "f"), key=key)
    male = sorted((s for s, g in spk2gender.items() if g == "m"), key=key)
    n_female = min(len(female), count - count // 2)
    n_male = min(len(male), count - n_female)
    return sorted(_spread(female, n_female) + _spread(male, n_male), key=key)


def _link_tree(source: Path, target: Path) -> int:
    """Mirror ``source``'s folders under ``target`` with a link for each file; returns files."""
    n = 0
    for root, dirs, files in os.walk(source):
        dirs.sort()
        rel = Path(root).relative_to(source)
        (target / rel).mkdir(parents=True, exist_ok=True)
        for name in sorted(files):
            (target / rel / name).symlink_to(Path(root, name).resolve())
            n += 1
    return n


def link_corpora(shared: str | os.PathLike, out: str | os.PathLike, heldout: int = 25) -> dict:
    """Write the recipe's corpus folders under ``out`` (replacing an earlier, possibly partial,
    set) and return {"corpora": [paths for prepare_data], "heldout_speakers": [...], ...}."""
    shared, out = Path(shared).resolve(), Path(out)
    for name in (SPEECHOCEAN, CATHY, LIBRISPEECH):
        if not (shared / name).is_dir():
            raise SharedDataError(
                f"{shared / name} is missing; point --shared_data at the folder of "
                f"{SPEECHOCEAN}, {CATHY} and {LIBRISPEECH} (see its README)."
            )
    gender_file = shared / LIBRISPEECH / "spk2gender"
    if not gender_file.exists():
        raise SharedDataError(f"{gender_file} is missing; the native hold-out needs the genders.")
    genders = read_spk2gender(gender_file)
    if heldout >= len(genders):
        raise SharedDataError(
            f"{gender_file} lists {len(genders)} readers: holding out {heldout} leaves none to "
            "train on; hold out fewer."
        )
    held = native_heldout_speakers(genders, heldout)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _link_tree(shared / SPEECHOCEAN, out / SPEECHOCEAN)
    _link_tree(shared / CATHY, out / CATHY)
    speakers = sorted(p.name for p in (shared / LIBRISPEECH).iterdir() if p.is_dir())
    for split, members in ((NATIVE, sorted(set(speakers) - set(held))), (NATIVE_HELDOUT, held)):
        for speaker in members:
            _link_tree(shared / LIBRISPEECH / speaker, out / split / speaker)
        lines = "".join(f"{s} {genders[s]}\n" for s in members if s in genders)
        (out / split / "spk2gender").write_text(lines, encoding="utf-8")
    return {
        "corpora": [str(out / n) for n in (SPEECHOCEAN, CATHY, NATIVE, NATIVE_HELDOUT)],
        "heldout_speakers": held,
        "native_speakers": len(speakers) - len(held),
    }
