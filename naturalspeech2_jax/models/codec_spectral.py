"""Frame-rate codec encoder and decoder: STFT in, ConvNeXt blocks at 80 Hz, inverse STFT out.

The waveform codec (``codec.py``) runs its first and last layers at 16 000 samples per second;
these run every layer at the 80 Hz frame rate and leave the sample rate to a fixed STFT/iSTFT, as
Vocos (Siuzdak, 2023) and WavTokenizer do. A layer of a given width therefore costs 1/200 of what
it costs at the sample rate, so on a CPU a far wider network trains in the same time. Measured on
2 cores (``configs/codec.py:tiny_spectral``): 6.2M parameters at 13 audio-s/s against 5 audio-s/s
for the 0.81M-parameter waveform ``tiny``; that is what the quickstart's minutes of codec
training need.

- ``SpectralEncoder``: log-magnitude STFT frames (``n_fft = 4 * hop``, one frame per hop, centred
  on the hop) -> input conv -> ConvNeXt blocks -> latent ``[B, T, latent_dim]``.
- ``ISTFTDecoder``: latent -> ConvNeXt blocks -> per frame a log-magnitude and a phase for every
  bin -> complex spectrum -> windowed inverse FFT and overlap-add -> waveform ``[B, T * hop]``.
  ``phase="absolute"`` (Vocos) predicts each frame's phase; ``phase="cumulative"`` predicts its
  advance over the previous frame instead, as a deviation from the advance of a steady sinusoid
  at the bin's centre (``2 pi k hop / n_fft``), and sums it over time (a phase vocoder's rule).
  A frame's absolute phase depends on the whole past, which a network of finite receptive field
  cannot know, so without a GAN the absolute phases of neighbouring frames disagree and the
  overlap-add interferes (SI-SDR -35 dB after 600 steps on real speech); summed advances keep a
  steady partial coherent from the first step. Measured on real speech it is nevertheless worse
  (600 steps: PESQ 1.14 / STOI 0.63 against 1.22 / 0.74; docs/experiments/codec.md): the bins'
  relative phases drift apart, which smears pitch pulses and onsets inside a frame.

Both keep the waveform codec's contract (``[B, N]`` -> ``[B, N / hop, latent_dim]`` -> ``[B, N]``),
so the quantizer, the losses, the discriminators, NS2 and every API are the same.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from naturalspeech2_jax.audio.features import MelConfig, hann_window, stft_jax
from naturalspeech2_jax.models.layers import Conv1d
from naturalspeech2_jax.models.transformer import dense, layer_norm, ln
from naturalspeech2_jax.parallel import ACT_EMBED, constrain

# Log-magnitude ceiling of the decoder: exp(7) ~ 1100, above the STFT magnitude of a full-scale
# sine (n_fft / 4 = 200 with this unnormalised Hann window); keeps exp() finite early in training.
_MAX_LOG_MAGNITUDE = 7.0
PHASE_MODES = ("absolute", "cumulative")


def frame_stft(wav: jax.Array, n_fft: int, hop: int) -> jax.Array:
    """Complex STFT with exactly ``N / hop`` frames: ``[B, N] -> [B, N / hop, n_fft // 2 + 1]``.

    Frame t covers samples ``[t * hop - (n_fft - hop) / 2, ...)``, i.e. it is centred on hop t, so
    the frames line up with the codec's latent frames (reflect padding at the edges). This is
    ``audio.features.stft_jax``'s frame rule with a window of ``n_fft`` samples.
    """
    if n_fft % hop or (n_fft - hop) % 2:
        raise ValueError(f"n_fft {n_fft} must be a multiple of hop {hop} with an even overlap.")
    if wav.shape[-1] % hop:
        raise ValueError(f"{wav.shape[-1]} samples is not a multiple of hop {hop}.")
    cfg = MelConfig(n_fft=n_fft, win_length=n_fft, hop_length=hop)
    return stft_jax(jnp.asarray(wav).astype(jnp.float32), cfg)


def _overlap_add(frames: jax.Array, hop: int) -> jax.Array:
    """[B, T, r * hop] frames -> [B, (T + r - 1) * hop] signal, each frame shifted by t * hop."""
    b, t, n = frames.shape
    r = n // hop
    parts = frames.reshape(b, t, r, hop)
    out = sum(jnp.pad(parts[:, :, i], ((0, 0), (i, r - 1 - i), (0, 0))) for i in range(r))
    return out.reshape(b, (t + r - 1) * hop)


def frame_istft(spec: jax.Array, n_fft: int, hop: int) -> jax.Array:
    """Inverse of ``frame_stft``: ``[B, T, n_fft // 2 + 1]`` complex -> ``[B, T * hop]``.

    Windowed overlap-add divided by the summed squared window (the least-squares inverse), so
    ``frame_istft(frame_stft(x)) == x`` away from the reflect-padded edges.
    """
    t = spec.shape[1]
    window = hann_window(n_fft)
    frames = jnp.fft.irfft(spec, n=n_fft, axis=-1) * window
    signal = _overlap_add(frames, hop)
    envelope = _overlap_add(np.broadcast_to(window**2, (1, t, n_fft)), hop)
    pad = (n_fft - hop) // 2
    signal = signal / jnp.maximum(jnp.asarray(envelope), 1e-3)
    return signal[:, pad : pad + t * hop]


class ConvNeXtBlock(nnx.Module):
    """x + gamma * W2 gelu(W1 LN(depthwise_conv7(x))) (ConvNeXt, as in Vocos), [B, T, C]."""

    def __init__(self, dim: int, mlp_ratio: int, layer_scale: float, rngs: nnx.Rngs):
        self.dwconv = Conv1d(dim, dim, 7, groups=dim, weight_norm=False, rngs=rngs)
        self.norm = layer_norm(dim, rngs)
        self.up = dense(dim, mlp_ratio * dim, ("embed", "mlp"), rngs)
        self.down = dense(mlp_ratio * dim, dim, ("mlp", "embed"), rngs)
        self.gamma = nnx.Param(jnp.full((dim,), layer_scale, jnp.float32), out_sharding=("embed",))

    def __call__(self, x: jax.Array) -> jax.Array:
        h = ln(self.norm, self.dwconv(x))
        h = self.down(jax.nn.gelu(self.up(h)))
        return constrain(x + self.gamma[...].astype(h.dtype) * h, ACT_EMBED)


def _blocks(dim: int, layers: int, mlp_ratio: int, rngs: nnx.Rngs) -> nnx.List:
    # Layer scale 1 / layers (Vocos): the residual stream starts near the input projection.
    return nnx.List([ConvNeXtBlock(dim, mlp_ratio, 1.0 / layers, rngs) for _ in range(layers)])


class SpectralEncoder(nnx.Module):
    """[B, N] waveform -> log-magnitude STFT frames -> ConvNeXt -> [B, N / hop, latent_dim]."""

    def __init__(self, hop, dim, mlp_ratio, latent_dim, layers, rngs):
        self.hop, self.n_fft = hop, 4 * hop
        bins = self.n_fft // 2 + 1
        self.stem = Conv1d(bins, dim, 7, weight_norm=False, rngs=rngs)
        self.norm_in = layer_norm(dim, rngs)
        self.blocks = _blocks(dim, layers, mlp_ratio, rngs)
        self.norm_out = layer_norm(dim, rngs)
        self.out = dense(dim, latent_dim, ("embed", None), rngs)

    def __call__(self, wav: jax.Array) -> jax.Array:
        spec = frame_stft(wav.astype(jnp.float32), self.n_fft, self.hop)
        # log|S| with a floor 100 dB under a full-scale sine: silence is a constant, not -inf.
        feats = jnp.log(jnp.abs(spec) + 1e-3).astype(self.stem.dtype)
        x = ln(self.norm_in, self.stem(feats))
        for block in self.blocks:
            x = block(x)
        return self.out(ln(self.norm_out, x))


class ISTFTDecoder(nnx.Module):
    """[B, T, latent_dim] -> ConvNeXt -> log-magnitude and phase per bin -> iSTFT -> [B, T*hop]."""

    def __init__(self, hop, dim, mlp_ratio, latent_dim, layers, rngs, phase="absolute"):
        if phase not in PHASE_MODES:
            raise ValueError(f"phase {phase!r} is not one of {PHASE_MODES}; set model.phase.")
        self.hop, self.n_fft, self.phase = hop, 4 * hop, phase
        self.bins = self.n_fft // 2 + 1
        self.stem = Conv1d(latent_dim, dim, 7, weight_norm=False, rngs=rngs)
        self.norm_in = layer_norm(dim, rngs)
        self.blocks = _blocks(dim, layers, mlp_ratio, rngs)
        self.norm_out = layer_norm(dim, rngs)
        self.head = dense(dim, 2 * self.bins, ("embed", None), rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        x = ln(self.norm_in, self.stem(z.astype(self.stem.dtype)))
        for block in self.blocks:
            x = block(x)
        # The spectrum and the inverse FFT in float32 whatever the compute dtype.
        out = self.head(ln(self.norm_out, x)).astype(jnp.float32)
        log_mag, phase = out[..., : self.bins], out[..., self.bins :]
        if self.phase == "cumulative":
            # Bin k's steady advance 2 pi k hop / n_fft taken modulo 2 pi (exact in float32),
            # plus the predicted deviation, summed over frames.
            steady = 2 * np.pi * ((np.arange(self.bins) * self.hop) % self.n_fft) / self.n_fft
            phase = jnp.cumsum(phase + jnp.asarray(steady, jnp.float32), axis=1)
        mag = jnp.exp(jnp.minimum(log_mag, _MAX_LOG_MAGNITUDE))
        # The phase as an angle: cos/sin of an unbounded output wrap by themselves (Vocos).
        spec = jax.lax.complex(mag * jnp.cos(phase), mag * jnp.sin(phase))
        return frame_istft(spec, self.n_fft, self.hop)
