"""Tests for naturalspeech2_jax.align.textgrid: parsing both Praat formats and frame durations."""

from __future__ import annotations

import numpy as np
import pytest

from naturalspeech2_jax import HOP_LENGTH, SAMPLE_RATE
from naturalspeech2_jax.align.textgrid import (
    Interval,
    TextGridError,
    find_phone_tier,
    intervals_to_durations,
    parse_textgrid,
    read_textgrid,
    textgrid_to_durations,
)

# MFA-style long format: words + phones tiers, empty-label pauses, a quote inside a label.
LONG = """File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 1.0
tiers? <exists>
size = 3
item []:
    item [1]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 1.0
        intervals: size = 3
        intervals [1]:
            xmin = 0
            xmax = 0.1
            text = ""
        intervals [2]:
            xmin = 0.1
            xmax = 0.83
            text = "a""b"
        intervals [3]:
            xmin = 0.83
            xmax = 1.0
            text = ""
    item [2]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 1.0
        intervals: size = 6
        intervals [1]:
            xmin = 0
            xmax = 0.1
            text = ""
        intervals [2]:
            xmin = 0.1
            xmax = 0.23
            text = "S"
        intervals [3]:
            xmin = 0.23
            xmax = 0.41
            text = "EY1"
        intervals [4]:
            xmin = 0.41
            xmax = 0.52
            text = "HH"
        intervals [5]:
            xmin = 0.52
            xmax = 0.83
            text = "AY1"
        intervals [6]:
            xmin = 0.83
            xmax = 1.0
            text = "   "
    item [3]:
        class = "TextTier"
        name = "events"
        xmin = 0
        xmax = 1.0
        points: size = 1
        points [1]:
            number = 0.5
            mark = "click"
"""

# The same grid in Praat's short format (with a comment line).
SHORT = """File type = "ooTextFile"
Object class = "TextGrid"

0
1.0
<exists>
2
"IntervalTier"
"words"
0
1.0
3
0
0.1
""
0.1
0.83
"a""b"
0.83
1.0
""
"IntervalTier"
"phones"
0
1.0
6
0
0.1
""
0.1
0.23
"S"
! a comment Praat allows
0.23
0.41
"EY1"
0.41
0.52
"HH"
0.52
0.83
"AY1"
0.83
1.0
"   "
"""


def test_long_and_short_formats_agree():
    long_tg, short_tg = parse_textgrid(LONG), parse_textgrid(SHORT)
    assert long_tg.tier_names == ["words", "phones", "events"]
    assert short_tg.tier_names == ["words", "phones"]
    for tg in (long_tg, short_tg):
        assert (tg.xmin, tg.xmax) == (0.0, 1.0)
        assert tg.tier("words").intervals[1].label == 'a"b'
        assert find_phone_tier(tg).intervals == long_tg.tier("phones").intervals
    assert long_tg.tier("events").kind == "TextTier"
    assert long_tg.tier("events").intervals == (Interval(0.5, 0.5, "click"),)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-8-sig"])
def test_read_file_encodings(tmp_path, encoding):
    path = tmp_path / "a.TextGrid"
    path.write_text(LONG.replace("HH", "ɦ"), encoding=encoding)
    tg = read_textgrid(path)
    assert [iv.label for iv in tg.tier("phones").intervals][3] == "ɦ"


def test_durations_sum_and_rounding():
    labels, dur = textgrid_to_durations(parse_textgrid(LONG), n_frames=80)
    assert labels == ["sil", "S", "EY1", "HH", "AY1", "sil"]
    assert dur.dtype == np.int32 and dur.sum() == 80
    # Boundaries at 0.1/0.23/0.41/0.52/0.83 s = 8/18.4/32.8/41.6/66.4 frames -> 8/18/33/42/66.
    np.testing.assert_array_equal(dur, [8, 10, 15, 9, 24, 14])


def test_no_error_accumulation():
    # 100 phones of 0.0181 s (1.448 frames each): rounding each duration would give 1s and drift
    # by 45 frames; rounding boundaries keeps every boundary within half a frame.
    step = 0.0181
    ivs = [Interval(i * step, (i + 1) * step, f"p{i}") for i in range(100)]
    n_frames = int(np.ceil(100 * step * SAMPLE_RATE / HOP_LENGTH))
    _, dur = intervals_to_durations(ivs, n_frames)
    assert dur.sum() == n_frames
    true_bounds = np.arange(1, 100) * step * SAMPLE_RATE / HOP_LENGTH
    assert np.max(np.abs(np.cumsum(dur)[:-1] - true_bounds)) <= 0.5 + 1e-9


def test_audio_length_mismatch_is_absorbed_and_gaps_are_silence():
    ivs = [Interval(0.05, 0.2, "a"), Interval(0.3, 0.5, "b")]  # gap 0.2-0.3, tier ends at 0.5
    labels, dur = intervals_to_durations(ivs, n_frames=42, tier_range=(0.0, 0.52))
    assert labels == ["sil", "a", "sil", "b", "sil"]
    assert dur.sum() == 42 and dur[0] == 4  # 0.05 s = 4 frames
    labels, dur = intervals_to_durations(ivs, n_frames=39)  # audio slightly shorter
    assert labels == ["a", "sil", "b"] and dur.sum() == 39


def test_min_frames_and_merge_silence():
    ivs = [
        Interval(0.0, 0.1, ""),
        Interval(0.1, 0.102, "sp"),
        Interval(0.102, 0.104, "T"),
        Interval(0.104, 0.3, ""),
        Interval(0.3, 0.4, ""),
    ]
    labels, dur = intervals_to_durations(ivs, 32)
    assert 0 in dur and dur.sum() == 32
    labels, dur = intervals_to_durations(ivs, 32, min_frames=1, merge_silence=True)
    assert labels == ["sil", "sp", "T", "sil"]
    assert dur.min() >= 1 and dur.sum() == 32
    with pytest.raises(TextGridError):
        intervals_to_durations(ivs, 3, min_frames=1)


def test_offset_and_segments():
    ivs = [Interval(10.0, 10.5, "a"), Interval(10.5, 11.0, "b")]
    labels, dur = intervals_to_durations(ivs, 80, offset=10.0)
    np.testing.assert_array_equal(dur, [40, 40])


def test_errors():
    with pytest.raises(TextGridError, match="not a Praat"):
        parse_textgrid('File type = "something"\n')
    with pytest.raises(TextGridError, match="truncated"):
        parse_textgrid(LONG[: len(LONG) // 2])
    with pytest.raises(TextGridError, match="binary"):
        parse_textgrid("ooBinaryFile\x00\x01")
    with pytest.raises(TextGridError, match="no phone tier"):
        find_phone_tier(parse_textgrid(LONG.replace('"phones"', '"segments"')))
    with pytest.raises(TextGridError, match="wrong file"):
        textgrid_to_durations(parse_textgrid(LONG), n_frames=400)
    with pytest.raises(TextGridError, match="cannot be read"):
        read_textgrid("/nonexistent/x.TextGrid")


def test_mfa_multispeaker_tier_names():
    tg = parse_textgrid(
        LONG.replace('"phones"', '"spk1 - phones"').replace('"words"', '"spk1 - words"')
    )
    assert find_phone_tier(tg).name == "spk1 - phones"
