"""naturalspeech2_jax: NaturalSpeech 2 (latent-diffusion zero-shot TTS and singing) in JAX/Flax NNX.

Subpackages: audio (I/O, features, pitch), text (G2P, vocabulary), align (aligner), data (corpora,
TFDS, grain), models (NNX modules), diffusion (SDE, losses, samplers), train (generic loop),
evaluation (metrics). `parallel` holds the mesh and sharding helpers.
"""

__version__ = "0.1.0"

# Audio constants shared by every stage: 16 kHz, one codec frame every 200 samples (12.5 ms).
SAMPLE_RATE = 16_000
HOP_LENGTH = 200
