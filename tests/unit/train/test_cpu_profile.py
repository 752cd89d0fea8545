"""train/cpu_profile.py: perf's report parsed and classified; a real sample where perf can run."""

from __future__ import annotations

import subprocess

import jax
import jax.numpy as jnp
import pytest

from naturalspeech2_jax.train import cpu_profile

# The shape of `perf report --sort dso,sym --stdio --no-children` on a bench44m step (2026-12-08).
REPORT = """\
# Total Lost Samples: 0
#
# Samples: 4K of event 'cpu-clock:ppp'
# Event count (approx.): 9490000000
#
# Overhead  Shared Object         Symbol
# ........  ....................  ......
#
    28.20%  libjax_common.so      [.] ynn::dot_fp32_6x16x1_1x8x1_fma3
    23.81%  [JIT] tid 5289        [.] jit_avx_gemm_f32_xbyak_gemm.9
     9.50%  [JIT] tid 5289        [.] jit_avx_gemm_f32_xbyak_gemm.8
     3.93%  libc.so.6             [.] __memmove_avx_unaligned_erms
     1.69%  [kernel.kallsyms]     [k] clear_page_erms
     1.33%  libjax_common.so      [.] Eigen::internal::gemm_pack_colmajor_block<float, long>
     0.97%  libjax_common.so      [.] ynn::transpose_x512_avx
     0.40%  [JIT] tid 5289        [.] 0x00007fb81cba3f91
     0.38%  [JIT] tid 5289        [.] 0x00007fb81cba3dbe
     0.17%  libjax_common.so      [.] Eigen::ThreadPoolTempl<tsl::EigenEnvironment>::GlobalSteal
     0.09%  libpython3.11.so.1.0  [.] _PyEval_EvalFrameDefault
     0.06%  libc.so.6             [.] _int_malloc
     0.05%  libfoo.so             [.] bar
"""


def test_report_rows_and_classes():
    rows = cpu_profile.parse_report(REPORT)
    assert len(rows) == 13
    assert rows[0] == (28.2, "libjax_common.so", "ynn::dot_fp32_6x16x1_1x8x1_fma3")
    assert rows[1][1] == "[JIT] tid 5289"  # a shared object name with spaces
    expect = {
        "ynn::dot_fp32_6x16x1_1x8x1_fma3": "matmul: YNN dot kernels",
        "jit_avx_gemm_f32_xbyak_gemm.9": "matmul: oneDNN sgemm and Eigen packing (convolutions, "
        "Eigen dots)",
        "Eigen::internal::gemm_pack_colmajor_block<float, long>": "matmul: oneDNN sgemm and Eigen "
        "packing (convolutions, Eigen dots)",
        "0x00007fb81cba3f91": "XLA generated loops (anonymous JIT code)",
        "ynn::transpose_x512_avx": "YNN element-wise, reductions, transposes",
        "__memmove_avx_unaligned_erms": "memcpy / memset",
        "clear_page_erms": "kernel (page faults, scheduling, syscalls)",
        "Eigen::ThreadPoolTempl<tsl::EigenEnvironment>::GlobalSteal": "thread pools and runtime",
        "_int_malloc": "thread pools and runtime",
        "_PyEval_EvalFrameDefault": "Python",
        "bar": cpu_profile.OTHER,
    }
    for _, dso, sym in rows:
        if sym in expect:
            assert cpu_profile.classify(dso, sym) == expect[sym], sym


def test_breakdown_sums_the_classes_and_groups_anonymous_jit_code():
    out = cpu_profile.breakdown(cpu_profile.parse_report(REPORT))
    shares = {c["class"]: c["share"] for c in out["classes"]}
    assert shares["matmul: oneDNN sgemm and Eigen packing (convolutions, Eigen dots)"] == (
        pytest.approx((23.81 + 9.50 + 1.33) / 100)
    )
    assert shares["XLA generated loops (anonymous JIT code)"] == pytest.approx(0.0078)
    assert sum(shares.values()) == pytest.approx(0.7058, abs=1e-4)  # the rows' own total
    assert [c["share"] for c in out["classes"]] == sorted(shares.values(), reverse=True)
    top = {(r["dso"], r["symbol"]): r["share"] for r in out["top_symbols"]}
    assert top[("[JIT]", "(anonymous: XLA loops)")] == pytest.approx(0.0078)
    assert not any(s.startswith("0x") for _, s in top)


def test_without_perf_it_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(cpu_profile.shutil, "which", lambda name: None)
    calls = []
    out = cpu_profile.sample_steps(lambda: calls.append(1), 3, "/nonexistent")
    assert out == {"error": cpu_profile.unavailable()} and "install linux-perf" in out["error"]
    assert not calls  # nothing ran: the caller's own timings are not disturbed


@pytest.mark.skipif(cpu_profile.unavailable() is not None, reason="perf cannot sample here")
def test_a_matmul_loop_is_mostly_matrix_kernels(tmp_path):
    a = jnp.ones((768, 768), jnp.float32)
    f = jax.jit(lambda x: x @ x @ x)
    f(a).block_until_ready()
    step = lambda: f(a).block_until_ready()  # noqa: E731
    out = cpu_profile.sample_steps(step, 5, str(tmp_path), min_seconds=1.5)
    assert "error" not in out, out
    shares = {c["class"]: c["share"] for c in out["classes"]}
    matmul = sum(v for k, v in shares.items() if k.startswith("matmul"))
    assert matmul > 0.5, shares
    # At least 5 steps and 1.5 s: a ~50 ms step runs more than 5 times.
    assert out["steps"] > 5 and out["seconds"] >= 1.5 and (tmp_path / "report.txt").exists()


@pytest.mark.skipif(cpu_profile.unavailable() is not None, reason="perf cannot sample here")
def test_a_failing_step_stops_perf(tmp_path):
    def step():
        raise RuntimeError("bad step")

    with pytest.raises(RuntimeError, match="bad step"):
        cpu_profile.sample_steps(step, 3, str(tmp_path))
    mine = subprocess.run(["pgrep", "-f", f"perf record .*{tmp_path}"], capture_output=True)
    assert mine.stdout.strip() == b""  # no perf left attached
