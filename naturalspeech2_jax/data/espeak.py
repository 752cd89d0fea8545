"""ctypes binding to the espeak-ng library from ``espeakng_loader``: speech + phoneme timings.

Used by :mod:`naturalspeech2_jax.data.synthetic` to build a corpus with exact phoneme alignments.
espeak-ng is initialised in ``AUDIO_OUTPUT_SYNCHRONOUS`` mode with phoneme events in IPA
(``espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_PHONEME_IPA``); every ``espeakEVENT_PHONEME``
carries the phoneme name (with its stress mark, as the G2P writes it; an empty name is a pause)
and the index of its first output sample, which is the ground-truth start time.

espeak-ng keeps global state (voice, parameters, callback, wave generator), so use one
:class:`EspeakSynthesizer` per process (:func:`get_synthesizer`), or :func:`synthesize_fresh` for
output that does not depend on what was synthesised before. It loads a private copy of the
shared library, the same trick phonemizer uses, so that its state never mixes with the G2P's
espeak instance living in the same process.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import shutil
import tempfile
from typing import Any

import numpy as np

__all__ = [
    "EspeakSynthesizer",
    "PhonemeEvent",
    "SynthesisResult",
    "get_synthesizer",
    "synthesize_fresh",
]

# Constants from espeak-ng's speak_lib.h (API revision 12).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "punctuation": 5, "capitals": 6,
          "wordgap": 7}  # fmt: skip
_EE_OK = 0


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),  # output sample index: exact, unlike the rounded milliseconds
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclasses.dataclass(frozen=True)
class PhonemeEvent:
    """One espeak-ng phoneme event: IPA name ('' for a pause) and its first sample."""

    name: str
    sample: int
    text_position: int


@dataclasses.dataclass(frozen=True)
class SynthesisResult:
    """Audio (float32 in [-1, 1], mono) at ``sample_rate`` and the phoneme events in order."""

    audio: np.ndarray
    sample_rate: int
    events: list[PhonemeEvent]

    @property
    def phonemes(self) -> list[str]:
        """Names of the non-pause phoneme events."""
        return [e.name for e in self.events if e.name]


class EspeakSynthesizer:
    """espeak-ng speech synthesis with IPA phoneme events (one instance per process)."""

    def __init__(self, library_path: str | None = None, data_path: str | None = None) -> None:
        if library_path is None or data_path is None:
            import espeakng_loader

            library_path = library_path or espeakng_loader.get_library_path()
            data_path = data_path or espeakng_loader.get_data_path()
        if not os.path.isfile(library_path):
            raise FileNotFoundError(f"espeak-ng library {library_path} does not exist; "
                                    "pip install 'espeakng-loader>=0.2,<0.3'.")  # fmt: skip
        if not os.path.isdir(data_path):
            raise FileNotFoundError(f"espeak-ng data directory {data_path} does not exist; "
                                    "pip install 'espeakng-loader>=0.2,<0.3'.")  # fmt: skip
        # A private copy gives this instance its own global state (see module docstring).
        self._tempdir = tempfile.mkdtemp(prefix="ns2_espeak_")
        private = os.path.join(self._tempdir, os.path.basename(library_path))
        shutil.copy(library_path, private)
        self._lib = ctypes.CDLL(private)
        shutil.rmtree(self._tempdir, ignore_errors=True)  # the loaded copy stays mapped
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int
        options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), options)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed with data path {data_path}.")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._events: list[PhonemeEvent] = []
        self._callback = _CALLBACK(self._on_audio)  # kept alive: espeak holds a raw pointer
        lib.espeak_SetSynthCallback(self._callback)
        # espeak-ng's noise sources (breath, aspiration) draw from its own PRNG; reseeding it per
        # call removes that source of variation (the wave generator's own state remains: see
        # synthesize_fresh). Older builds lack the setter and use libc rand().
        if hasattr(lib, "espeak_ng_SetRandSeed"):
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            self._set_seed = lib.espeak_ng_SetRandSeed
        else:  # pragma: no cover - depends on the espeak-ng build
            self._set_seed = ctypes.CDLL(None).srand

    def _on_audio(self, wav, num_samples, events) -> int:  # noqa: ANN001 - ctypes callback
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                # string[8] is zero-terminated unless the name fills all 8 bytes.
                name = bytes(event.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                self._events.append(PhonemeEvent(name, int(event.sample), event.text_position))
            i += 1
        return 0  # 0 = continue synthesis

    def synthesize(
        self,
        text: str,
        voice: str = "en-us",
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        word_gap: int = 0,
        seed: int = 0,
    ) -> SynthesisResult:
        """Speak ``text`` with espeak voice ``voice`` (e.g. 'en-us+f3'); see espeak_SetParameter.

        rate: words per minute (80-450); pitch and pitch_range: 0-100 (50 is the voice default);
        word_gap: extra pause between words in 10 ms units; seed: espeak-ng noise seed.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError("espeak synthesis needs non-empty text.")
        checks = {"rate": (rate, 80, 450), "pitch": (pitch, 0, 100),
                  "pitch_range": (pitch_range, 0, 100), "word_gap": (word_gap, 0, 100)}  # fmt: skip
        for name, (value, low, high) in checks.items():
            if not low <= int(value) <= high:
                raise ValueError(f"espeak {name} must be in [{low}, {high}], got {value}.")
        if self._lib is None:
            raise RuntimeError("this EspeakSynthesizer was closed; create a new one.")
        if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise ValueError(f"espeak-ng has no voice {voice!r}; use e.g. 'en-us' or 'en-us+f3'.")
        # Parameters persist across calls in espeak's global state: set every one, every time.
        for name, value in (("rate", rate), ("pitch", pitch), ("range", pitch_range),
                            ("wordgap", word_gap), ("volume", 100), ("punctuation", 0),
                            ("capitals", 0)):  # fmt: skip
            self._lib.espeak_SetParameter(_PARAM[name], int(value), 0)
        self._set_seed(seed & 0x7FFFFFFF)
        self._chunks, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        status = self._lib.espeak_Synth(
            data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r}.")
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        audio = pcm.astype(np.float32) / 32768.0
        return SynthesisResult(audio, self.sample_rate, list(self._events))

    def close(self) -> None:
        """Unload this private copy of the library (the instance is unusable afterwards)."""
        import _ctypes

        if getattr(self, "_lib", None) is not None:
            _ctypes.dlclose(self._lib._handle)
            self._lib = None


def synthesize_fresh(text: str, **kwargs: Any) -> SynthesisResult:
    """:meth:`EspeakSynthesizer.synthesize` with a freshly loaded espeak-ng, unloaded afterwards.

    espeak-ng keeps wave-generator state between utterances (even across espeak_Terminate), so
    one instance gives slightly different audio for the same call depending on what it spoke
    before. A fresh private copy per utterance (about 20 ms) makes the result a pure function of
    the arguments, which is what a reproducible corpus needs.
    """
    synth = EspeakSynthesizer()
    try:
        return synth.synthesize(text, **kwargs)
    finally:
        synth.close()


_INSTANCE: EspeakSynthesizer | None = None


def get_synthesizer() -> EspeakSynthesizer:
    """The process-wide synthesizer (espeak-ng state is global, so never make two)."""
    global _INSTANCE
    if _INSTANCE is None:
        _INSTANCE = EspeakSynthesizer()
    return _INSTANCE
