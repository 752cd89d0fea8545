"""align/sphinx.py: pocketsphinx forced alignment mapped onto our espeak-ng tokens."""

from __future__ import annotations

import numpy as np
import pytest

from naturalspeech2_jax.align import sphinx
from naturalspeech2_jax.align.viterbi import AlignmentError
from naturalspeech2_jax.text.g2p import is_phoneme, phonemize

# Hello, world!  ->  <sil> h ə l ˈoʊ , w ˈɜː l d ! <sil>
HELLO = ["<sil>", "h", "ə", "l", "ˈoʊ", ",", "w", "ˈɜː", "l", "d", "!", "<sil>"]
SPOKEN = [is_phoneme(t) for t in HELLO]


def _segs(*spans):
    return [sphinx.Segment(p, s, e) for p, s, e in spans]


def test_tokens_become_arpabet_units():
    assert sphinx.token_units("ˈɑːɹ") == ("AA", "R")
    assert sphinx.token_units("tʃ") == ("CH",)
    assert sphinx.token_units("ˌoʊ") == ("OW",)
    assert sphinx.token_units("ɾ") == ("T",)
    assert sphinx.token_units("aɪɚ") == ("AY", "ER")
    assert sphinx.token_units("Q") == ("?",)  # unknown symbols still hold a place


def test_phone_string_alignment_matches_substitutes_and_inserts():
    assert sphinx.align_phone_strings(["HH", "AH", "L", "OW"], ["HH", "AH", "L", "OW"]) == [
        0, 1, 2, 3,
    ]  # fmt: skip
    # CMUdict's full vowel for espeak's reduced one is a substitution, not a gap
    assert sphinx.align_phone_strings(["T", "AH"], ["T", "UW"]) == [0, 1]
    # an extra phone in the middle matches nothing
    assert sphinx.align_phone_strings(["K", "AE", "T"], ["K", "AE", "N", "T"]) == [0, 1, -1, 2]


def test_segments_map_to_token_durations_with_pauses_on_optional_tokens():
    segs = _segs(
        ("SIL", 0.0, 0.3), ("HH", 0.3, 0.35), ("AH", 0.35, 0.4), ("L", 0.4, 0.5),
        ("OW", 0.5, 0.7), ("SIL", 0.7, 0.9), ("W", 0.9, 1.0), ("ER", 1.0, 1.2),
        ("L", 1.2, 1.3), ("D", 1.3, 1.35), ("SIL", 1.35, 1.6),
    )  # fmt: skip
    d, stats = sphinx.durations_from_segments(HELLO, SPOKEN, segs, n_frames=128, frame_rate=80.0)
    # leading silence -> first <sil>; the pause after "hello" -> ","; the tail -> last <sil>
    assert d.tolist() == [24, 4, 4, 8, 16, 16, 8, 16, 8, 4, 0, 20]
    assert stats["exact_match_share"] == 1.0 and stats["phones"] == 8


def test_pause_without_optional_token_and_missing_phones_still_give_valid_durations():
    # no pause at the comma; a silence inside "world" (between L and D) with no optional token
    # there; pocketsphinx skipped the AH of "hello" and added a stray phone after OW
    segs = _segs(
        ("SIL", 0.0, 0.1), ("HH", 0.1, 0.2), ("L", 0.2, 0.3), ("OW", 0.3, 0.5),
        ("N", 0.5, 0.55), ("W", 0.55, 0.6), ("ER", 0.6, 0.8), ("L", 0.8, 0.9),
        ("SIL", 0.9, 1.0), ("D", 1.0, 1.1), ("SIL", 1.1, 1.2),
    )  # fmt: skip
    d, _ = sphinx.durations_from_segments(HELLO, SPOKEN, segs, n_frames=96, frame_rate=80.0)
    assert int(d.sum()) == 96
    assert np.all(d[np.asarray(SPOKEN)] >= 1)  # the unmatched ə still takes a frame
    tok = dict(enumerate(d.tolist()))
    assert tok[5] == 0  # "," took no pause: there was none
    assert tok[8] == 16  # the silence inside "world" lengthened the l before it (0.8-1.0 s)
    assert tok[4] == 20  # the stray N (0.5-0.55 s) went to the oʊ before it


def test_durations_reject_transcripts_that_cannot_fit():
    segs = _segs(("HH", 0.0, 0.05))
    with pytest.raises(AlignmentError, match="cannot fit"):
        sphinx.durations_from_segments(HELLO, SPOKEN, segs, n_frames=5, frame_rate=80.0)
    with pytest.raises(AlignmentError, match="no phones"):
        sphinx.durations_from_segments(HELLO, SPOKEN, _segs(("SIL", 0, 1)), 80, 80.0)


def _consonant_and_vowel_frames(tokens, durations):
    vowels = set("aeiouæɑɒɔəɐɛɜɚɪʊʌᵻʉ")
    cons, vow = [], []
    for t, d in zip(tokens, durations, strict=True):
        if is_phoneme(t):
            (vow if any(c in vowels for c in t) else cons).append(int(d))
    return np.asarray(cons), np.asarray(vow)


@pytest.mark.shared_data
def test_pocketsphinx_aligns_unseen_accented_speakers(shared_data):
    """What the module is for: speechocean762's Mandarin-L1 speakers, on which the built-in
    aligner's emissions were no better than uniform (74-77% one-frame consonants)."""
    pytest.importorskip("pocketsphinx")
    from naturalspeech2_jax.audio.io import load_audio

    root = shared_data / "speechocean762_adult" / "dev"
    lines = (root / "text").read_text().splitlines()[::40][:8]
    aligner = sphinx.SphinxAligner()
    cons_all, vow_all, match = [], [], []
    for line in lines:
        utt, text = line.split(" ", 1)
        path = next(root.glob(f"*/{utt}.flac"))
        wav = load_audio(path, 16_000)
        pcm = (np.clip(wav, -1, 1) * 32767).astype(np.int16)
        n_frames = len(pcm) // 200
        tokens = phonemize(text)
        d, stats = aligner.align(
            pcm[: n_frames * 200], sphinx.transcript_words(text), tokens,
            [is_phoneme(t) for t in tokens], n_frames, 80.0, sphinx.espeak_pronunciation,
        )  # fmt: skip
        assert int(d.sum()) == n_frames
        c, v = _consonant_and_vowel_frames(tokens, d)
        cons_all.append(c)
        vow_all.append(v)
        match.append(stats["exact_match_share"])
    cons, vow = np.concatenate(cons_all), np.concatenate(vow_all)
    assert np.median(cons) >= 4 and np.mean(cons <= 1) < 0.05, (np.median(cons), cons)
    assert np.median(vow) >= 5
    assert np.mean(match) > 0.85  # its phones are, mostly, our phonemes


def test_a_decoder_that_cannot_finish_an_utterance_rejects_that_utterance():
    """pocketsphinx's bare RuntimeError from end_utt (seen on a 17 s librispeech_tc100 reading)
    becomes this utterance's AlignmentError, which preparation reports and skips."""

    class Stuck:
        def set_align_text(self, text):
            pass

        def start_utt(self):
            pass

        def process_raw(self, raw, full_utt):
            pass

        def end_utt(self):
            raise RuntimeError("Failed to stop utterance processing")

    with pytest.raises(AlignmentError, match="could not decode the utterance .Failed to stop"):
        sphinx.SphinxAligner._segments(Stuck(), np.zeros(1600, np.int16), ["hello"])
