"""``encode-dataset`` on several devices and several processes writes the dataset one device
writes: every feature of every example, in the same record order, with ``frames_<split>.npy``
matching the records and the same latent statistics.

The reference is the session's smoke codec (``trained_codec``) encoding ``codec_dataset`` on the
8 simulated CPU devices of this process; the two-process run is ``launch/codec.py encode-dataset
--distributed`` twice on 127.0.0.1 (4 devices each, gloo: ``tests.helpers.run_local_processes``).
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np
import pytest

from naturalspeech2_jax.data import pipeline
from naturalspeech2_jax.inference import codes_dataset
from naturalspeech2_jax.inference.codec import load_latent_stats
from tests.helpers import REPO, load_script, run_local_processes

pytestmark = pytest.mark.slow  # the session's trained codec (launch/train.py): minutes

SPLITS = ("train", "cathy", "heldout")


@pytest.fixture(scope="module")
def eight_devices(trained_codec, codec_dataset, tmp_path_factory):
    """The dataset encoded in this process on its 8 devices (the defaults: all of them)."""
    assert len(jax.local_devices()) == 8
    out = tmp_path_factory.mktemp("eight") / "coded" / "1.0.0"
    return codes_dataset.encode_dataset(trained_codec, codec_dataset, out)


def shard_lengths(out) -> dict[str, list[int]]:
    info = json.loads((out / "dataset_info.json").read_text())
    return {s["name"]: [int(n) for n in s["shardLengths"]] for s in info["splits"]}


def assert_same_dataset(ref, out) -> None:
    """Same examples in the same order (every feature equal), frames files that match the
    records, equal latent statistics (to float32 rounding of differently ordered sums)."""
    assert shard_lengths(ref).keys() == shard_lengths(out).keys() == set(SPLITS)
    for split in SPLITS:
        a, b = pipeline.open_split(ref, split), pipeline.open_split(out, split)
        assert len(a) == len(b) > 0
        frames = pipeline.frame_lengths(out, split)
        np.testing.assert_array_equal(frames, pipeline.frame_lengths(ref, split))
        for i in range(len(a)):
            x, y = a[i], b[i]
            assert x.keys() == y.keys() and "codes" in y and x["id"] == y["id"]
            for key in x:
                np.testing.assert_array_equal(y[key], x[key], err_msg=f"{split}[{i}] {key}")
            assert len(y["codes"]) == frames[i] == pipeline.check_example(y)
    s, t = load_latent_stats(ref), load_latent_stats(out)
    assert int(s["frames"]) == int(t["frames"]) == 8 * 8  # train + cathy frames
    for key in ("mean", "std"):
        np.testing.assert_allclose(t[key], s[key], rtol=1e-5, atol=1e-6)
    info = [json.loads((d / "codec.json").read_text()) for d in (ref, out)]
    assert info[0]["splits"] == info[1]["splits"]
    assert not (out / codes_dataset.PARTS).exists()


def test_one_device_writes_what_eight_write(
    trained_codec, codec_dataset, eight_devices, tmp_path, monkeypatch, capsys
):
    # Batches of 2 from windows of 3 utterances into shards of ~4 kB: several windows, batches
    # and shards per split (one of them empty) against one window and one shard on 8 devices.
    monkeypatch.setattr(codes_dataset, "SHARD_BYTES", 4000)
    out = tmp_path / "coded" / "1.0.0"
    codes_dataset.encode_dataset(
        trained_codec, codec_dataset, out, devices=1, batch_size=2, window=3
    )
    assert shard_lengths(eight_devices) == {"train": [5], "cathy": [3], "heldout": [2]}
    lengths = shard_lengths(out)
    assert len(lengths["train"]) > 1 and 0 in lengths["train"]
    assert_same_dataset(eight_devices, out)

    cli = load_script("codec")
    argv = ["encode-dataset", "--checkpoint", str(trained_codec), codec_dataset]
    assert cli.main([*argv, str(tmp_path / "x" / "1.0.0"), "--devices", "9"]) == 2
    assert "--devices must be in 1..8" in capsys.readouterr().err
    assert cli.main([*argv, str(tmp_path / "bad-name" / "1.0.0")]) == 2
    assert "must start with a letter" in capsys.readouterr().err


@pytest.mark.multiprocess
def test_two_processes_write_what_one_writes(trained_codec, codec_dataset, eight_devices, tmp_path):
    out = tmp_path / "coded" / "1.0.0"
    argv = [sys.executable, str(REPO / "launch" / "codec.py"), "encode-dataset", "--distributed"]
    argv += ["--checkpoint", str(trained_codec), codec_dataset, str(out)]
    stdouts = run_local_processes(argv, 2, "--xla_force_host_platform_device_count=4")
    # Process 0 prints OUT (gloo prints its connections on stdout too).
    assert stdouts[0].splitlines()[-1] == str(out) and str(out) not in stdouts[1]
    # Each process wrote its own shard of every split: 2 shards, process 0's first.
    assert shard_lengths(out) == {"train": [3, 2], "cathy": [2, 1], "heldout": [1, 1]}
    assert_same_dataset(eight_devices, out)


def test_benchmark_times_one_and_two_devices_in_their_own_processes(trained_codec, codec_dataset):
    from naturalspeech2_jax.benchmarks import encode_dataset as bench

    argv = ["--checkpoint", str(trained_codec), "--dataset", codec_dataset, "--devices", "1,2"]
    result = bench.main([*argv, "--splits", "train,heldout"])
    assert [r["devices"] for r in result["runs"]] == [1, 2]
    for row in result["runs"]:
        assert row["utterances"] == 7 and row["splits"] == ["train", "heldout"]
        assert row["audio_hours"] > 0 and row["device_kind"] == "cpu"
        for key in ("first_s", "warm_s", "warm_utterances_per_s", "warm_audio_hours_per_hour"):
            assert np.isfinite(row[key]) and row[key] > 0, key
    assert result["warm_speedup"]["1"] == 1.0
