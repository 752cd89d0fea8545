"""naturalspeech2_jax: NaturalSpeech 2 (latent-diffusion zero-shot TTS and singing) in JAX/Flax NNX.

Subpackages, bottom to top: audio (I/O, log-mel, pitch), text (normalisation, G2P, vocabulary),
diffusion (SDE, losses, samplers), models (pure NNX modules), align (aligner models, Viterbi,
TextGrid, pocketsphinx), data (corpora, TFDS, grain, codes datasets), train (the generic loop and
weights-only restore), inference (codec runtime, synthesis, singing, voice conversion),
evaluation (metrics and harness), tasks (one per trainable thing), benchmarks (speed, probes).
`parallel` holds the mesh and sharding helpers. The map: docs/architecture.md.
"""

__version__ = "0.1.0"

# Audio constants shared by every stage: 16 kHz, one codec frame every 200 samples (12.5 ms).
SAMPLE_RATE = 16_000
HOP_LENGTH = 200
