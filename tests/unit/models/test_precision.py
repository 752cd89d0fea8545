"""bfloat16 compute: a model whose parameters are cast to bf16 (``precision.compute_dtype``)
computes in bf16 end to end.

JAX promotes a bf16 array combined with a float32 one to float32 without a word, so one
float32 input (an embedding lookup, a mask) silently runs whole stacks in float32 (half the
speed and twice the activation memory on accelerators), and a scanned stack whose carry changes
dtype does not trace at all. The NS2 training step of a bench-shaped smoke model (scanned
encoders, predictors and a WaveNet with a tail and a kernel-3 condition conv, as the paper
preset has) is traced in bf16 and every matmul and convolution in it is checked: only the
attention logits and CE-RVQ's code distances (both float32 on purpose) may take float32.
"""

from __future__ import annotations

import collections

import jax

from naturalspeech2_jax.benchmarks import reference_speed as rs
from naturalspeech2_jax.train import loop
from naturalspeech2_jax.train import state as state_lib
from naturalspeech2_jax.train.flops import sub_jaxprs

# (file, function) of the matmuls that are float32 by design.
FLOAT32_BY_DESIGN = {
    ("models/transformer.py", "MultiHeadAttention.attend"),  # logits for a stable softmax
    ("diffusion/losses.py", "ce_rvq_loss"),  # distances to the float32 codebooks
}


def _source(eqn) -> tuple[str, str]:
    """(file under naturalspeech2_jax/, function) of the innermost frame in this package."""
    tb = eqn.source_info.traceback
    for f in tb.frames if tb else ():
        if "naturalspeech2_jax/" in f.file_name:
            return f.file_name.split("naturalspeech2_jax/")[-1], f.function_name
    return "?", "?"


def matmul_dtypes(jaxpr) -> collections.Counter:
    """{(primitive, operand dtypes, source): count} of every dot and convolution, sub-jaxprs
    (scan bodies, jit, remat, custom derivatives) included."""
    out: collections.Counter = collections.Counter()
    for e in jaxpr.eqns:
        if e.primitive.name in ("dot_general", "conv_general_dilated"):
            dtypes = tuple(str(v.aval.dtype) for v in e.invars)
            out[(e.primitive.name, dtypes, _source(e))] += 1
        for p in e.params.values():
            for inner in sub_jaxprs(p):
                out += matmul_dtypes(inner)
    return out


def test_bf16_training_step_computes_in_bf16():
    config = rs.bench_config(
        ce_rvq=True,
        smoke=True,
        overrides=["model.scan_layers=true", "model.wn_layers=7", "model.wn_cond_kernel=3",
                   "model.pred_layers=4", "precision.compute_dtype=bfloat16"],
    )  # fmt: skip
    trainer = loop.Trainer(config, "/nonexistent")  # tracing touches no work directory
    state = state_lib.with_shardings(trainer.abstract, trainer.shardings)
    # Tracing alone: a dtype change in a scanned stack's carry raises here.
    jaxpr = jax.make_jaxpr(trainer.step_fn)(state, trainer.abstract_batch()).jaxpr
    counts = matmul_dtypes(jaxpr)
    bf16 = sum(n for (_, dtypes, _), n in counts.items() if set(dtypes) == {"bfloat16"})
    float32 = {k: n for k, n in counts.items() if "float32" in k[1]}
    unexpected = {k: n for k, n in float32.items() if k[2] not in FLOAT32_BY_DESIGN}
    assert not unexpected, f"float32 matmuls in a bf16 step: {unexpected}"
    # The forward and backward of every stack: hundreds of bf16 matmuls, a few float32 ones.
    assert bf16 > 200 and sum(float32.values()) < 0.1 * bf16, (bf16, float32)
