"""Helpers shared by test modules of several folders: paths, configs and small synthetic data.

Fixtures live in ``tests/conftest.py``; this module holds what tests call directly (import it as
``tests.helpers``: every folder of ``tests/`` is a package, so same-named test files in different
folders do not collide).
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("NS2_SHARED_DATA", REPO.parent / "shared" / "data"))
SR = 16_000


def load_config(name: str, preset: str = "smoke", **overrides):
    """``configs/<name>.py:<preset>`` as a ConfigDict with dotted-key overrides applied."""
    from configs.common import apply_overrides

    config = importlib.import_module(f"configs.{name}").get_config(preset)
    apply_overrides(config, overrides)
    return config


def load_script(name: str):
    """``launch/<name>.py`` as a module (the launch scripts are not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_cli", REPO / "launch" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------ data pipeline
def make_example(n_frames: int, n_tokens: int, seed: int = 0) -> dict:
    """A random prepared example (audio, phonemes, durations summing to the frames, pitch)."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, n_frames), n_tokens - 1, replace=False))
    durations = np.diff(np.concatenate([[0], cuts, [n_frames]])).astype(np.int32)
    return {
        "audio": rng.integers(-3000, 3000, n_frames * 200).astype(np.int16),
        "phonemes": rng.integers(1, 50, n_tokens).astype(np.int32),
        "durations": durations,
        "log_f0": rng.normal(5.0, 0.2, n_frames).astype(np.float32),
        "voiced": (rng.random(n_frames) > 0.3).astype(np.int8),
        "speaker": b"spk",
    }


# ------------------------------------------------------------------------------ codec
CODEC_TRAIN_STEPS = 12  # steps of the session's trained smoke codec (conftest.trained_codec)


def tone_example(n_frames: int, seed: int) -> dict:
    """A harmonic tone with vibrato and a loudness envelope: learnable, speech-like structure."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames * 200) / 16000
    f0 = 110 + 60 * rng.random() + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.6 + 0.4 * np.sin(2 * np.pi * t))
    cuts = np.sort(rng.choice(np.arange(1, n_frames), 3, replace=False))
    return {
        "id": f"u{seed}",
        "text": "a",
        "speaker": "spk",
        "speaker_id": 0,
        "audio": (0.25 * x * 32767).astype(np.int16),
        "phonemes": rng.integers(1, 40, 4).astype(np.int32),
        "durations": np.diff(np.concatenate([[0], cuts, [n_frames]])).astype(np.int32),
        "log_f0": np.log(f0[::200]).astype(np.float32),
        "voiced": np.ones(n_frames, np.int8),
    }


def metrics_of(workdir) -> list[dict]:
    """Every row of a run's metrics.jsonl."""
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------ NS2
CB_SHAPE = (4, 16, 16)  # quantizers, codes, latent dim of the fake codec of the NS2 tests


def fake_codes_dataset(root, seed=0) -> str:
    """Two splits of short utterances (speakers s0..s3 train, h0..h1 held out) with codes, as
    ``launch/codec.py encode-dataset`` writes them (codec.json, vocab.json, latent_stats.npz)."""
    from naturalspeech2_jax.data import tfds_builder

    rng = np.random.default_rng(seed)
    codes_dtype = tfds_builder.features(CB_SHAPE[0])["codes"].np_dtype

    def utterances(speakers, per_speaker):
        def gen():
            for s, spk in enumerate(speakers):
                for u in range(per_speaker):
                    n_tok = int(rng.integers(8, 16))
                    dur = rng.integers(0, 8, n_tok).astype(np.int32)
                    dur[0] = max(dur[0], 1)
                    n = int(dur.sum())
                    yield {
                        "id": f"{spk}-{u}",
                        "text": "a short test sentence",
                        "speaker": spk,
                        "speaker_id": np.int32(s),
                        "audio": (1000 * rng.normal(size=n * 200)).astype(np.int16),
                        "phonemes": rng.integers(1, 40, n_tok).astype(np.int32),
                        "durations": dur,
                        "log_f0": (5.0 + 0.2 * rng.normal(size=n)).astype(np.float32),
                        "voiced": (rng.random(n) > 0.3).astype(np.int8),
                        "codes": rng.integers(0, CB_SHAPE[1], (n, CB_SHAPE[0])).astype(codes_dtype),
                    }

        return gen

    out = tfds_builder.write_dataset(
        root,
        "fake_codes",
        {"train": utterances(["s0", "s1", "s2", "s3"], 4), "heldout": utterances(["h0", "h1"], 2)},
        num_quantizers=CB_SHAPE[0],
    )
    (out / "codec.json").write_text(json.dumps({"codec_checkpoint": "/fake/codec_run"}))
    (out / "vocab.json").write_text(json.dumps({"version": "test", "tokens": ["<pad>"] * 40}))
    with (out / "latent_stats.npz").open("wb") as f:
        np.savez(f, mean=np.full(CB_SHAPE[2], 0.1, np.float32), std=np.full(CB_SHAPE[2], 2.0))
    return str(out)


