"""Audio: file I/O and conditioning (io), mel spectrograms in numpy and JAX (features), PyWorld
pitch at the codec hop (pitch). All at 16 kHz with one frame per 200 samples unless told otherwise.
"""

from naturalspeech2_jax.audio.features import (
    MelConfig,
    log_mel_jax,
    log_mel_spectrogram,
    mel_filterbank,
    stft_magnitude,
)
from naturalspeech2_jax.audio.io import (
    AudioError,
    load_audio,
    loudness_dbfs,
    normalize_loudness,
    num_frames,
    pad_or_trim_to_frames,
    resample,
    save_audio,
    silence_bounds,
    to_pcm16,
    trim_silence,
)
from naturalspeech2_jax.audio.pitch import (
    UNVOICED_LOG_F0,
    expand_to_frames,
    extract_f0,
    extract_pitch,
    interpolate_log_f0,
    phoneme_pitch,
)

__all__ = [
    "AudioError",
    "MelConfig",
    "UNVOICED_LOG_F0",
    "expand_to_frames",
    "extract_f0",
    "extract_pitch",
    "interpolate_log_f0",
    "load_audio",
    "log_mel_jax",
    "log_mel_spectrogram",
    "loudness_dbfs",
    "mel_filterbank",
    "normalize_loudness",
    "num_frames",
    "pad_or_trim_to_frames",
    "to_pcm16",
    "phoneme_pitch",
    "resample",
    "save_audio",
    "silence_bounds",
    "stft_magnitude",
    "trim_silence",
]
