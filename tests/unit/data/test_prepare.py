"""launch/prepare_data.py end to end: embedded corpus, bad inputs reported, invariants on read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from naturalspeech2_jax.data import pipeline
from naturalspeech2_jax.data.prepare import boundaries_to_durations, prepare_corpus
from naturalspeech2_jax.data.synthetic import generate_corpus
from naturalspeech2_jax.text.g2p import is_phoneme
from naturalspeech2_jax.text.vocab import default_vocab


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    generate_corpus(
        out, num_speakers=3, utts_per_speaker=3, num_heldout=1, num_workers=1, progress=False
    )
    return out


def _assert_every_phoneme_has_frames(dataset_dir, vocab):
    for split in ("train", "heldout"):
        src = pipeline.open_split(dataset_dir, split)
        lengths = pipeline.frame_lengths(dataset_dir, split)
        for i in range(len(src)):
            ex = src[i]
            assert pipeline.check_example(ex) == lengths[i]  # durations sum to the frames
            spoken = np.asarray([is_phoneme(t) for t in vocab.decode(ex["phonemes"])])
            assert spoken.any() and np.all(ex["durations"][spoken] >= 1)  # none skipped


def test_boundaries_round_to_frames_and_sum_exactly():
    d = boundaries_to_durations([0.1, 0.1, 0.33, 0.5], n_frames=41)
    assert d.tolist() == [8, 0, 18, 15] and d.sum() == 41
    assert boundaries_to_durations([0.2, 0.19, 0.4], 32).min() >= 0  # never negative


def test_embedded_corpus_prepares_with_exact_durations(tmp_path, tiny_corpus):
    result = prepare_corpus(
        tiny_corpus,
        tmp_path,
        name="tiny",
        durations="exact",
        pitch_method="dio",
        num_workers=1,
        progress=False,
    )
    card = result.card
    assert set(card["splits"]) == {"train", "heldout"}
    assert card["splits"]["train"]["utterances"] == 6 and card["splits"]["heldout"]["speakers"] == 1
    assert card["durations_source"] == {"exact timings": 9}
    stats = card["duration_stats"]  # exact espeak timings: phonemes of several frames, few pauses
    assert stats["phoneme_median_frames"] >= 3 and stats["phoneme_one_frame_share"] < 0.1
    assert 0.0 < stats["pause_frame_share"] < 0.5
    for split in ("train", "heldout"):
        src = pipeline.open_split(result.dataset_dir, split)
        lengths = pipeline.frame_lengths(result.dataset_dir, split)
        for i in range(len(src)):
            ex = src[i]
            assert pipeline.check_example(ex) == lengths[i]
            assert ex["phonemes"][0] == ex["phonemes"][-1] == 2  # <sil> at both ends
    for f in ("vocab.json", "speakers.json", "card.md", "lengths.png", "rejected.tsv"):
        assert (result.dataset_dir / f).exists(), f
    # Running again with the same options reuses the prepared dataset (other options are
    # refused: tests/unit/data/test_prepare_faults.py).
    again = prepare_corpus(
        tiny_corpus, tmp_path, name="tiny", durations="exact", pitch_method="dio", progress=False
    )
    assert again.card == json.loads((result.dataset_dir / "card.json").read_text())


def test_aligner_durations_on_a_corpus_with_exact_timings_are_scored_against_them(
    tmp_path, tiny_corpus
):
    """``durations="aligner"`` (``launch/quickstart.py --durations=aligner``) aligns even an
    utterance that ships exact timings, and the card says how far the aligner is from them."""
    result = prepare_corpus(
        tiny_corpus, tmp_path, name="aligned", durations="aligner", aligner="builtin",
        aligner_preset="smoke",
        aligner_steps=8, pitch_method="dio", num_workers=1, progress=False,
    )  # fmt: skip
    card, vocab = result.card, default_vocab()
    assert card["durations_source"] == {"built-in aligner": 9}
    scored = card["aligner"]["boundary_error_ms"]
    assert scored["boundaries"] > 9 * 5  # every inner boundary of every utterance
    assert 0.0 <= scored["median"] <= scored["p90"] and 0.0 <= scored["within_25ms"] <= 1.0
    assert (tmp_path / "_work" / "aligned" / "alignment.png").exists()
    # per-split figures, so that one sub-corpus the aligner fails on cannot hide in the pool
    assert set(card["duration_stats_by_split"]) == {"train", "heldout"}
    assert set(card["aligner"]["confidence_by_split"]) == {"train", "heldout"}
    for split, conf in card["aligner"]["confidence_by_split"].items():
        assert conf < 0.0, split  # a mean log-prob
        assert card["duration_stats_by_split"][split]["phoneme_median_frames"] >= 1
    _assert_every_phoneme_has_frames(result.dataset_dir, vocab)


def test_pocketsphinx_aligner_durations_are_scored_and_valid(tmp_path, tiny_corpus):
    """``aligner="pocketsphinx"`` (the default where it is installed): every utterance aligned
    by the pretrained model, scored against the exact timings, durations valid."""
    pytest.importorskip("pocketsphinx")
    result = prepare_corpus(
        tiny_corpus, tmp_path, name="sphinx", durations="aligner", aligner="pocketsphinx",
        pitch_method="dio", num_workers=1, progress=False,
    )  # fmt: skip
    card, vocab = result.card, default_vocab()
    assert card["durations_source"] == {"pocketsphinx": 9}
    scored = card["aligner"]["boundary_error_ms"]
    # espeak-ng speech is far from what the model was trained on, yet the boundaries are close
    # (the embedded corpus's 480 utterances: median 12.5 ms, 74% within 25 ms)
    assert scored["boundaries"] > 9 * 5 and scored["median"] <= 25.0, scored
    assert scored["within_25ms"] >= 0.5, scored
    assert set(card["aligner"]["phone_match_by_split"]) == {"train", "heldout"}
    assert min(card["aligner"]["phone_match_by_split"].values()) > 0.8
    assert (tmp_path / "_work" / "sphinx" / "alignment.png").exists()
    _assert_every_phoneme_has_frames(result.dataset_dir, vocab)


def test_edge_silence_is_cut_on_the_frame_grid(tmp_path, tiny_corpus):
    """``max_edge_silence``: the edge <sil> tokens lose frames, audio and pitch lose the same
    frames, and everything between is untouched."""
    kw = dict(durations="exact", pitch_method="dio", num_workers=1, progress=False)
    full = prepare_corpus(tiny_corpus, tmp_path, name="full", **kw)
    cut = prepare_corpus(tiny_corpus, tmp_path, name="cut", max_edge_silence=0.05, **kw)
    keep = 4  # 0.05 s at 80 frames per second
    hop = 200
    trimmed = 0
    for split in ("train", "heldout"):
        a, b = (
            pipeline.open_split(full.dataset_dir, split),
            pipeline.open_split(cut.dataset_dir, split),
        )
        for i in range(len(a)):
            x, y = a[i], b[i]
            assert x["id"] == y["id"]
            head = int(x["durations"][0]) - int(y["durations"][0])
            tail = int(x["durations"][-1]) - int(y["durations"][-1])
            assert y["durations"][0] == min(x["durations"][0], keep)
            assert y["durations"][-1] == min(x["durations"][-1], keep)
            np.testing.assert_array_equal(x["durations"][1:-1], y["durations"][1:-1])
            end = len(x["log_f0"]) - tail
            np.testing.assert_array_equal(y["log_f0"], x["log_f0"][head:end])
            np.testing.assert_array_equal(y["audio"], x["audio"][head * hop : end * hop])
            assert pipeline.check_example(y) == int(y["durations"].sum())
            trimmed += head + tail
    assert trimmed > 0  # the embedded corpus has edge silences longer than 50 ms
    with pytest.raises(ValueError, match="max_edge_silence"):
        prepare_corpus(tiny_corpus, tmp_path, name="neg", max_edge_silence=-1.0, **kw)


def test_unknown_aligner_is_refused(tmp_path, tiny_corpus):
    with pytest.raises(ValueError, match="aligner='nope'"):
        prepare_corpus(tiny_corpus, tmp_path, name="x", aligner="nope", progress=False)


def test_bad_utterances_are_reported_and_skipped(tmp_path, tiny_corpus):
    corpus = tmp_path / "kaldi"
    spk = corpus / "spk1"
    spk.mkdir(parents=True)
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    voice = 0.3 * np.sin(2 * np.pi * 150 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    sf.write(spk / "good.flac", voice, 16000)
    stereo8k = np.stack([voice[::2], voice[::2]], 1) + 0.01 * rng.normal(size=(16000, 2))
    sf.write(spk / "stereo8k.wav", stereo8k, 8000)
    (spk / "corrupt.flac").write_bytes(b"not audio at all")
    sf.write(spk / "empty.flac", np.zeros(0), 16000)
    sf.write(spk / "punct.flac", voice, 16000)
    sf.write(spk / "short.flac", voice[:1000], 16000)
    texts = {
        "good": "Hello there, my friend.",
        "stereo8k": "Eight kilohertz stereo input.",
        "corrupt": "This file is corrupt.",
        "empty": "Nothing in here.",
        "punct": "?!... --",
        "short": "Too short to use.",
    }
    (corpus / "text").write_text("".join(f"{k} {v}\n" for k, v in texts.items()))
    (corpus / "utt2spk").write_text("".join(f"{k} spk1\n" for k in texts))
    (corpus / "wav.scp").write_text(
        "".join(f"{k} spk1/{k}.{'wav' if k == 'stereo8k' else 'flac'}\n" for k in texts)
    )
    # The aligner is not under test here: "exact" durations reject the utterances that have
    # none, so the survivors are only those with exact timings (none): the run must fail with a
    # summary, after listing every bad utterance with its own reason.
    with pytest.raises(ValueError, match="survived"):
        prepare_corpus(
            corpus,
            tmp_path / "out",
            name="bad",
            durations="exact",
            progress=False,
            num_workers=1,
            pitch_method="dio",
        )
    cached = {p.stem for p in (tmp_path / "out" / "_work" / "bad").rglob("*.npz")}
    assert cached == {"good", "stereo8k"}  # 8 kHz stereo is read, resampled and mixed down


def test_bad_inputs_are_listed_with_reasons_and_the_rest_prepared(tmp_path, tiny_corpus):
    """A real corpus with bad utterances: each is listed in rejected.tsv with its reason."""
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    spk_dir = next(p for p in (corpus / "train").iterdir() if p.is_dir())
    spk = spk_dir.name
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    voice = 0.3 * np.sin(2 * np.pi * 150 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    (spk_dir / "corrupt.wav").write_bytes(b"not audio at all")
    sf.write(spk_dir / "empty.wav", np.zeros(0), 16000)
    sf.write(spk_dir / "punct.wav", voice, 16000)
    sf.write(spk_dir / "short.wav", voice[:1000], 16000)
    sf.write(spk_dir / "unknown.wav", voice, 16000)
    stereo = np.stack([voice[::2], voice[::2]], 1) + 0.01 * rng.normal(size=(16000, 2))
    sf.write(spk_dir / "stereo8k.wav", stereo, 8000)
    bad = {
        "corrupt": "This file is corrupt.",
        "empty": "Nothing in here.",
        "punct": "?!... --",
        "short": "Too short to use.",
        "unknown": "\u4f60\u597d",
        "stereo8k": "Eight k.",
    }
    with (corpus / "train" / "text").open("a") as f:
        f.write("".join(f"{k} {v}\n" for k, v in bad.items()))
    with (corpus / "train" / "utt2spk").open("a") as f:
        f.write("".join(f"{k} {spk}\n" for k in bad))
    result = prepare_corpus(
        corpus,
        tmp_path / "out",
        name="bad",
        durations="exact",
        progress=False,
        num_workers=1,
        pitch_method="dio",
    )
    rows = (result.dataset_dir / "rejected.tsv").read_text().splitlines()[1:]
    reasons = {r.split("\t")[1]: r.split("\t")[2] for r in rows}
    assert set(reasons) == set(bad), reasons
    assert "unreadable" in reasons["corrupt"] or "corrupt" in reasons["corrupt"].lower()
    assert "empty" in reasons["empty"] or "short" in reasons["empty"]
    assert "pronounceable" in reasons["punct"]
    assert "short" in reasons["short"]
    assert "unknown" in reasons["unknown"] or "pronounceable" in reasons["unknown"]
    # 8 kHz stereo audio is read fine; it is rejected only for lacking exact timings.
    assert "exact timings" in reasons["stereo8k"]
    assert result.card["splits"]["train"]["utterances"] == 6  # the good ones all made it
    assert result.card["rejected_total"] == len(bad)
