"""launch/export.py (``inference/export.py``) on the quickstart's smoke runs (the session's
``smoke_pipeline``): the exported folder synthesises and encodes exactly as the runs do, in
bfloat16 it is smaller and still speaks, and a bad folder or bad flags fail with one sentence."""

from __future__ import annotations

import json
import pathlib
import shutil

import jax
import numpy as np
import pytest
from etils import epath
from flax import nnx

from naturalspeech2_jax.audio.io import load_audio
from naturalspeech2_jax.inference import Synthesizer, export, exported
from naturalspeech2_jax.inference.codec import Codec
from tests.helpers import SYNTH_STEPS as STEPS
from tests.helpers import load_script

pytestmark = pytest.mark.slow  # the session's quickstart (smoke_pipeline): minutes

TEXT = "Hello there, my friend."


@pytest.fixture(scope="module")
def f32(smoke_pipeline, tmp_path_factory) -> export.ExportResult:
    return export.export_model(smoke_pipeline / "ns2", tmp_path_factory.mktemp("export") / "f32")


@pytest.fixture(scope="module")
def bf16(smoke_pipeline, tmp_path_factory) -> export.ExportResult:
    out = tmp_path_factory.mktemp("export") / "bf16"
    return export.export_model(smoke_pipeline / "ns2", out, dtype="bfloat16")


def folder_bytes(path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in path.rglob("*") if p.is_file()}


def test_float32_export_synthesizes_the_same_waveform(synth, prompt, f32):
    loaded = Synthesizer.from_checkpoint(f32.out_dir)
    assert loaded.checkpoint == f32.out_dir and loaded.step == synth.step
    assert loaded.codec.workdir.endswith("/codec")
    want = synth.synthesize(TEXT, prompt, steps=STEPS, seed=7)
    got = loaded.synthesize(TEXT, prompt, steps=STEPS, seed=7)
    np.testing.assert_array_equal(got.durations, want.durations)
    np.testing.assert_array_equal(got.wav, want.wav)


def test_exported_codec_encodes_identically(smoke_pipeline, prompt, f32):
    run = Codec.from_checkpoint(smoke_pipeline / "codec")
    wav = load_audio(prompt)
    codes = run.encode(wav)
    for path in (f32.out_dir, f"{f32.out_dir}/codec"):
        codec = Codec.from_checkpoint(path)
        assert codec.step == run.step
        np.testing.assert_array_equal(codec.encode(wav), codes)
        np.testing.assert_array_equal(codec.codebooks, run.codebooks)
        np.testing.assert_array_equal(codec.decode_codes(codes), run.decode_codes(codes))
        assert not np.any(codec.model.quantizer.embed_sum[...])  # training-only: left out
    with pytest.raises(exported.ExportedModelError, match="ns2 part"):
        Codec.from_checkpoint(f"{f32.out_dir}/ns2")


def test_model_json_records_sources_files_and_sizes(smoke_pipeline, f32):
    root = pathlib.Path(f32.out_dir)
    manifest = exported.read_manifest(root)
    assert manifest["dtype"] == "float32"
    ns2, codec = manifest["parts"]["ns2"], manifest["parts"]["codec"]
    assert ns2["source"] == str(smoke_pipeline / "ns2") and ns2["weights"] in ("ema", "params")
    assert codec["source"] == str(smoke_pipeline / "codec")
    assert ns2["parameters"]["total"] == f32.parameters["ns2"] > 0
    on_disk = folder_bytes(root)
    assert manifest["size_bytes"] == f32.total_bytes == sum(on_disk.values())
    assert f32.files == on_disk
    assert set(on_disk) == {"model.json", "vocab.json"} | {
        f"{p}/{f}" for p in ("ns2", "codec") for f in ("config.json", "params.npz")
    } | {"ns2/latent_stats.npz", "codec/rest.npz", "codec/latent_stats.npz"}
    zeros = manifest["files"]["codec/rest.npz"]["zeros"]
    assert zeros == ["quantizer/embed_sum", "quantizer/cluster_size"]
    for rel, record in manifest["files"].items():
        assert record["sha256"] == exported.sha256(epath.Path(root / rel))
    # Parameters only: the float32 weights are 4 bytes each (no optimizer moments beside them).
    for part in ("ns2", "codec"):
        weights = on_disk[f"{part}/params.npz"]
        assert 4 * f32.parameters[part] <= weights < 4 * f32.parameters[part] * 1.1 + 50_000


