"""The batching plan of ``encode_dataset`` and the merge of latent moments (no codec needed)."""

from __future__ import annotations

import numpy as np
import pytest

from naturalspeech2_jax.inference.codec import LatentMoments
from naturalspeech2_jax.inference.codes_dataset import local_devices, plan_batches


@pytest.mark.parametrize("devices,per_device", [(1, 8), (8, 2), (3, 5)])
def test_every_utterance_lands_once_in_a_batch_of_its_bucket(devices, per_device):
    rng = np.random.default_rng(devices)
    padded = rng.choice([50, 100, 150], size=97)
    batches = plan_batches(padded, devices, per_device)
    seen = np.concatenate([idx for idx, _, _ in batches])
    np.testing.assert_array_equal(np.sort(seen), np.arange(97))
    shapes = set()
    for idx, length, rows in batches:
        assert (padded[idx] == length).all() and list(idx) == sorted(idx)
        per = rows // devices
        assert rows % devices == 0 and len(idx) <= rows and per <= per_device
        assert per == per_device or per & (per - 1) == 0  # a power of two, or the full batch
        assert len(idx) > rows // 2 or per == 1  # a part-filled batch wastes under half its rows
        shapes.add((length, rows))
    assert len(shapes) <= 3 * (1 + int(np.log2(per_device)) + 1)


def test_moments_merged_from_parts_equal_the_moments_of_everything():
    rng = np.random.default_rng(0)
    z = rng.normal(2.0, 3.0, (1000, 8))
    whole, a, b, merged = LatentMoments(), LatentMoments(), LatentMoments(), LatentMoments()
    whole.add(z)
    a.add(z[:300])
    b.add_sums(z[300:].sum(0), (z[300:] ** 2).sum(0), 700)  # as a batch's rows report them
    for part in (a, b, LatentMoments()):  # how encode_dataset merges its hosts' parts
        merged.add_sums(part.sum, part.sq, part.frames)
    assert merged.frames == 1000
    for key in ("mean", "std"):
        np.testing.assert_allclose(merged.stats()[key], whole.stats()[key], rtol=1e-6)
    np.testing.assert_allclose(merged.stats()["mean"], z.mean(0), rtol=1e-5)
    np.testing.assert_allclose(merged.stats()["std"], z.std(0), rtol=1e-5)


def test_device_count_out_of_range_fails_in_one_sentence():
    assert len(local_devices()) == len(local_devices(None)) >= 1
    with pytest.raises(ValueError, match="--devices must be in 1.."):
        local_devices(0)
    with pytest.raises(ValueError, match="--devices must be in 1.."):
        local_devices(len(local_devices()) + 1)
