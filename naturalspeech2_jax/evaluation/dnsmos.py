"""DNSMOS P.835 (SIG, BAK, OVRL) and P.808 naturalness predictors from the speechmos wheel.

The ONNX models ship inside ``speechmos``; we reuse its scoring code (9 s windows, hop 1 s, the
published polynomial calibration) but build the onnxruntime sessions ourselves with a bounded thread
pool, and load them once per process.
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib
import threading

import numpy as np

from naturalspeech2_jax import SAMPLE_RATE
from naturalspeech2_jax.audio.io import resample
from naturalspeech2_jax.evaluation.asr import ort_session_options


def _speechmos_dir() -> pathlib.Path:
    spec = importlib.util.find_spec("speechmos")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("speechmos is not installed: pip install speechmos")
    return pathlib.Path(spec.submodule_search_locations[0])


class DNSMOS:
    """Non-intrusive MOS predictor; ``score`` returns ovrl/sig/bak/p808 on a 1-5 scale."""

    def __init__(self, num_threads: int = 1) -> None:
        import onnxruntime as ort
        from speechmos import dnsmos as speechmos_dnsmos

        models = _speechmos_dir() / "dnsmos_models"
        options = ort_session_options(num_threads)
        providers = ["CPUExecutionProvider"]
        # speechmos' class builds sessions with default (all-core) threading in __init__; we bypass
        # that constructor and attach our own sessions, keeping its scoring method.
        scorer = speechmos_dnsmos.DNSMOS.__new__(speechmos_dnsmos.DNSMOS)
        scorer.primary_model_path = str(models / "sig_bak_ovr.onnx")
        scorer.onnx_sess = ort.InferenceSession(
            scorer.primary_model_path, options, providers=providers
        )
        scorer.p808_onnx_sess = ort.InferenceSession(
            str(models / "model_v8.onnx"), options, providers=providers
        )
        self._scorer = scorer
        self._lock = threading.Lock()

    def score(self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
        """DNSMOS of one utterance: keys ``ovrl``, ``sig``, ``bak``, ``p808``."""
        wav = resample(np.asarray(wav, dtype=np.float32), sample_rate, SAMPLE_RATE)
        if len(wav) == 0 or not np.any(wav):
            raise ValueError("DNSMOS needs non-silent audio")
        # speechmos rejects samples outside [-1, 1]; generated audio may overshoot slightly.
        wav = np.clip(wav, -1.0, 1.0).astype(np.float64)
        with self._lock:
            out = self._scorer(wav, SAMPLE_RATE, False)
        return {
            "ovrl": float(out["ovrl_mos"]),
            "sig": float(out["sig_mos"]),
            "bak": float(out["bak_mos"]),
            "p808": float(out["p808_mos"]),
        }


@functools.lru_cache(maxsize=1)
def get_dnsmos() -> DNSMOS:
    """Process-wide DNSMOS scorer (loaded once)."""
    return DNSMOS()


def dnsmos(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
    """DNSMOS scores of one waveform (see :meth:`DNSMOS.score`)."""
    return get_dnsmos().score(wav, sample_rate)
