"""Scanned layer stacks (``models/scan.py``): the same function as the looped stacks they replace.

Every stack (Transformer encoder, conv + attention predictor, WaveNet denoiser with a tail that
its lcm(dilation cycle, FiLM period) blocks leave) is built looped (``scan=False``: the layout of
older checkpoints) and scanned; the looped parameters converted by ``scan.to_stacked`` and
loaded into the scanned module give the same outputs and gradients (fp32, relative tolerance
1e-5), with dropout on (per-block keys: the same masks) and off, and under every remat policy.
An older run's checkpoint (looped layout) restores into a scanned model through
``train/restore.py``. Stacked parameters carry a leading "layers" axis, replicated by the rules.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.ns2_model import model_config
from naturalspeech2_jax import parallel
from naturalspeech2_jax.models import scan
from naturalspeech2_jax.models.ns2 import NaturalSpeech2
from naturalspeech2_jax.models.prior import ConvAttnPredictor
from naturalspeech2_jax.models.transformer import TransformerEncoder
from naturalspeech2_jax.models.wavenet import WaveNetDenoiser
from naturalspeech2_jax.train import state as state_lib
from naturalspeech2_jax.train.checkpoint import Checkpointer
from naturalspeech2_jax.train.restore import restore_params
from tests.helpers import CB_SHAPE
from tests.unit.models.test_ns2 import _batch, _codebooks

B, N, P, D = 2, 11, 6, 16
RTOL = 1e-5


def _inputs():
    k = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(k[0], (B, N, D))
    mask = jnp.array([[1.0] * N, [1.0] * 7 + [0.0] * (N - 7)])
    prompt = jax.random.normal(k[1], (B, P, D))
    pmask = jnp.array([[1.0] * P, [1.0] * 3 + [0.0] * (P - 3)])
    return x, mask, prompt, pmask


def _pair(make):
    """(looped module, scanned module holding the looped module's parameters)."""
    looped, scanned = make(False), make(True)
    assert not looped.scan and scanned.scan
    entries = scanned.layout()
    state = nnx.state(scanned)
    nnx.replace_by_pure_dict(state, scan.to_stacked(nnx.to_pure_dict(nnx.state(looped)), entries))
    nnx.update(scanned, state)
    return looped, scanned


def _assert_tree_close(got, want, rtol=RTOL):
    """Leafwise |got - want| <= rtol |want| + rtol/10 * (largest |want|): the absolute part covers
    gradients that are zero in exact arithmetic (the attention keys' bias) and come out ~1e-9."""
    scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(want))
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for (path, g), w in zip(
        jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want), strict=True
    ):
        np.testing.assert_allclose(
            g, w, rtol=rtol, atol=rtol / 10 * scale, err_msg=jax.tree_util.keystr(path)
        )


