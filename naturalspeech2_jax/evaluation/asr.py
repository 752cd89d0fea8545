"""Speech recognition for intelligibility (WER): Moonshine base English and pocketsphinx.

Moonshine's weights ship inside the ``moonshine-cpp`` wheel (``models/base-en/*.ort`` plus a binary
vocabulary ``tokenizer.bin``). We locate them with ``importlib.util.find_spec`` WITHOUT importing
``moonshine_cpp`` (its import loads a second native onnxruntime, and its own transcribe path leaks
memory), and run them with Python onnxruntime and a greedy decoder with a key/value cache.
pocketsphinx ships its own en-US model and is kept as a weak second opinion.

Recognisers are selected by name or path through :func:`get_asr`:
``"moonshine"``, ``"pocketsphinx"``, or a directory holding ``encoder_model.(ort|onnx)``,
``decoder_model_merged.(ort|onnx)`` and ``tokenizer.bin`` (a Moonshine export a user has on disk).
Further recognisers can be added with :func:`register_asr`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import pathlib
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from naturalspeech2_jax.evaluation.normalize_text import normalize_text

SAMPLE_RATE = 16_000


class ASR(Protocol):
    """A speech recogniser: 16 kHz float mono waveform -> transcript (not normalised)."""

    name: str

    def transcribe(self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str: ...


def _resample(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"expected mono audio of shape [samples], got {wav.shape}")
    if sample_rate == SAMPLE_RATE:
        return wav
    import librosa

    return librosa.resample(wav, orig_sr=sample_rate, target_sr=SAMPLE_RATE).astype(np.float32)


def ort_session_options(num_threads: int = 1):
    """onnxruntime options with a bounded thread pool (the machines are small and shared)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def moonshine_model_dir() -> pathlib.Path:
    """Directory of the Moonshine base-en model inside the installed moonshine-cpp wheel."""
    spec = importlib.util.find_spec("moonshine_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "moonshine-cpp is not installed: pip install moonshine-cpp==0.1.4 (it has the weights)"
        )
    return pathlib.Path(spec.submodule_search_locations[0]) / "models" / "base-en"


def read_moonshine_vocabulary(path: str | os.PathLike) -> list[bytes]:
    """Parse moonshine's ``tokenizer.bin``: for each token id, a varint length then raw bytes.

    Ids 3..258 are single raw bytes (byte fallback); "\\u2581" marks a word start, as in
    SentencePiece.
    """
    data = pathlib.Path(path).read_bytes()
    tokens: list[bytes] = []
    i = 0
    while i < len(data):
        length, shift = 0, 0
        while True:
            byte = data[i]
            i += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        tokens.append(data[i : i + length])
        i += length
    return tokens


def _find_model_file(model_dir: pathlib.Path, stem: str) -> pathlib.Path:
    for suffix in (".ort", ".onnx"):
        candidate = model_dir / (stem + suffix)
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no {stem}.ort or {stem}.onnx in {model_dir}")