def test_bfloat16_export_is_smaller_and_synthesizes(synth, prompt, f32, bf16):
    for part in ("ns2", "codec"):
        assert bf16.files[f"{part}/params.npz"] < 0.6 * f32.files[f"{part}/params.npz"]
    assert bf16.files["codec/rest.npz"] == f32.files["codec/rest.npz"]  # codebooks: float32
    assert bf16.total_bytes < f32.total_bytes
    loaded = Synthesizer.from_checkpoint(bf16.out_dir)
    params = jax.tree.leaves(nnx.state(loaded.model, nnx.Param))
    assert {str(p.dtype) for p in params} == {"float32"}  # cast back: same inference code
    out = loaded.synthesize(TEXT, prompt, steps=STEPS)
    assert np.all(np.isfinite(out.wav)) and len(out.wav) == out.durations.sum() * 200
    tokens = synth.phonemize(TEXT)
    durations = np.arange(len(tokens)) % 3 + 2
    a = synth.synthesize(phonemes=tokens, prompt_audio=prompt, durations=durations, steps=STEPS)
    b = loaded.synthesize(phonemes=tokens, prompt_audio=prompt, durations=durations, steps=STEPS)
    assert len(a.wav) == len(b.wav) and np.all(np.isfinite(b.wav))


def test_cli_writes_and_refuses_to_overwrite(smoke_pipeline, tmp_path, capsys):
    cli = load_script("export")
    out = tmp_path / "model"
    argv = ["--checkpoint", str(smoke_pipeline / "ns2"), "--out", str(out), "--dtype", "bfloat16"]
    assert cli.main(argv) == 0
    assert f"{out}: " in capsys.readouterr().out and exported.is_exported(out)
    assert cli.main(argv) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert cli.main([*argv, "--overwrite"]) == 0 and exported.is_exported(out)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folder left
    # --overwrite never replaces a folder that is not an export (a training run, by mistake).
    run = smoke_pipeline / "codec"
    assert cli.main([*argv[:2], "--out", str(run), "--overwrite"]) == 2
    assert "not an exported model" in capsys.readouterr().err and (run / "checkpoints").is_dir()


def test_cli_refuses_a_run_without_checkpoints(smoke_pipeline, tmp_path, capsys):
    cli = load_script("export")
    run = tmp_path / "untrained"
    run.mkdir()
    shutil.copy(smoke_pipeline / "ns2" / "config.json", run / "config.json")
    assert cli.main(["--checkpoint", str(run), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "holds no checkpoint" in err and err.count("\n") == 1
    assert cli.main(["--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "m")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_killed_export_leaves_no_folder(smoke_pipeline, tmp_path, monkeypatch):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(exported, "write_arrays", killed)
    with pytest.raises(KeyboardInterrupt):
        export.export_model(smoke_pipeline / "ns2", tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_folder_fails_with_one_sentence(f32, tmp_path):
    def damaged(edit) -> str:
        copy = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(f32.out_dir, copy)
        edit(copy)
        return str(copy)

    def truncate(p):
        data = (p / "ns2/params.npz").read_bytes()
        (p / "ns2/params.npz").write_bytes(data[: len(data) // 2])

    def edit_json(rel, change):
        def edit(p):
            data = json.loads((p / rel).read_text())
            change(data)
            (p / rel).write_text(json.dumps(data))

        return edit

    cases = [
        (Synthesizer, truncate, r"params\.npz does not match its sha256"),
        (Codec, lambda p: (p / "codec/params.npz").unlink(), r"params\.npz is missing"),
        (Codec, edit_json("model.json", lambda d: d.update(format_version=99)),
         "format version 99 but this code reads version 1"),
        (Synthesizer, edit_json("ns2/config.json", lambda d: d["model"].update(enc_filter=48)),
         "has shape .* in the model built from"),
    ]  # fmt: skip
    for loader, edit, message in cases:
        with pytest.raises(exported.ExportedModelError, match=message) as e:
            loader.from_checkpoint(damaged(edit))
        assert "\n" not in str(e.value) and str(e.value).endswith(".")