def _value_and_grad(module, fn, dropout_seed=None):
    """(fn(module, rngs), d fn / d params as a pure dict), jitted; dropout on with a seed."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def loss(p):
        rngs = None if dropout_seed is None else nnx.Rngs(dropout=dropout_seed)
        out = fn(nnx.merge(graphdef, p, rest), rngs)
        return jnp.sum(jnp.sin(out)), out  # a non-linear readout: every output counts

    (_, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return out, nnx.to_pure_dict(grads)


def _assert_same_function(looped, scanned, fn, dropout_seed=None):
    out0, g0 = _value_and_grad(looped, fn, dropout_seed)
    out1, g1 = _value_and_grad(scanned, fn, dropout_seed)
    np.testing.assert_allclose(out1, out0, rtol=RTOL, atol=RTOL * float(jnp.abs(out0).max()))
    _assert_tree_close(g1, scan.to_stacked(g0, scanned.layout()))
    return out1, g1


def test_transformer_encoder(dropout_seed=3):
    x, mask, _, _ = _inputs()
    looped, scanned = _pair(
        lambda s: TransformerEncoder(D, 2, 32, 3, (3, 1), 0.2, scan=s, rngs=nnx.Rngs(0))
    )
    assert scanned.layers.attn.q.kernel.shape == (3, D, D)
    _assert_same_function(looped, scanned, lambda m, r: m(x, mask, rngs=r), dropout_seed)


def test_predictor_with_a_tail(dropout_seed=3):
    """7 convs, attention every 3: two scanned blocks and a tail of one conv."""
    x, mask, prompt, pmask = _inputs()
    looped, scanned = _pair(
        lambda s: ConvAttnPredictor(D, 7, 3, 2, attn_every=3, dropout=0.3, scan=s,
                                    rngs=nnx.Rngs(1))
    )  # fmt: skip
    assert (len(looped.convs), len(looped.attns)) == (7, 2)
    assert scanned.blocks.convs[0].kernel.shape == (2, 3, D, D)
    assert len(scanned.tail.convs) == 1 and scanned.tail.attn is None
    _assert_same_function(
        looped, scanned, lambda m, r: m(x, mask, prompt, pmask, rngs=r), dropout_seed
    )


@pytest.mark.parametrize(
    "layers,cycle,film_every,dropout_seed",
    [
        (15, 2, 3, None),  # lcm 6: 2 blocks + a tail of 3 layers (one FiLM); dropout off
        (8, 3, 2, 5),  # lcm 6: 1 block + a tail of 2 layers (one FiLM); dropout on
        (12, 2, 3, 5),  # bench44m's stack: 2 blocks, no tail
    ],
)
def test_wavenet_denoiser(layers, cycle, film_every, dropout_seed):
    x, mask, prompt, pmask = _inputs()
    z = jax.random.normal(jax.random.key(7), (B, N, 8))
    t = jnp.array([0.2, 0.7])
    looped, scanned = _pair(
        lambda s: WaveNetDenoiser(8, D, layers, D, cond_kernel=3, dilation_cycle=cycle,
                                  film_every=film_every, heads=2, dropout=0.3, scan=s,
                                  rngs=nnx.Rngs(2))
    )  # fmt: skip
    # The zero-initialised output layer would hide every other parameter's gradient.
    for m in (looped, scanned):
        m.out.kernel[...] = jax.random.normal(jax.random.key(4), m.out.kernel.shape) * 0.3
    assert len(looped.films) == layers // film_every
    assert scanned.blocks.layers[0].time.kernel.shape[0] == layers // 6
    assert scanned.n_tail == layers % 6 and (scanned.tail is None) == (layers % 6 == 0)
    dilations = [layer.dilated.kernel_dilation[0] for layer in scanned.blocks.layers]
    assert dilations == [2 ** (p % cycle) for p in range(6)]

    def fn(m, r):
        return m(z, t, mask, x, prompt, pmask, rngs=r)

    out, _ = _assert_same_function(looped, scanned, fn, dropout_seed)
    if dropout_seed is None:  # the sampler's split: prepare once, denoise many times
        cache = scanned.prepare(x, mask, prompt, pmask)
        assert cache["cond"][0][0].shape == (layers // 6, B, N, 2 * D)
        np.testing.assert_allclose(scanned.denoise(z, t, mask, cache), out, atol=1e-6)


def _smoke_config(scan_layers: bool, remat: str = "none"):
    cfg = model_config("smoke")
    cfg.update(enc_layers=2, prompt_layers=2, pred_layers=7, wn_layers=9)  # every stack scans
    cfg.update(scan_layers=scan_layers, remat=remat, enc_dropout=0.1)
    return cfg


def _ns2_pair():
    looped = NaturalSpeech2(_smoke_config(False), CB_SHAPE, rngs=nnx.Rngs(0))
    scanned = NaturalSpeech2(_smoke_config(True), CB_SHAPE, rngs=nnx.Rngs(0))
    entries = scan.model_layout(scanned)
    assert {e[0][0] for e in entries} == {
        "phoneme_encoder", "prompt_encoder", "duration_predictor", "pitch_predictor", "denoiser"
    }  # fmt: skip
    state = nnx.state(scanned)
    nnx.replace_by_pure_dict(state, scan.to_stacked(nnx.to_pure_dict(nnx.state(looped)), entries))
    nnx.update(scanned, state)
    for m in (looped, scanned):
        kernel = m.denoiser.out.kernel
        kernel[...] = jax.random.normal(jax.random.key(3), kernel.shape) * 0.3
    return looped, scanned, entries


def _ns2_loss(model, grads: bool = True):
    """(metrics, gradients as a pure dict or None) of the training loss, dropout on."""
    batch, codebooks = _batch(), _codebooks()
    stats = {"mean": jnp.full((16,), 0.1), "std": jnp.full((16,), 2.0)}
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        return nnx.merge(graphdef, p, rest).training_loss(
            batch, jax.random.key(5), codebooks, stats
        )

    if not grads:
        return jax.jit(loss)(params)[1], None
    (_, metrics), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return metrics, nnx.to_pure_dict(g)


@pytest.fixture(scope="module")
def ns2_runs():
    """The looped and the scanned smoke model (same parameters): models, metrics, gradients."""
    looped, scanned, entries = _ns2_pair()
    return dict(looped=looped, scanned=scanned, entries=entries,
                looped_out=_ns2_loss(looped), scanned_out=_ns2_loss(scanned))  # fmt: skip


def _assert_same_metrics(got, want):
    for k in want:
        np.testing.assert_allclose(float(got[k]), float(want[k]), rtol=RTOL, err_msg=k)


def test_ns2_loss_and_gradients(ns2_runs):
    """The whole training loss (dropout on, cut prompt, CE-RVQ): scanned == looped."""
    (m0, g0), (m1, g1) = ns2_runs["looped_out"], ns2_runs["scanned_out"]
    entries = ns2_runs["entries"]
    _assert_same_metrics(m1, m0)
    _assert_tree_close(g1, scan.to_stacked(g0, entries))
    # And back: the converters are inverses.
    back = scan.to_unrolled(scan.to_stacked(g0, entries), entries)
    assert jax.tree.structure(back) == jax.tree.structure(g0)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(g0), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("remat", ["dots_saveable", "full"])
def test_remat_policies_give_the_same_gradients(remat, dropout_seed=5):
    """Each scanned stack kind (a WaveNet with a tail, a predictor with a tail) under a remat
    policy: the same outputs and gradients as without (dropout on: the same masks). The NS2
    config's policy reaches every stack (checked abstractly: the whole model's gradient under
    each policy was minutes of compilation for what these two stacks show)."""
    x, mask, prompt, pmask = _inputs()
    z, t = jax.random.normal(jax.random.key(7), (B, N, 8)), jnp.array([0.2, 0.7])
    stacks = {
        "denoiser": (
            lambda r: WaveNetDenoiser(8, D, 15, D, cond_kernel=3, dilation_cycle=2, film_every=3,
                                      heads=2, dropout=0.3, remat=r, rngs=nnx.Rngs(2)),
            lambda m, rngs: m(z, t, mask, x, prompt, pmask, rngs=rngs),
        ),
        "predictor": (
            lambda r: ConvAttnPredictor(D, 7, 3, 2, attn_every=3, dropout=0.3, remat=r,
                                        rngs=nnx.Rngs(1)),
            lambda m, rngs: m(x, mask, prompt, pmask, rngs=rngs),
        ),
    }  # fmt: skip
    for name, (make, fn) in stacks.items():
        plain, rematted = make("none"), make(remat)
        assert plain.scan and rematted.remat == remat, name
        if name == "denoiser":  # the zero-initialised output layer would hide the rest
            for m in (plain, rematted):
                m.out.kernel[...] = jax.random.normal(jax.random.key(4), m.out.kernel.shape) * 0.3
        out0, g0 = _value_and_grad(plain, fn, dropout_seed)
        out1, g1 = _value_and_grad(rematted, fn, dropout_seed)
        np.testing.assert_allclose(out1, out0, rtol=RTOL, err_msg=name)
        _assert_tree_close(g1, g0)
    model = nnx.eval_shape(
        lambda: NaturalSpeech2(_smoke_config(True, remat), CB_SHAPE, rngs=nnx.Rngs(0))
    )
    stacks = (model.phoneme_encoder.encoder, model.prompt_encoder.encoder,
              model.duration_predictor, model.pitch_predictor, model.denoiser)  # fmt: skip
    assert [m.remat for m in stacks] == [remat] * 5


def test_remat_of_looped_stacks_and_unknown_policy():
    x, mask, _, _ = _inputs()
    plain = TransformerEncoder(D, 2, 32, 2, (3, 1), 0.2, scan=False, rngs=nnx.Rngs(0))
    full = TransformerEncoder(D, 2, 32, 2, (3, 1), 0.2, scan=False, remat="full",
                              rngs=nnx.Rngs(0))  # fmt: skip
    fn = lambda m, r: m(x, mask, rngs=r)  # noqa: E731
    out0, g0 = _value_and_grad(plain, fn, 1)
    out1, g1 = _value_and_grad(full, fn, 1)
    np.testing.assert_allclose(out1, out0, rtol=RTOL)
    _assert_tree_close(g1, g0)
    with pytest.raises(ValueError, match="not a remat policy"):
        NaturalSpeech2(_smoke_config(True, "everything"), CB_SHAPE, rngs=nnx.Rngs(0))


def test_an_unrolled_checkpoint_restores_into_the_scanned_model(ns2_runs, tmp_path):
    """A checkpoint in the looped layout (every run before scanned stacks) restores into the
    default, scanned model, converted on the way, and the reverse; the same loss."""
    for name in ("looped", "scanned"):
        params = nnx.state(ns2_runs[name], nnx.Param)
        ckpt = Checkpointer(tmp_path / name / "checkpoints", async_writes=False)
        state = {"params": {"all": params}, "ema": None, "rest": {}, "step": jnp.int32(7)}
        ckpt.save(7, state, None, {"config": "unit"})
        ckpt.close()
    for source, target in (("looped", _smoke_config(True)), ("scanned", _smoke_config(False))):
        abstract = nnx.eval_shape(lambda c=target: NaturalSpeech2(c, CB_SHAPE, rngs=nnx.Rngs(9)))
        restored, step = restore_params(tmp_path / source, abstract)
        assert step == 7 and restored.denoiser.scan == target.scan_layers
        metrics, _ = _ns2_loss(restored, grads=False)
        _assert_same_metrics(metrics, ns2_runs["looped_out"][0])


def test_stacked_parameters_shard_like_their_layers():
    """The leading "layers" axis is replicated; the rest shards as an unscanned layer's."""
    mesh = parallel.make_mesh(dict(data=2, fsdp=2, model=2))
    rules = parallel.DEFAULT_RULES
    looped = nnx.eval_shape(lambda: NaturalSpeech2(_smoke_config(False), CB_SHAPE,
                                                   rngs=nnx.Rngs(0)))  # fmt: skip
    scanned = nnx.eval_shape(lambda: NaturalSpeech2(_smoke_config(True), CB_SHAPE,
                                                    rngs=nnx.Rngs(0)))  # fmt: skip
    specs = {}
    for name, model in (("looped", looped), ("scanned", scanned)):
        shardings = state_lib.state_shardings(nnx.state(model, nnx.Param), mesh, rules)
        specs[name] = jax.tree.map(lambda s: s.get_value().spec, shardings,
                                   is_leaf=lambda x: isinstance(x, nnx.Variable))  # fmt: skip
    kernel = specs["scanned"]["denoiser"]["blocks"]["layers"][0]["dilated"]["kernel"]
    assert kernel == jax.sharding.PartitionSpec(None, None, "fsdp", "model")
    one = specs["looped"]["denoiser"]["layers"][0]["dilated"]["kernel"]
    assert tuple(kernel)[1:] == tuple(one)
    q = specs["scanned"]["phoneme_encoder"]["encoder"]["layers"]["attn"]["q"]["kernel"]
    assert q == jax.sharding.PartitionSpec(None, "fsdp", "model")
