"""Inference: text-to-speech (Synthesizer), singing from a score, voice conversion."""

from naturalspeech2_jax.inference.synthesizer import (  # noqa: F401
    CheckpointError,
    SynthesisError,
    SynthesisResult,
    Synthesizer,
    load_synthesizer,
)
