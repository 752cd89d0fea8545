"""Fault injection for the command lines other than synthesis and preparation: launch/sing.py,
convert.py, codec.py, evaluate.py and train.py given bad inputs. Each case asserts exit status 2,
one ``error: ...`` line on stderr naming the file or option (no traceback), and that nothing was
lost: an existing output file or run directory is left as it was. The voice commands check
their inputs before the checkpoint loads, so none is needed here (the one given does not
exist and must not be what the error names)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import REPO, SR, speechlike, write_scores

OLD_OUTPUT = b"an earlier result that a failed command must not touch"


@pytest.fixture
def files(tmp_path) -> dict[str, str]:
    """A good prompt and source, an existing output, and degenerate audio files."""
    voice = speechlike(3.0)
    paths = {
        "voice": tmp_path / "voice.wav",
        "silent": tmp_path / "silent.wav",
        "short": tmp_path / "short.wav",
        "long": tmp_path / "long.wav",
        "nan": tmp_path / "nan.wav",
        "text": tmp_path / "text.wav",
        "empty": tmp_path / "empty.wav",
        "out": tmp_path / "out.wav",
    }
    sf.write(paths["voice"], voice, SR)
    sf.write(paths["silent"], np.zeros(3 * SR), SR)
    sf.write(paths["short"], voice[: SR // 5], SR)
    sf.write(paths["long"], np.tile(voice, 20), SR)
    sf.write(paths["nan"], np.where(np.arange(len(voice)) == 7, np.nan, voice), SR,
             subtype="FLOAT")  # fmt: skip
    paths["text"].write_text("not audio at all\n" * 30)
    paths["empty"].write_bytes(b"")
    paths["out"].write_bytes(OLD_OUTPUT)
    return {k: str(v) for k, v in paths.items()}


def one_error_line(capsys) -> str:
    """The single stderr line of a failed command, without its ``error: `` prefix."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    assert "Traceback" not in err
    return lines[0][len("error: ") :]


