"""Packaging for naturalspeech2_jax: a JAX/Flax reimplementation of NaturalSpeech 2.

Install for use:        pip install -e .
Install for the tests:  pip install -e ".[dev,eval,demo,beam]"
Web demo:               pip install -e ".[demo]"
Data prep on Beam:      pip install -e ".[beam]"  (launch/prepare_data.py --runner=beam)
"""

from setuptools import find_packages, setup

CORE = [
    "jax[cpu]>=0.10,<0.11",
    "jaxlib>=0.10,<0.11",
    "flax>=0.12,<0.13",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    "grain>=0.2.10",
    "tensorflow-datasets>=4.9.7",
    "array_record>=0.7",
    "ml_collections>=1.0",
    "absl-py>=2.1",
    "etils[epath]>=1.10",
    "numpy>=1.26",
    "scipy>=1.11",
    "librosa>=0.10,<0.12",
    "pyworld>=0.3.4",
    "soundfile>=0.12",
    "phonemizer>=3.3",
    "espeakng-loader>=0.2",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "mido>=1.3,<2",  # MIDI scores for singing (launch/sing.py)
]

EVAL = [
    # torch must be pinned exactly: a CPU wheel of 2.13.0 is provided; anything else pulls CUDA.
    "torch==2.13.0",
    "setuptools<81",  # resemblyzer imports pkg_resources
    "resemblyzer>=0.1.4",
    "onnxruntime>=1.20",
    "moonshine-cpp==0.1.4",  # ships Moonshine base-en ONNX weights; run through onnxruntime
    "tokenizers>=0.19",
    "pocketsphinx>=5.0",
    "speechmos>=0.0.1",
    "jiwer>=3.0",
    "pesq>=0.0.4",
    "pystoi>=0.4",
]

DEV = [
    "pytest>=8",
    "pytest-xdist>=3.5",
    "ruff>=0.6",
    "nbclient>=0.10",
    "nbformat>=5.10",
    "ipykernel>=6.29",
    # The web demo's browser test drives Debian's chromium (.ci/run installs it); Playwright's
    # own browser download is never used.
    "playwright>=1.50",
]

DEMO = [
    "gradio>=6.0,<7",  # launch/demo.py
]

# launch/prepare_data.py --runner=beam (data/prepare_beam.py). With the gcp extra of Beam for
# Dataflow: pip install "apache-beam[gcp]" beside it.
BEAM = ["apache-beam>=2.60,<3"]

setup(
    name="naturalspeech2_jax",
    version="0.1.0",
    description="NaturalSpeech 2 (latent diffusion TTS with zero-shot voice cloning) in JAX/Flax",
    python_requires=">=3.10",
    # configs/ is a package too: config files import each other (`from configs.common import ...`)
    # wherever they are run from, with no sys.path edits.
    packages=find_packages(include=["naturalspeech2_jax", "naturalspeech2_jax.*", "configs"]),
    install_requires=CORE,
    extras_require={
        "eval": EVAL,
        "dev": DEV,
        "demo": DEMO,
        "beam": BEAM,
        "tensorboard": ["tensorboardX>=2.6"],
        # gs:// work directories and datasets through etils.epath (Orbax reaches GCS natively).
        "gcs": ["etils[epath,epath-gcs]>=1.10"],
    },
)
