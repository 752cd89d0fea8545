"""Text front end: English normalisation, G2P (phonemizer + espeak-ng) and the phoneme vocabulary.

from naturalspeech2_jax.text import phonemize, default_vocab
ids = default_vocab().encode(phonemize("Dr. Smith paid $3.50."))
"""

from naturalspeech2_jax.text.g2p import (
    G2P,
    PUNCTUATION_TOKENS,
    SIL,
    WB,
    is_phoneme,
    phonemize,
    phonemize_batch,
)
from naturalspeech2_jax.text.normalize import normalize_text
from naturalspeech2_jax.text.vocab import (
    PAD,
    UNK,
    PhonemeVocab,
    UnknownSymbolError,
    default_vocab,
)

__all__ = [
    "G2P",
    "PAD",
    "PUNCTUATION_TOKENS",
    "SIL",
    "UNK",
    "WB",
    "PhonemeVocab",
    "UnknownSymbolError",
    "default_vocab",
    "is_phoneme",
    "normalize_text",
    "phonemize",
    "phonemize_batch",
]