def tree_digest(root: Path) -> str:
    """A digest of every file's path and content under ``root``."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------ sing
def _scores(folder: Path) -> dict[str, tuple[str, str]]:
    """name -> (score path, what the sentence says)."""
    write_scores(folder)
    cases = {
        "bad.json": ('{"tempo": 120, "notes": [', "is not valid JSON"),
        "list.json": ("[1, 2, 3]", 'needs a JSON object with a "notes" list'),
        "note.json": ('{"notes": [60]}', "note 0 is 60, not an object"),
        "beats.json": ('{"notes": [{"pitch": 60, "beats": -1}]}', "beats -1 is not a number > 0"),
        "words.json": ('{"notes": [{"pitch": 60, "seconds": "long"}]}', "seconds 'long' is not"),
        "tempo.json": ('{"tempo": 0, "notes": [{"pitch": 60, "beats": 1}]}', "tempo 0 is not"),
        "nan.json": ('{"notes": [{"pitch": NaN, "beats": 1}]}', "pitch nan is not a MIDI note"),
        "high.json": ('{"notes": [{"pitch": 200, "beats": 1}]}', "pitch 200 is not a MIDI note"),
        "name.json": ('{"notes": [{"pitch": "H9", "beats": 1}]}', "pitch 'H9' is neither"),
        "empty.json": ('{"notes": []}', "has no pitched note"),
        "rests.json": ('{"notes": [{"rest": true, "beats": 2}]}', "has no pitched note"),
        "long.json": (json.dumps({"notes": [{"pitch": 60, "lyric": "la", "beats": 1}] * 120}),
                      "lasts 60.0 s; one call sings at most 25.6 s"),
        "garbage.mid": ("MThd this is not MIDI", "cannot read"),
        "zero.mid": ("", "cannot read"),
        "garbage.musicxml": ("<score-partwise><part>", "cannot parse"),
        "octave.musicxml": ('<score-partwise><part id="P1"><measure><note><pitch><step>C</step>'
                            "<octave>high</octave></pitch><duration>1</duration></note></measure>"
                            "</part></score-partwise>", "holds a note or attribute that does not"),
        "latin1.json": (None, "is not valid JSON"),
        "score.txt": ("C4 D4 E4", "is not .json, .mid or .musicxml"),
    }  # fmt: skip
    out = {}
    for name, (content, says) in cases.items():
        path = folder / name
        if content is None:
            path.write_bytes(b'{"notes": [{"lyric": "caf\xe9"}]}')
        else:
            path.write_text(content)
        out[name] = (str(path), says)
    out["missing"] = (str(folder / "missing.json"), "does not exist")
    return out


def test_sing_refuses_scores_that_do_not_parse(tmp_path, files, capsys):
    from launch import sing

    no_run = str(tmp_path / "no_run")
    for name, (score, says) in _scores(tmp_path).items():
        argv = ["--checkpoint", no_run, "--score", score, "--prompt", files["voice"],
                "--out", files["out"]]  # fmt: skip
        assert sing.main(argv) == 2, name
        line = one_error_line(capsys)
        assert says in line and score in line and no_run not in line, (name, line)
    assert Path(files["out"]).read_bytes() == OLD_OUTPUT


def test_sing_refuses_bad_prompts_and_outputs_before_the_checkpoint(tmp_path, files, capsys):
    from launch import sing

    write_scores(tmp_path)
    no_run = str(tmp_path / "no_run")
    cases = {
        "silent": (files["silent"], "is silent"),
        "short": (files["short"], "lasts 0.20 s; pass at least 1 s"),
        "nan": (files["nan"], "NaN or infinite samples"),
        "text": (files["text"], "cannot be decoded"),
        "empty": (files["empty"], "is empty (0 bytes)"),
    }
    for name, (prompt, says) in cases.items():
        argv = ["--checkpoint", no_run, "--score", str(tmp_path / "s.mid"), "--prompt", prompt,
                "--out", files["out"]]  # fmt: skip
        assert sing.main(argv) == 2, name
        line = one_error_line(capsys)
        assert says in line and prompt in line, (name, line)
    for out, says in ((str(tmp_path), "is a folder"), (str(tmp_path / "o.mp4"), "audio format")):
        argv = ["--checkpoint", no_run, "--score", str(tmp_path / "s.json"), "--prompt",
                files["voice"], "--out", out]  # fmt: skip
        assert sing.main(argv) == 2
        assert says in one_error_line(capsys)
    assert Path(files["out"]).read_bytes() == OLD_OUTPUT


# ------------------------------------------------------------------------------ convert
def test_convert_refuses_bad_sources_prompts_and_text(tmp_path, files, capsys):
    from launch import convert

    no_run = str(tmp_path / "no_run")

    def argv(source=files["voice"], prompt=files["voice"], text="hello there", *extra):
        return ["--checkpoint", no_run, "--source", source, "--prompt", prompt, "--text", text,
                "--out", files["out"], *extra]  # fmt: skip

    cases = {
        "missing source": (argv(source=str(tmp_path / "nope.wav")), "nope.wav does not exist"),
        "silent source": (argv(source=files["silent"]), "silent.wav is silent; pass the speech"),
        "short source": (argv(source=files["short"]), "lasts 0.20 s; pass at least 0.5 s"),
        "long source": (argv(source=files["long"]), "lasts 60.0 s; voice conversion takes"),
        "nan source": (argv(source=files["nan"]), "NaN or infinite samples"),
        "text source": (argv(source=files["text"]), "text.wav cannot be decoded"),
        "missing prompt": (argv(prompt=str(tmp_path / "p.wav")), "p.wav does not exist"),
        "silent prompt": (argv(prompt=files["silent"]), "silent.wav is silent"),
        "short prompt": (argv(prompt=files["short"]), "lasts 0.20 s; pass at least 1 s"),
        "empty text": (argv(text="  "), "--text is empty"),
        "bad aligner": (argv(files["voice"], files["voice"], "hi", "--aligner", "nope"),
                        "--aligner nope is neither"),
        "steps": (argv(files["voice"], files["voice"], "hi", "--steps", "0"),
                  "--steps must be an integer >= 1"),
    }  # fmt: skip
    for name, (args, says) in cases.items():
        assert convert.main(args) == 2, name
        line = one_error_line(capsys)
        assert says in line and no_run not in line, (name, line)
    assert Path(files["out"]).read_bytes() == OLD_OUTPUT
    # Good inputs: the checkpoint is what is missing.
    assert convert.main(argv()) == 2
    assert "no_run does not exist" in one_error_line(capsys)


# ------------------------------------------------------------------------------ codec
def test_codec_cli_refuses_missing_inputs(tmp_path, files, capsys):
    from tests.helpers import load_script

    codec = load_script("codec")
    run = tmp_path / "run"
    run.mkdir()
    cases = {
        "missing dataset": (["encode-dataset", "--checkpoint", str(run), str(tmp_path / "nodata"),
                             str(tmp_path / "o" / "1.0.0")], "nodata does not exist"),
        "corpus as dataset": (["stats", "--checkpoint", str(tmp_path / "nocodec"), str(tmp_path)],
                              "nocodec does not exist"),
        "n_q": (["encode", "--checkpoint", str(run), files["voice"], "c.npy", "--n_q", "0"],
                "--n_q must be an integer >= 1, got 0"),
        "bucket": (["encode-dataset", "--checkpoint", str(run), str(tmp_path), "o",
                    "--bucket_frames", "-4"], "--bucket_frames must be"),
    }  # fmt: skip
    for name, (argv, says) in cases.items():
        assert codec.main(argv) == 2, name
        assert says in one_error_line(capsys), name
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ evaluate
def test_evaluate_cli_refuses_missing_folders_and_files(tmp_path, capsys):
    from tests.helpers import load_script

    evaluate = load_script("evaluate")
    out = str(tmp_path / "r.json")
    missing = str(tmp_path / "missing")
    (tmp_path / "not_a_report.json").write_text('{"summary": {}}')
    (tmp_path / "cut.json").write_text('{"records": [')
    cases = {
        "from_dir": (["tts", "--ground_truth_only", "--from_dir", missing, "--out", out],
                     "--from_dir"),
        "list": (["tts", "--ground_truth_only", "--list", missing + ".tsv", "--out", out],
                 "--list"),
        "from_prepared": (["tts", "--ground_truth_only", "--from_prepared", missing, "--out", out],
                          "--from_prepared"),
        "checkpoint": (["tts", "--checkpoint", missing, "--from_dir", str(tmp_path), "--out", out],
                       "--checkpoint"),
        "no checkpoint": (["tts", "--from_dir", str(tmp_path), "--out", out], "--checkpoint DIR"),
        "reference_dir": (["codec", "--reference_dir", missing, "--out", out], "--reference_dir"),
        "empty reference_dir": (["codec", "--reference_dir", str(tmp_path), "--out", out],
                                "holds no audio files"),
        "data": (["codec", "--data", missing, "--out", out], "--data"),
        "report": (["rescore", "--report", missing + ".json"], "--report"),
        "not a report": (["rescore", "--report", str(tmp_path / "not_a_report.json")],
                         "is not a tts report"),
        "cut report": (["rescore", "--report", str(tmp_path / "cut.json")], "is not a JSON report"),
    }  # fmt: skip
    for name, (argv, says) in cases.items():
        assert evaluate.main(argv) == 2, name
        line = one_error_line(capsys)
        assert says in line, (name, line)
        assert missing in line or name in ("no checkpoint", "empty reference_dir", "not a report",
                                           "cut report"), (name, line)  # fmt: skip
    assert not (tmp_path / "r.json").exists()


# ------------------------------------------------------------------------------ train
def _env() -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _train(workdir: Path, *flags: str, config="codec.py:smoke") -> str:
    """launch/train.py in a subprocess that must fail; its one error line."""
    argv = [sys.executable, str(REPO / "launch" / "train.py"), f"--workdir={workdir}", *flags]
    if config:
        argv.insert(2, f"--config={REPO / 'configs' / config}")
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=300,
                          cwd=workdir.parent)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_train_cli_refuses_bad_configs_in_one_line(tmp_path):
    """Flag and config errors (no JAX needed: fast), against an existing run that must stay as
    it was."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    (run / "config.json").write_text('{"task": "codec"}')
    before = tree_digest(run)
    cases = {
        ("--config.total_steps=abc",): "--config.total_steps=abc is not valid (invalid literal "
                                       "for int() with base 10: 'abc'); give an integer",
        ("--config.optim.lr=fast",): "--config.optim.lr=fast is not valid",
        ("--config.no_such_key=3",): "has no field 'no_such_key'",
        ("--config.optim.lrr=3",): "did you mean --config.optim.lr?",
        ("--config.total_steps=-5",): "--config.total_steps must be an integer >= 0, got -5",
        ("--config.batch_size=0",): "--config.batch_size must be an integer >= 1",
        ("--config.optim.lr=nan",): "--config.optim.lr must be > 0, got nan",
        ("--config.grad_accum=3",): "--config.batch_size=8 is not a multiple of "
                                    "--config.grad_accum=3",
        ("--config.total_steps",): "Missing value for flag --config.total_steps",
        ("extra_argument",): "unexpected arguments ['extra_argument']",
    }  # fmt: skip
    for flags, says in cases.items():
        assert says in _train(run, *flags), flags
    assert "unknown preset 'huge'; choose one of" in _train(run, config="codec.py:huge")
    assert "--config " in _train(run, config="nothing.py") and "does not exist" in _train(
        run, config="nothing.py"
    )
    assert "--config is required" in _train(run, config=None)
    assert tree_digest(run) == before