class MoonshineASR:
    """Moonshine encoder-decoder on onnxruntime with a greedy, key/value-cached decoding loop."""

    BOS_ID = 1
    EOS_ID = 2
    # The model emits about 6.5 tokens per second of speech at most; the cap stops run-away loops
    # (repeated tokens) on garbled audio without truncating real transcripts.
    MAX_TOKENS_PER_SECOND = 6.5
    MIN_SECONDS, MAX_SECONDS = 0.1, 64.0

    def __init__(self, model_dir: str | os.PathLike | None = None, num_threads: int = 2):
        import onnxruntime as ort

        # A model plugged by path is named after its directory (result keys use the name).
        self.name = "moonshine" if model_dir is None else pathlib.Path(model_dir).name
        model_dir = pathlib.Path(model_dir) if model_dir is not None else moonshine_model_dir()
        options = ort_session_options(num_threads)
        providers = ["CPUExecutionProvider"]
        self._encoder = ort.InferenceSession(
            str(_find_model_file(model_dir, "encoder_model")), options, providers=providers
        )
        self._decoder = ort.InferenceSession(
            str(_find_model_file(model_dir, "decoder_model_merged")), options, providers=providers
        )
        self._vocab = read_moonshine_vocabulary(model_dir / "tokenizer.bin")
        self._past_names = [
            i.name for i in self._decoder.get_inputs() if i.name.startswith("past_key_values.")
        ]
        past_shape = next(
            i.shape for i in self._decoder.get_inputs() if i.name.startswith("past_key_values.")
        )
        self._num_heads, self._head_dim = int(past_shape[1]), int(past_shape[3])
        self._output_names = [o.name for o in self._decoder.get_outputs()]
        # One session is not guaranteed re-entrant across Python threads with our cache dict.
        self._lock = threading.Lock()

    def decode_tokens(self, ids: Sequence[int]) -> str:
        """Token ids -> text (special and padding ids are dropped)."""
        pieces = [self._vocab[i] for i in ids if 2 < i < len(self._vocab)]
        return b"".join(pieces).decode("utf-8", errors="replace").replace("\u2581", " ").strip()

    def transcribe(self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
        audio = _resample(wav, sample_rate)
        seconds = len(audio) / SAMPLE_RATE
        if seconds < self.MIN_SECONDS:
            return ""
        if seconds > self.MAX_SECONDS:
            raise ValueError(f"Moonshine accepts at most {self.MAX_SECONDS} s, got {seconds:.1f} s")
        max_tokens = int(np.ceil(seconds * self.MAX_TOKENS_PER_SECOND)) + 4
        with self._lock:
            hidden = self._encoder.run(None, {"input_values": audio[None, :]})[0]
            empty = np.zeros((1, self._num_heads, 0, self._head_dim), dtype=np.float32)
            past = {name: empty for name in self._past_names}
            tokens: list[int] = []
            input_ids = np.array([[self.BOS_ID]], dtype=np.int64)
            for step in range(max_tokens):
                outputs = self._decoder.run(
                    None,
                    {
                        "input_ids": input_ids,
                        "encoder_hidden_states": hidden,
                        # The merged decoder computes the cross-attention keys/values on the first
                        # step only; later steps reuse them from the cache branch.
                        "use_cache_branch": np.array([step > 0]),
                        **past,
                    },
                )
                next_id = int(np.argmax(outputs[0][0, -1]))
                if next_id == self.EOS_ID:
                    break
                tokens.append(next_id)
                input_ids = np.array([[next_id]], dtype=np.int64)
                for out_name, value in zip(self._output_names[1:], outputs[1:], strict=True):
                    past_name = out_name.replace("present.", "past_key_values.", 1)
                    # Encoder (cross-attention) entries are fixed after step 0.
                    if step == 0 or ".decoder." in past_name:
                        past[past_name] = value
        return self.decode_tokens(tokens)


class PocketsphinxASR:
    """CMU pocketsphinx with its bundled en-US acoustic model, language model and dictionary."""

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self.name = "pocketsphinx"
        self._decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
        self._lock = threading.Lock()

    def transcribe(self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
        audio = _resample(wav, sample_rate)
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        with self._lock:
            self._decoder.start_utt()
            self._decoder.process_raw(pcm, full_utt=True)
            self._decoder.end_utt()
            hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


_REGISTRY: dict[str, Callable[[], ASR]] = {
    "moonshine": MoonshineASR,
    "pocketsphinx": PocketsphinxASR,
}


def register_asr(name: str, factory: Callable[[], ASR]) -> None:
    """Make ``get_asr(name)`` build a recogniser with ``factory()`` (plug-in point)."""
    _REGISTRY[name] = factory
    get_asr.cache_clear()


@functools.cache
def get_asr(spec: str = "moonshine") -> ASR:
    """Recogniser by registry name or by model directory path; loaded once per process."""
    if spec in _REGISTRY:
        return _REGISTRY[spec]()
    path = pathlib.Path(spec)
    if path.is_dir():
        return MoonshineASR(path)
    if path.is_file() and path.suffix in (".onnx", ".ort"):
        return MoonshineASR(path.parent)
    raise ValueError(
        f"unknown ASR {spec!r}: use one of {sorted(_REGISTRY)} or a directory with "
        "encoder_model.(ort|onnx), decoder_model_merged.(ort|onnx) and tokenizer.bin"
    )


@dataclasses.dataclass(frozen=True)
class WERResult:
    """Word error rate of one or more utterances, with its edit counts."""

    wer: float
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int


def word_error_rate(reference: str | Sequence[str], hypothesis: str | Sequence[str]) -> WERResult:
    """WER after :func:`normalize_text` on both sides (corpus-level when given lists)."""
    import jiwer

    refs = [reference] if isinstance(reference, str) else list(reference)
    hyps = [hypothesis] if isinstance(hypothesis, str) else list(hypothesis)
    refs = [normalize_text(r) for r in refs]
    hyps = [normalize_text(h) for h in hyps]
    n_words = sum(len(r.split()) for r in refs)
    if n_words == 0:
        raise ValueError("reference transcript is empty after normalisation")
    # An empty hypothesis counts as all deletions (jiwer handles it); empty references are rejected.
    out = jiwer.process_words(refs, hyps)
    errors = out.substitutions + out.deletions + out.insertions
    return WERResult(
        wer=errors / n_words,
        substitutions=out.substitutions,
        deletions=out.deletions,
        insertions=out.insertions,
        reference_words=n_words,
    )
