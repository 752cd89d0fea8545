"""Mesh construction, logical-axis mapping and host-to-global batches."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from naturalspeech2_jax import parallel


def test_mesh_shape_fills_minus_one():
    assert parallel.resolve_mesh_shape({"data": -1, "fsdp": 2, "model": 1}, 8) == (4, 2, 1)
    assert parallel.resolve_mesh_shape({"data": 2, "fsdp": 2, "model": 2}, 8) == (2, 2, 2)


@pytest.mark.parametrize(
    "cfg", [{"data": 3, "model": -1}, {"data": -1, "model": -1}, {"data": 4}, {"batch": 8}]
)
def test_mesh_shape_rejects_bad_configs(cfg):
    with pytest.raises(ValueError):
        parallel.resolve_mesh_shape(cfg, 8)


def test_make_mesh_uses_all_devices():
    mesh = parallel.make_mesh({"data": -1, "fsdp": 2, "model": 2})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "model": 2}
    assert mesh.devices.size == jax.device_count() == 8


def test_logical_spec_maps_and_replicates_indivisible_dims():
    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "model": 2})
    rules = parallel.DEFAULT_RULES
    assert parallel.logical_to_mesh_spec(("embed", "mlp"), (64, 128), mesh, rules) == P(
        "fsdp", "model"
    )
    # 3 is not divisible by 2: that dimension is replicated rather than failing.
    assert parallel.logical_to_mesh_spec(
        ("kernel", "conv_in", "embed"), (3, 5, 8), mesh, rules
    ) == (P(None, None, "fsdp"))
    assert parallel.logical_to_mesh_spec(("embed", "mlp"), (63, 128), mesh, rules) == P(
        None, "model"
    )
    assert parallel.logical_to_mesh_spec(None, (4,), mesh, rules) == P()


def test_axis_size_one_is_not_named():
    mesh = parallel.make_mesh({"data": -1, "fsdp": 1, "model": 1})
    spec = parallel.logical_to_mesh_spec(("embed", "mlp"), (64, 128), mesh, parallel.DEFAULT_RULES)
    assert spec == P(None, None)


def test_host_batch_to_global_splits_batch_over_data_and_fsdp():
    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "model": 2})
    x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    g = parallel.host_batch_to_global({"x": x}, mesh)["x"]
    assert g.shape == (8, 3)
    np.testing.assert_array_equal(np.asarray(g), x)
    assert g.sharding.spec == P(("data", "fsdp"), None)
    assert parallel.batch_parallelism(mesh) == 4


def test_rules_from_config_overrides_defaults():
    rules = parallel.rules_from_config([["embed", None], ["batch", ["data"]]])
    assert dict(rules)["batch"] == ("data",)
    assert parallel.rules_from_config(()) == parallel.DEFAULT_RULES
