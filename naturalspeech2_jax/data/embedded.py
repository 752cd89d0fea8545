"""The embedded default dataset: the synthetic corpus, generated and prepared on first use.

Every model config whose ``data.dataset_dir`` is empty trains on this, so
``python launch/train.py --config=configs/codec.py:smoke --workdir=DIR`` works on a fresh clone
with no data argument. The result is cached (generation and preparation each take seconds to
minutes on 2 cores) under ``$NS2_DATA_DIR`` or ``~/.cache/naturalspeech2_jax``:

    <root>/embedded_<size>/corpus/            the synthetic corpus (train/, heldout/)
    <root>/embedded_<size>/data/embedded/1.0.0  the prepared TFDS dataset

Durations come from the exact timings espeak-ng reports (no aligner needed) and pitch from
pyworld DIO (fast; the corpus is synthetic, so harvest's extra accuracy buys nothing).
A lock file makes concurrent first uses (several processes of one job) wait for one builder.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os

from etils import epath

log = logging.getLogger(__name__)

# size name -> (speakers, utterances per speaker, held-out speakers)
SIZES = {
    "smoke": (6, 4, 2),  # 24 utterances: tests and smoke presets (seconds)
    "default": (24, 20, 4),  # 480 utterances, ~0.6 h: tiny presets and the quickstart
}


def cache_root() -> epath.Path:
    """Where embedded datasets are cached: ``$NS2_DATA_DIR`` or ``~/.cache/naturalspeech2_jax``."""
    root = os.environ.get("NS2_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "naturalspeech2_jax"
    )
    return epath.Path(root)


def embedded_dataset_dir(size: str = "default", root: str | os.PathLike | None = None) -> str:
    """The prepared embedded dataset's version dir, building it first if it is not cached."""
    # Generation and preparation bring espeak-ng, G2P and TFDS (seconds to import): only a first
    # use, which builds the dataset, needs them; the tasks import this module for the paths.
    from naturalspeech2_jax.data.prepare import prepare_corpus
    from naturalspeech2_jax.data.synthetic import generate_corpus
    from naturalspeech2_jax.data.tfds_builder import VERSION

    if size not in SIZES:
        raise ValueError(f"embedded dataset size {size!r} is unknown; use one of {sorted(SIZES)}.")
    base = epath.Path(root) if root is not None else cache_root()
    base = base / f"embedded_{size}"
    out = base / "data" / "embedded" / VERSION
    if (out / "card.json").exists():
        return os.fspath(out)
    base.mkdir(parents=True, exist_ok=True)
    with open(os.fspath(base / ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it right now
        if not (out / "card.json").exists():
            speakers, per_speaker, heldout = SIZES[size]
            log.info("building the embedded %s dataset under %s (first use)", size, base)
            generate_corpus(
                base / "corpus",
                num_speakers=speakers,
                utts_per_speaker=per_speaker,
                num_heldout=heldout,
                progress=False,
            )
            prepare_corpus(
                base / "corpus",
                base / "data",
                name="embedded",
                durations="exact",
                pitch_method="dio",
                progress=False,
            )
    return os.fspath(out)


_ENCODE_HINT = (
    "train a codec (python launch/train.py --config=configs/codec.py:tiny "
    "--workdir=runs/codec_tiny), encode a prepared dataset with it (python launch/codec.py "
    "encode-dataset --checkpoint runs/codec_tiny DATA/<name>/1.0.0 DATA/<name>_codes/1.0.0) "
    "and pass --config.data.dataset_dir=DATA/<name>_codes/1.0.0"
)


def resolve_dataset_dir(config, *, codes: bool = False) -> str:
    """``config.data.dataset_dir``, else the embedded dataset of ``config.data.embedded_size``.

    ``codes=True`` (NS2) asks for a codes dataset: the embedded one is the corpus encoded by its
    codec (made by the quickstart), and the dataset must hold the codec's ``codes`` feature.
    """
    path = str(config.data.get("dataset_dir", "") or "")
    size = str(config.data.get("embedded_size", "default"))
    if not path:
        return embedded_codes_dataset_dir(size) if codes else embedded_dataset_dir(size)
    if not codes:
        if not epath.Path(path).exists():
            raise FileNotFoundError(
                f"dataset {path} does not exist; prepare one with launch/prepare_data.py or leave "
                "config.data.dataset_dir empty to use the embedded corpus."
            )
        return path
    features = epath.Path(path) / "features.json"
    if not features.exists():
        raise FileNotFoundError(f"{path} is not a prepared dataset (no features.json): "
                                f"{_ENCODE_HINT}.")  # fmt: skip
    if '"codes"' not in features.read_text():
        raise ValueError(f"{path} has no codec codes (a feature 'codes'): {_ENCODE_HINT}.")
    return path


# The codes dataset of the embedded corpus (made by launch/quickstart.py, which trains the codec
# first) is found through a small pointer file in the cache root, per size.
_PRESET_OF_SIZE = {"smoke": "smoke", "default": "tiny"}


def _codes_pointer(size: str) -> epath.Path:
    return cache_root() / f"embedded_{size}_codes.json"


def register_codes_dataset(size: str, dataset_dir: str, codec_checkpoint: str) -> None:
    """Record a codes dataset (and its codec) as the embedded one of ``size``."""
    if size not in SIZES:
        raise ValueError(f"embedded dataset size {size!r} is unknown; use one of {sorted(SIZES)}.")
    path = _codes_pointer(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"dataset_dir": os.fspath(dataset_dir), "codec_checkpoint": codec_checkpoint}
    path.write_text(json.dumps(payload))


def embedded_codes_dataset_dir(size: str = "default") -> str:
    """The embedded corpus encoded by its codec (``configs/diffusion.py`` with no dataset_dir).

    Raises FileNotFoundError naming the command that makes it when it does not exist yet.
    """
    if size not in SIZES:
        raise ValueError(f"embedded dataset size {size!r} is unknown; use one of {sorted(SIZES)}.")
    preset = _PRESET_OF_SIZE[size]
    make = (
        f"python launch/quickstart.py --workdir=runs/quickstart_{preset} --preset={preset} "
        "(it trains the codec and writes the codes dataset)"
    )
    path = _codes_pointer(size)
    if not path.exists():
        raise FileNotFoundError(
            f"no embedded codes dataset ({size}) is registered in {path}; make it with {make}."
        )
    dataset_dir = json.loads(path.read_text())["dataset_dir"]
    if not (epath.Path(dataset_dir) / "features.json").exists():
        raise FileNotFoundError(
            f"the embedded codes dataset {dataset_dir} named by {path} is gone; make it again "
            f"with {make}."
        )
    return dataset_dir
