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

from naturalspeech2_jax import SAMPLE_RATE
from naturalspeech2_jax.audio.io import resample
from naturalspeech2_jax.evaluation.normalize_text import normalize_text
from naturalspeech2_jax.evaluation.plugins import (
    EvaluatorUnavailable,
    require_module,
    require_path,
    split_spec,
)


class ASR(Protocol):
    """A speech recogniser: 16 kHz float mono waveform -> transcript (not normalised)."""

    name: str

    def transcribe(self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str: ...


def _resample(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"expected mono audio of shape [samples], got {wav.shape}")
    return resample(wav, sample_rate, SAMPLE_RATE)


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
        return self.transcribe_scored(wav, sample_rate)[0]

    def transcribe_scored(
        self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE
    ) -> tuple[str, float]:
        """(transcript, confidence): the mean log-probability of the greedy path's tokens, the
        end-of-text token included (0 is certain; -inf when nothing was decoded). Data
        preparation keeps a transcription only above a threshold of it."""
        audio = _resample(wav, sample_rate)
        seconds = len(audio) / SAMPLE_RATE
        if seconds < self.MIN_SECONDS:
            return "", float("-inf")
        if seconds > self.MAX_SECONDS:
            raise ValueError(f"Moonshine accepts at most {self.MAX_SECONDS} s, got {seconds:.1f} s")
        max_tokens = int(np.ceil(seconds * self.MAX_TOKENS_PER_SECOND)) + 4
        with self._lock:
            hidden = self._encoder.run(None, {"input_values": audio[None, :]})[0]
            empty = np.zeros((1, self._num_heads, 0, self._head_dim), dtype=np.float32)
            past = {name: empty for name in self._past_names}
            tokens: list[int] = []
            logprobs: list[float] = []
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
                logits = np.asarray(outputs[0][0, -1], np.float64)
                next_id = int(np.argmax(logits))
                # log-softmax of the chosen (largest) logit
                logprobs.append(float(-np.log(np.exp(logits - logits[next_id]).sum())))
                if next_id == self.EOS_ID:
                    break
                tokens.append(next_id)
                input_ids = np.array([[next_id]], dtype=np.int64)
                for out_name, value in zip(self._output_names[1:], outputs[1:], strict=True):
                    past_name = out_name.replace("present.", "past_key_values.", 1)
                    # Encoder (cross-attention) entries are fixed after step 0.
                    if step == 0 or ".decoder." in past_name:
                        past[past_name] = value
        confidence = float(np.mean(logprobs)) if tokens else float("-inf")
        return self.decode_tokens(tokens), confidence


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


class WhisperASR:
    """A Whisper model on disk: a Hugging Face directory (transformers) or an openai-whisper
    ``.pt`` checkpoint (the ``whisper`` package); English, greedy, on CPU."""

    def __init__(self, path: str | os.PathLike) -> None:
        model_path = require_path(str(path), "Whisper model")
        self.name = "whisper"
        self._lock = threading.Lock()
        if model_path.is_file():
            require_module(
                "whisper", f"The Whisper checkpoint {model_path}", "pip install openai-whisper"
            )
            import whisper

            model = whisper.load_model(str(model_path), device="cpu")
            self._transcribe = lambda audio: model.transcribe(audio, language="en", fp16=False)[
                "text"
            ]
            return
        require_module(
            "transformers", f"The Whisper model {model_path}", "pip install transformers"
        )
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        processor = WhisperProcessor.from_pretrained(str(model_path), local_files_only=True)
        model = WhisperForConditionalGeneration.from_pretrained(
            str(model_path), local_files_only=True
        ).eval()

        def transcribe(audio: np.ndarray) -> str:
            import torch

            features = processor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt")
            with torch.no_grad():
                ids = model.generate(features.input_features, language="en", task="transcribe")
            return processor.batch_decode(ids, skip_special_tokens=True)[0]

        self._transcribe = transcribe

    def transcribe(self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
        audio = _resample(wav, sample_rate)
        if len(audio) < SAMPLE_RATE // 10:
            return ""
        with self._lock:
            return str(self._transcribe(audio)).strip()


class CTCOnnxASR:
    """A CTC acoustic model exported to ONNX (wav2vec2/HuBERT style): raw 16 kHz waveform
    [1, N] in, logits [1, T, V] out, greedy CTC decoding with the ``vocab.json`` (token -> id, as
    Hugging Face writes it) or ``tokens.txt`` (one token per line) found beside the model.
    ``|`` or ``\\u2581`` is the word delimiter; ``<pad>``/``<blank>`` (else id 0) is the blank."""

    SPECIALS = ("<s>", "</s>", "<unk>", "<pad>", "<blank>", "<eps>")

    def __init__(self, path: str | os.PathLike, num_threads: int = 2) -> None:
        import onnxruntime as ort

        model_path = require_path(str(path), "CTC ONNX model")
        if model_path.is_dir():
            found = sorted(model_path.glob("*.onnx")) + sorted(model_path.glob("*.ort"))
            if len(found) != 1:
                raise EvaluatorUnavailable(
                    f"The CTC model directory {model_path} must hold exactly one .onnx/.ort file "
                    f"(found {len(found)}); pass the model file itself."
                )
            model_path = found[0]
        self.name = "ctc"
        self._vocab = self._read_vocab(model_path.parent)
        self._blank = next((i for i, t in enumerate(self._vocab) if t in ("<pad>", "<blank>")), 0)
        self._session = ort.InferenceSession(
            str(model_path), ort_session_options(num_threads), providers=["CPUExecutionProvider"]
        )
        inputs = self._session.get_inputs()
        if len(inputs[0].shape) != 2:
            raise EvaluatorUnavailable(
                f"The CTC model {model_path} takes input of rank {len(inputs[0].shape)}; only "
                "models with a raw-waveform input [batch, samples] are supported."
            )
        self._input = inputs[0].name
        self._lock = threading.Lock()

    @staticmethod
    def _read_vocab(folder: pathlib.Path) -> list[str]:
        import json

        if (folder / "vocab.json").exists():
            table = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
            vocab = [""] * (max(table.values()) + 1)
            for token, i in table.items():
                vocab[int(i)] = token
            return vocab
        if (folder / "tokens.txt").exists():
            lines = (folder / "tokens.txt").read_text(encoding="utf-8").splitlines()
            return [line.split()[0] if line.split() else "" for line in lines]
        raise EvaluatorUnavailable(
            f"No vocab.json or tokens.txt beside the CTC model in {folder}; put the model's "
            "vocabulary there."
        )

    def decode_ids(self, ids: Sequence[int]) -> str:
        """Greedy CTC: collapse repeats, drop blanks and special tokens, delimiters -> spaces."""
        pieces, previous = [], None
        for i in ids:
            if i != previous and i != self._blank and 0 <= i < len(self._vocab):
                token = self._vocab[i]
                if token not in self.SPECIALS:
                    pieces.append(token)
            previous = i
        text = "".join(pieces).replace("|", " ").replace("\u2581", " ")
        return " ".join(text.split())

    def transcribe(self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
        audio = _resample(wav, sample_rate)
        if len(audio) < SAMPLE_RATE // 10:
            return ""
        # wav2vec2 feature extractors normalise each utterance to zero mean, unit variance.
        audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
        with self._lock:
            logits = self._session.run(None, {self._input: audio[None].astype(np.float32)})[0]
        logits = np.asarray(logits)
        logits = logits[0] if logits.ndim == 3 else logits
        return self.decode_ids(np.argmax(logits, axis=-1).tolist())


_REGISTRY: dict[str, Callable[[], ASR]] = {
    "moonshine": MoonshineASR,
    "pocketsphinx": PocketsphinxASR,
}
# KIND:PATH plug-ins for models a user has on disk.
_PATH_KINDS: dict[str, Callable[[str], ASR]] = {
    "moonshine": lambda p: MoonshineASR(require_path(p, "Moonshine model")),
    "whisper": WhisperASR,
    "ctc": CTCOnnxASR,
}


def register_asr(name: str, factory: Callable[[], ASR]) -> None:
    """Make ``get_asr(name)`` build a recogniser with ``factory()`` (plug-in point)."""
    _REGISTRY[name] = factory
    get_asr.cache_clear()


def _guess_kind(path: pathlib.Path) -> str:
    """Which plug-in a bare path is: Moonshine export, Whisper (HF dir or .pt) or CTC ONNX."""
    folder = path if path.is_dir() else path.parent
    if path.is_file() and path.suffix == ".pt":
        return "whisper"
    config = path / "config.json"
    if path.is_dir() and config.exists() and '"whisper"' in config.read_text(errors="replace"):
        return "whisper"
    if (folder / "tokenizer.bin").exists() and any(folder.glob("decoder_model_merged.*")):
        return "moonshine"
    if any(folder.glob("*.onnx")) or path.suffix in (".onnx", ".ort"):
        return "ctc"
    raise EvaluatorUnavailable(
        f"Cannot tell which kind of ASR model {path} is; prefix it with moonshine:, whisper: or "
        "ctc: (see launch/evaluate.py --help)."
    )


@functools.cache
def get_asr(spec: str = "moonshine") -> ASR:
    """Recogniser by registry name, ``KIND:PATH`` or bare path; loaded once per process.

    Names: ``moonshine`` (default, bundled), ``pocketsphinx`` (bundled). On disk:
    ``moonshine:DIR`` (encoder_model/decoder_model_merged .ort|.onnx + tokenizer.bin),
    ``whisper:DIR`` (Hugging Face, needs transformers) or ``whisper:FILE.pt`` (openai-whisper),
    ``ctc:FILE.onnx`` (waveform-in CTC model with vocab.json beside it). Raises
    :class:`EvaluatorUnavailable` (one sentence) when the path or the library is missing.
    """
    if spec in _REGISTRY:
        return _REGISTRY[spec]()
    kind, path = split_spec(spec, tuple(_PATH_KINDS))
    if kind is None:
        if not any(sep in spec for sep in ("/", "\\", ".")):
            raise EvaluatorUnavailable(
                f"Unknown ASR {spec!r}; use one of {sorted(_REGISTRY)} or KIND:PATH with KIND in "
                f"{sorted(_PATH_KINDS)}."
            )
        kind = _guess_kind(require_path(path, "ASR model"))
    return _PATH_KINDS[kind](path)


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
