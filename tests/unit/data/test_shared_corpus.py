"""The recipe's view of ../shared/data: split folders of links, a deterministic native hold-out."""

from __future__ import annotations

import pytest
import soundfile as sf

from naturalspeech2_jax.data import readers, shared_corpus
from tests.helpers import speechlike


def tone_wav_file(path, seed):
    sf.write(str(path), speechlike(1.0, seed=seed), 16000)


def _fake_shared(root, readers_count=8):
    """A miniature ../shared/data: speechocean762 train/dev (kaldi), cathy, librispeech_tc100."""
    for split, speaker in (("train", "0036"), ("dev", "0157")):
        d = root / shared_corpus.SPEECHOCEAN / split
        (d / speaker).mkdir(parents=True)
        lines = []
        for i in range(2):
            utt = f"{speaker}{i:05d}"
            tone_wav_file(d / speaker / f"{utt}.flac", seed=i)
            lines.append(f"{utt} HELLO THERE")
        (d / "text").write_text("\n".join(lines) + "\n")
        (d / "utt2spk").write_text("".join(f"{u.split()[0]} {speaker}\n" for u in lines))
    cathy = root / shared_corpus.CATHY
    cathy.mkdir()
    tone_wav_file(cathy / "arctic_a0001.flac", seed=3)
    (cathy / "text").write_text("arctic_a0001 Author of the danger trail.\n")
    (cathy / "utt2spk").write_text("arctic_a0001 cathy\n")
    libri = root / shared_corpus.LIBRISPEECH
    genders = []
    for k in range(readers_count):
        speaker = str(100 + k)
        (libri / speaker).mkdir(parents=True)
        tone_wav_file(libri / speaker / f"{speaker}-1-0000.flac", seed=10 + k)
        genders.append(f"{speaker} {'fm'[k % 2]}")
    (libri / "spk2gender").write_text("\n".join(genders) + "\n")
    return root


def test_native_heldout_is_gender_balanced_and_deterministic():
    genders = {str(s): "fm"[s % 2] for s in range(1, 41)}
    held = shared_corpus.native_heldout_speakers(genders, 5)
    assert held == shared_corpus.native_heldout_speakers(dict(reversed(genders.items())), 5)
    assert [genders[s] for s in held].count("f") == 3 and len(set(held)) == 5
    assert held == sorted(held, key=lambda s: int(s))  # numeric order, "10" after "9"
    assert len(shared_corpus.native_heldout_speakers(genders, 100)) == 40  # all there are


def test_link_corpora_gives_the_recipe_splits(tmp_path):
    shared = _fake_shared(tmp_path / "shared")
    out = tmp_path / "corpus"
    (out / "stale").mkdir(parents=True)  # an earlier, partial view is replaced
    result = shared_corpus.link_corpora(shared, out, heldout=3)
    assert not (out / "stale").exists()
    assert len(result["heldout_speakers"]) == 3 and result["native_speakers"] == 5
    splits = dict(readers.discover_splits(result["corpora"], None, untranscribed=True))
    assert sorted(splits) == ["cathy", "dev", "native", "native_heldout", "train"]
    held = {u.speaker for u in splits["native_heldout"].utterances}
    assert held == set(result["heldout_speakers"])
    assert not held & {u.speaker for u in splits["native"].utterances}
    assert all(u.extra.get("untranscribed") for u in splits["native"].utterances)
    # Links, not copies: nothing of ../shared/data is duplicated on disk.
    assert all(u.audio_path.is_symlink() for u in splits["native"].utterances)
    genders = shared_corpus.read_spk2gender(out / "native_heldout" / "spk2gender")
    assert set(genders) == held


def test_link_corpora_names_a_missing_corpus(tmp_path):
    shared = _fake_shared(tmp_path / "shared")
    (shared / shared_corpus.LIBRISPEECH / "spk2gender").unlink()
    with pytest.raises(shared_corpus.SharedDataError, match="spk2gender is missing"):
        shared_corpus.link_corpora(shared, tmp_path / "corpus")
    missing = "speechocean762_adult is missing; point"
    with pytest.raises(shared_corpus.SharedDataError, match=missing):
        shared_corpus.link_corpora(tmp_path / "nothing", tmp_path / "corpus")
