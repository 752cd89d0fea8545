"""Speaker similarity: cosine between resemblyzer d-vectors (GE2E LSTM, weights ship in the wheel).

resemblyzer runs on torch CPU. We pin torch to ONE thread before the first embedding: with torch's
default thread pool each embedding was about 100x slower on a busy 2-core machine.
"""

from __future__ import annotations

import functools
import threading
import warnings

import numpy as np

SAMPLE_RATE = 16_000


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
        wav = np.asarray(wav, dtype=np.float32)
        if sample_rate != SAMPLE_RATE:
            import librosa

            wav = librosa.resample(wav, orig_sr=sample_rate, target_sr=SAMPLE_RATE)
        with self._lock:
            processed = self._preprocess(wav, source_sr=SAMPLE_RATE)
            if len(processed) < SAMPLE_RATE // 10:
                # The VAD removed (almost) everything, e.g. for synthetic or very quiet audio: embed
                # the raw clip instead of failing, so a bad sample scores low rather than crashing.
                processed = wav
            emb = self._encoder.embed_utterance(processed)
        return np.asarray(emb, dtype=np.float32)


@functools.lru_cache(maxsize=1)
def get_speaker_encoder() -> SpeakerEncoder:
    """Process-wide encoder (loaded once)."""
    return SpeakerEncoder()


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
