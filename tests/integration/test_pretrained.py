"""The shipped model (``pretrained/ns2_tiny_real``, the export of ``quickstart --preset=real``):
it is complete and within the size the repository allows, it loads with
``Synthesizer.from_checkpoint`` like a training run, and it speaks a sentence in a prompt's voice
at a human speaking rate. The prompt is a dev speaker's recording when ../shared/data is present,
otherwise an espeak-ng utterance the test makes (a fresh clone has no ../shared)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from etils import epath

from naturalspeech2_jax import SAMPLE_RATE
from naturalspeech2_jax.audio.features import log_mel_spectrogram
from naturalspeech2_jax.inference import Synthesizer, exported
from tests.helpers import REPO, SHARED_DATA

MODEL = REPO / "pretrained" / "ns2_tiny_real"
MAX_BYTES = 60 * 2**20  # the cap: every committed version stays in the history
TEXT = "Please call Stella and ask her to bring these things with her from the store."
STEPS = 8  # fewer than the card's 25: this checks the model runs and speaks, not its quality


@pytest.fixture(scope="module")
def synth() -> Synthesizer:
    return Synthesizer.from_checkpoint(MODEL)


@pytest.fixture(scope="module")
def prompt_wav() -> np.ndarray:
    """3 s of a dev speaker (unseen in training), or an espeak-ng sentence resampled to 16 kHz."""
    dev = SHARED_DATA / "speechocean762_adult" / "dev"
    files = sorted(dev.rglob("*.flac")) if dev.is_dir() else []
    if files:
        from naturalspeech2_jax.audio.io import load_audio

        return load_audio(str(files[0]))[: 3 * SAMPLE_RATE]
    from scipy.signal import resample_poly

    from naturalspeech2_jax.data.espeak import synthesize_fresh

    said = synthesize_fresh("A short sentence spoken for the prompt of this test.", voice="en-us")
    wav = resample_poly(said.audio, SAMPLE_RATE, said.sample_rate).astype(np.float32)
    return 0.7 * wav / float(np.max(np.abs(wav)))


def test_model_folder_is_complete_and_small_enough():
    manifest = exported.read_manifest(MODEL)
    assert manifest["dtype"] == "bfloat16"
    on_disk = {str(p.relative_to(MODEL)): p.stat().st_size for p in MODEL.rglob("*")
               if p.is_file() and p.name != "README.md"}  # fmt: skip
    assert manifest["size_bytes"] == sum(on_disk.values()) <= MAX_BYTES
    for name in on_disk:
        if name.endswith(".npz"):  # the sha256 the reader checks before loading weights
            assert exported.check_file(epath.Path(MODEL / name), manifest)
    card = (MODEL / "README.md").read_text()
    for must in ("CC BY 4.0", "CC0", "quickstart.py --workdir", "--preset=real", "WER"):
        assert must in card, f"the model card lacks {must!r}"


def test_loads_like_a_run_and_speaks_in_the_prompts_voice(synth, prompt_wav):
    assert synth.checkpoint == str(MODEL) or pathlib.Path(synth.checkpoint) == MODEL
    out = synth.synthesize(TEXT, prompt_wav, steps=STEPS, seed=3, guidance_scale=2.0)
    wav = np.asarray(out.wav)
    assert wav.dtype == np.float32 and np.all(np.isfinite(wav))
    seconds = wav.size / SAMPLE_RATE
    # 15 words: people say them in 3-6 s; a broken duration predictor gives far less or more.
    assert 2.0 < seconds < 9.0, seconds
    frames = np.asarray(out.durations)
    assert len(frames) == len(out.phonemes) > 40 and frames.min() >= 0
    assert 3.0 < frames.mean() < 15.0  # frames (12.5 ms) per phoneme
    rms_db = 20 * np.log10(np.sqrt(np.mean(wav**2)) + 1e-9)
    assert rms_db > -40.0, rms_db  # speech, not silence
    # The same seed gives the same speech (a user can reproduce a sample).
    again = synth.synthesize(TEXT, prompt_wav, steps=STEPS, seed=3, guidance_scale=2.0)
    np.testing.assert_array_equal(again.wav, out.wav)


def test_its_codec_reconstructs_the_prompt(synth, prompt_wav):
    codec = synth.codec  # the folder's codec, loaded once with the synthesizer
    codes = codec.encode(prompt_wav)
    assert codes.shape[1] == 16 and abs(codes.shape[0] - prompt_wav.size / 200) <= 2
    back = np.asarray(codec.decode_codes(codes))[: prompt_wav.size]
    n = min(back.size, prompt_wav.size)
    a = np.asarray(log_mel_spectrogram(prompt_wav[:n]))
    b = np.asarray(log_mel_spectrogram(back[:n]))
    # The reconstruction's log-mel is far closer to its input than to silence or noise.
    assert np.mean(np.abs(a - b)) < 0.5 * np.mean(np.abs(a - a.mean()))
