"""Speaker similarity: cosine between resemblyzer d-vectors (GE2E LSTM, weights ship in the wheel).

A speaker model the user has on disk (a WavLM x-vector or an ECAPA-TDNN) can replace resemblyzer:
``get_speaker_encoder("wavlm:/path")`` (see there).

resemblyzer runs on torch CPU. We pin torch to ONE thread before the first embedding: with torch's
default thread pool each embedding was about 100x slower on a busy 2-core machine.
"""

from __future__ import annotations

import functools
import threading
import warnings

import numpy as np

from naturalspeech2_jax import SAMPLE_RATE
from naturalspeech2_jax.audio.io import resample
from naturalspeech2_jax.evaluation.plugins import (
    EvaluatorUnavailable,
    require_module,
    require_path,
    split_spec,
)


class SpeakerEncoder:
    """resemblyzer VoiceEncoder on CPU; ``embed`` returns an L2-normalised 256-d vector."""

    def __init__(self, num_threads: int = 1) -> None:
        import torch

        torch.set_num_threads(num_threads)
        with warnings.catch_warnings():
            # webrtcvad (a resemblyzer dependency) imports the deprecated pkg_resources.
            warnings.simplefilter("ignore", UserWarning)
            from resemblyzer import VoiceEncoder, preprocess_wav

        self._preprocess = preprocess_wav
        self._encoder = VoiceEncoder("cpu", verbose=False)
        self._lock = threading.Lock()

    def embed(self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """d-vector of one utterance (silence trimmed by resemblyzer's VAD, volume normalised)."""
        wav = _at_16k(wav, sample_rate)
        with self._lock:
            processed = self._preprocess(wav, source_sr=SAMPLE_RATE)
            if len(processed) < SAMPLE_RATE // 10:
                # The VAD removed (almost) everything, e.g. for synthetic or very quiet audio: embed
                # the raw clip instead of failing, so a bad sample scores low rather than crashing.
                processed = wav
            emb = self._encoder.embed_utterance(processed)
        return np.asarray(emb, dtype=np.float32)


class TransformersSpeakerEncoder:
    """A Hugging Face x-vector model on disk (e.g. WavLM/UniSpeech-SAT ``...ForXVector``)."""

    def __init__(self, path: str, num_threads: int = 1) -> None:
        model_path = require_path(path, "speaker model")
        require_module(
            "transformers", f"The speaker model {model_path}", "pip install transformers"
        )
        import torch
        from transformers import AutoFeatureExtractor, AutoModelForAudioXVector

        torch.set_num_threads(num_threads)
        self._features = AutoFeatureExtractor.from_pretrained(
            str(model_path), local_files_only=True
        )
        self._model = AutoModelForAudioXVector.from_pretrained(
            str(model_path), local_files_only=True
        ).eval()
        self._lock = threading.Lock()

    def embed(self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        import torch

        wav = _at_16k(wav, sample_rate)
        inputs = self._features(wav, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with self._lock, torch.no_grad():
            emb = self._model(**inputs).embeddings[0]
        return _unit(emb.numpy())


class SpeechBrainSpeakerEncoder:
    """A SpeechBrain speaker model on disk (e.g. ECAPA-TDNN: ``hyperparams.yaml`` + checkpoints)."""

    def __init__(self, path: str, num_threads: int = 1) -> None:
        model_path = require_path(path, "speaker model")
        require_module("speechbrain", f"The speaker model {model_path}", "pip install speechbrain")
        import torch

        try:
            from speechbrain.inference.speaker import EncoderClassifier
        except ImportError:  # speechbrain < 1.0
            from speechbrain.pretrained import EncoderClassifier

        torch.set_num_threads(num_threads)
        self._model = EncoderClassifier.from_hparams(
            source=str(model_path), savedir=str(model_path), run_opts={"device": "cpu"}
        )
        self._lock = threading.Lock()

    def embed(self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        import torch

        wav = _at_16k(wav, sample_rate)
        with self._lock, torch.no_grad():
            emb = self._model.encode_batch(torch.from_numpy(wav)[None])
        return _unit(emb.reshape(-1).numpy())


def _at_16k(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    return resample(np.asarray(wav, dtype=np.float32), sample_rate, SAMPLE_RATE)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).ravel()
    return v / max(float(np.linalg.norm(v)), 1e-12)


_PATH_KINDS = {
    "wavlm": TransformersSpeakerEncoder,
    "transformers": TransformersSpeakerEncoder,
    "ecapa": SpeechBrainSpeakerEncoder,
    "speechbrain": SpeechBrainSpeakerEncoder,
}


@functools.lru_cache(maxsize=4)
def get_speaker_encoder(spec: str = "resemblyzer"):
    """Process-wide encoder per spec (loaded once); anything with ``embed(wav) -> vector``.

    ``resemblyzer`` (default, bundled); on disk: ``wavlm:DIR`` (a Hugging Face x-vector model,
    needs transformers), ``ecapa:DIR`` (a SpeechBrain model dir, needs speechbrain), or a bare
    DIR (``hyperparams.yaml`` -> SpeechBrain, ``config.json`` -> transformers). Raises
    :class:`EvaluatorUnavailable` (one sentence) when the path or the library is missing.
    """
    if spec == "resemblyzer":
        return SpeakerEncoder()
    kind, path = split_spec(spec, tuple(_PATH_KINDS))
    if kind is None:
        folder = require_path(path, "speaker model")
        if (folder / "hyperparams.yaml").exists():
            kind = "ecapa"
        elif (folder / "config.json").exists():
            kind = "wavlm"
        else:
            raise EvaluatorUnavailable(
                f"Cannot tell which kind of speaker model {folder} is (no hyperparams.yaml or "
                "config.json); prefix it with wavlm: or ecapa:."
            )
    return _PATH_KINDS[kind](path)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two embedding vectors."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def speaker_similarity(
    wav_a: np.ndarray, wav_b: np.ndarray, sample_rate: int = SAMPLE_RATE
) -> float:
    """Cosine similarity of the two waveforms' speaker embeddings (1 = same voice)."""
    encoder = get_speaker_encoder()
    return cosine_similarity(encoder.embed(wav_a, sample_rate), encoder.embed(wav_b, sample_rate))
