"""launch/synthesize.py on the quickstart's smoke checkpoint when some of its input is bad: a
--text_file line or a --manifest row that fails is reported with its line number while the others
are written (exit 2); a long unpunctuated sentence is split at word boundaries; the real-time
factor is printed."""

from __future__ import annotations

import json
import re

import pytest
import soundfile as sf

from tests.helpers import SYNTH_STEPS as STEPS

pytestmark = pytest.mark.slow  # the session's quickstart (smoke_pipeline): minutes

RTF = re.compile(r"^RTF \d+\.\d{3} \(\d+\.\d\d s of compute for \d+\.\d\d s of audio\)$", re.M)


def _synthesize(smoke_pipeline, *args: str) -> int:
    from launch import synthesize

    argv = ["--checkpoint", str(smoke_pipeline / "ns2"), "--steps", str(STEPS), "--no_plot"]
    return synthesize.main([*argv, *args])


def test_text_file_reports_the_bad_line_and_writes_the_good_ones(
    smoke_pipeline, prompt, tmp_path, capsys
):
    lines = tmp_path / "lines.txt"
    lines.write_text("Hello there.\n\n!!! ???\nGood bye now.\n", encoding="utf-8")
    out = tmp_path / "out"
    status = _synthesize(smoke_pipeline, "--text_file", str(lines), "--prompt", prompt,
                         "--out", str(out))  # fmt: skip
    captured = capsys.readouterr()
    assert status == 2, captured.err[-2000:]
    # Numbered among the non-empty lines, as before: line 3 (the second) failed.
    assert sorted(p.name for p in out.glob("*.wav")) == ["0000.wav", "0002.wav"]
    assert json.loads((out / "0002.alignment.json").read_text())["text"] == "Good bye now."
    assert re.search(rf"^{re.escape(str(lines))}:3: the text .* has nothing pronounceable",
                     captured.err, re.M)  # fmt: skip
    assert f"{out}: 2 utterances written, 1 failed" in captured.out
    assert RTF.search(captured.out)


def test_manifest_writes_the_good_rows_and_names_the_bad_one(
    smoke_pipeline, prompt, tmp_path, capsys
):
    rows = tmp_path / "rows.tsv"
    a, b, c = (tmp_path / "out" / f"{x}.wav" for x in "abc")
    rows.write_text(
        "text\tprompt\toutput\n"
        f"Hello there.\t{prompt}\t{a}\n"
        f"Where is it?\t{tmp_path / 'missing.wav'}\t{b}\n"
        f"Good bye now.\t\t{c}\n",  # empty prompt column: --prompt
        encoding="utf-8",
    )
    status = _synthesize(smoke_pipeline, "--manifest", str(rows), "--prompt", prompt)
    captured = capsys.readouterr()
    assert status == 2, captured.err[-2000:]
    assert a.exists() and c.exists() and not b.exists()
    assert sf.info(str(a)).samplerate == 16000
    assert re.search(rf"^{re.escape(str(rows))}:3: .*missing\.wav does not exist", captured.err,
                     re.M)  # fmt: skip
    assert f"{rows}: 2 rows written, 1 failed" in captured.out
    assert RTF.search(captured.out)


def test_long_unpunctuated_sentence_is_synthesised(smoke_pipeline, prompt, tmp_path, capsys):
    text = " ".join(["the quick brown fox jumps over the lazy dog and runs"] * 6 + ["away"] * 4)
    assert len(text.split()) == 70
    out = tmp_path / "long.wav"
    status = _synthesize(smoke_pipeline, "--text", text, "--prompt", prompt, "--out", str(out))
    captured = capsys.readouterr()
    assert status == 0, captured.err[-2000:]
    alignment = json.loads((tmp_path / "long.alignment.json").read_text())["alignment"]
    assert sum(a["phoneme"] == "<sil>" for a in alignment) >= 4  # two pieces at least, joined
    assert len(sf.read(str(out))[0]) == round(alignment[-1]["end"] * 16000)
    assert RTF.search(captured.out)


def test_steps_zero_is_refused_by_every_entry_point(smoke_pipeline, synth, prompt, tmp_path,
                                                    capsys):  # fmt: skip
    """With a real checkpoint too: one sentence and exit 2 (no buzz written), and the API's
    SynthesisError."""
    from naturalspeech2_jax.inference import SynthesisError

    out = tmp_path / "o.wav"
    for flags in (["--steps", "0"], ["--steps", "-1"], ["--speed", "0"]):
        argv = ["--text", "Hello there.", "--prompt", prompt, "--out", str(out), *flags]
        assert _synthesize(smoke_pipeline, *argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flags[0]} must be") and err.count("\n") == 1
        assert not out.exists()
    with pytest.raises(SynthesisError, match="steps must be an integer >= 1, got 0"):
        synth.synthesize("Hello there.", prompt, steps=0)