def test_train_cli_refuses_missing_or_unusable_data(tmp_path, files):
    run = tmp_path / "run"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "text").write_text("u1 hello\n")
    cases = {
        tmp_path / "nodata": "nodata does not exist",
        corpus: "is not a prepared dataset (no dataset_info.json)",
    }
    for dataset, says in cases.items():
        line = _train(run, f"--config.data.dataset_dir={dataset}")
        assert says in line, line
    assert not (run / "checkpoints").exists()
    assert "is a file, not a folder" in _train(Path(files["voice"]))


# ------------------------------------------------------------------------------ with a checkpoint
@pytest.mark.slow  # the session's quickstart (smoke_pipeline): minutes, shared
def test_long_text_shows_progress_and_a_minute_long_prompt_is_cut(
    smoke_pipeline, tmp_path, files, capsys, caplog
):
    """``--text`` of ten sentences: how many and in how many batches, then a bar over the
    batches, on stderr; a 60 s prompt is cut to the model's window with one warning."""
    from launch import synthesize
    from tests.helpers import SYNTH_STEPS

    text = " ".join(f"This is sentence number {n}." for n in range(1, 11))
    out = tmp_path / "long.wav"
    argv = ["--checkpoint", str(smoke_pipeline / "ns2"), "--steps", str(SYNTH_STEPS),
            "--no_plot", "--text", text, "--prompt", files["long"], "--out", str(out)]  # fmt: skip
    assert synthesize.main(argv) == 0
    captured = capsys.readouterr()
    assert "synthesizing 10 sentences in 2 batches of up to 8" in captured.err
    assert "2/2" in captured.err  # the bar's end
    warned = captured.err + "".join(r.getMessage() for r in caplog.records)
    assert "lasts 60.0 s; using its first" in warned
    assert "Traceback" not in captured.err
    assert sf.info(str(out)).duration > 1 and f"{out}: " in captured.out