def ns2_config(dataset_dir, **kw):
    """``configs/diffusion.py:smoke`` on a fake codes dataset (the fake codec's shapes)."""
    base = {
        "data.dataset_dir": dataset_dir,
        "codec.num_quantizers": CB_SHAPE[0],
        "codec.codebook_size": CB_SHAPE[1],
        "codec.latent_dim": CB_SHAPE[2],
        "async_checkpoints": False,
    }
    base.update(kw)
    return load_config("diffusion", "smoke", **base)


# ------------------------------------------------------------------------------ evaluation
def speechlike(seconds: float = 3.0, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """Voiced 'syllables' (harmonics of a gliding F0, 4 Hz envelope, pauses) plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    pitch = f0 * (1.0 + 0.15 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = np.clip(np.sin(2 * np.pi * 2.0 * t), 0.0, None) ** 0.5
    wav = 0.3 * voiced * envelope + 0.003 * rng.standard_normal(t.size)
    return (0.5 * wav / np.max(np.abs(wav))).astype(np.float32)


def needs(*modules: str) -> None:
    """Skip the calling test unless every module is installed (the `eval` extra)."""
    import importlib.util

    import pytest

    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[eval]')")


# ------------------------------------------------------------------------------ singing
def write_scores(folder: pathlib.Path) -> None:
    """s.json, s.mid and s.musicxml: three small scores (2.25 s, 1.75 s and 2.0 s long)."""
    notes = [
        {"lyric": "twin", "pitch": "C4", "beats": 1}, {"lyric": "kle", "pitch": 60, "beats": 1},
        {"rest": True, "beats": 0.5}, {"lyric": "star", "pitch": "G4", "seconds": 0.6},
        {"lyric": "-", "pitch": "A4", "seconds": 0.4},
    ]  # fmt: skip
    (folder / "s.json").write_text(json.dumps({"tempo": 120, "notes": notes}))
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120)))
    for i, (lyric, pitch) in enumerate((("la", 60), ("li", 62), ("lo", 64))):
        track.append(mido.MetaMessage("lyrics", text=lyric, time=240 if i == 2 else 0))
        track.append(mido.Message("note_on", note=pitch, velocity=80, time=0))
        track.append(mido.Message("note_off", note=pitch, velocity=0, time=480))
    mid.save(str(folder / "s.mid"))
    xml = """<?xml version="1.0"?><score-partwise><part id="P1"><measure number="1">
      <attributes><divisions>2</divisions></attributes><sound tempo="60"/>
      <note><pitch><step>E</step><octave>4</octave></pitch><duration>2</duration>
        <lyric><text>hel</text></lyric></note>
      <note><pitch><step>F</step><alter>1</alter><octave>4</octave></pitch><duration>1</duration>
        <lyric><text>lo</text></lyric></note>
      <note><rest/><duration>1</duration></note></measure></part></score-partwise>"""
    (folder / "s.musicxml").write_text(xml)


def codec_train_cli(workdir: pathlib.Path, cache: pathlib.Path, *flags: str) -> None:
    """``launch/train.py --config=configs/codec.py:smoke`` in a one-device subprocess that shares
    the persistent XLA cache ``cache`` (the runs compile the same smoke programs)."""
    import subprocess
    import sys

    argv = [
        sys.executable,
        str(REPO / "launch" / "train.py"),
        f"--config={REPO / 'configs' / 'codec.py'}:smoke",
        f"--workdir={workdir}",
        "--config.num_devices=1",
        "--config.log_every=1",
        *flags,
    ]
    env = dict(
        os.environ,
        XLA_FLAGS="",
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
    )
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=workdir.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]


def run_local_processes(argv: list[str], count: int = 2, xla_flags: str = "") -> list[str]:
    """``argv`` as ``count`` processes of one JAX job on 127.0.0.1 (``NS2_DISTRIBUTED=1`` and
    ``NS2_COORDINATOR``/``NS2_NUM_PROCESSES``/``NS2_PROCESS_ID``, which
    ``parallel.maybe_initialize_distributed`` reads; CPU devices, gloo). Waits for all, asserts
    each exited 0 and returns their stdouts, process 0 first."""
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for i in range(count):
        env = dict(
            os.environ,
            JAX_PLATFORMS="cpu",
            XLA_FLAGS=xla_flags,
            NS2_DISTRIBUTED="1",
            NS2_COORDINATOR=f"127.0.0.1:{port}",
            NS2_NUM_PROCESSES=str(count),
            NS2_PROCESS_ID=str(i),
            # the processes import the package from this checkout, installed or not
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        )
        pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(subprocess.Popen(argv, env=env, **pipes))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outs]


def jit_build(ctor):
    """Construct an NNX module inside one jit (eager init compiles one kernel per tensor)."""
    import jax
    from flax import nnx

    graphdef, _ = nnx.split(nnx.eval_shape(ctor))
    return nnx.merge(graphdef, jax.jit(lambda: nnx.split(ctor())[1])())


SYNTH_STEPS = 2  # sampler steps in the inference tests: shapes and files are tested, not quality
