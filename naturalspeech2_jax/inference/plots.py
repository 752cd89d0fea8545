"""The PNG written beside synthesised audio: log-mel, pitch and phoneme boundaries in one figure."""

from __future__ import annotations

import numpy as np

from naturalspeech2_jax.inference.synthesizer import SynthesisResult


def plot_synthesis(path: str, result: SynthesisResult, title: str = "") -> None:
    """Mel spectrogram (top) and F0 contour (bottom), both with the phoneme boundaries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from naturalspeech2_jax.evaluation.codec_metrics import log_mel

    mel = log_mel(result.wav)
    bounds = np.concatenate([[0], np.cumsum(result.durations)])
    width = min(24.0, 4.0 + 0.05 * mel.shape[1])
    fig, (ax_mel, ax_f0) = plt.subplots(2, 1, figsize=(width, 5.5), sharex=True)
    ax_mel.imshow(mel, origin="lower", aspect="auto", cmap="magma")
    ax_mel.set_ylabel("mel bin")
    ax_mel.set_title(title[:120], fontsize=9)
    f0 = np.exp(np.asarray(result.log_f0, np.float64))
    ax_f0.plot(np.arange(len(f0)), f0, lw=1.2, color="tab:blue")
    ax_f0.set_ylabel("F0 (Hz)")
    ax_f0.set_xlabel("frame (12.5 ms)")
    for ax in (ax_mel, ax_f0):
        for b in bounds:
            ax.axvline(b, color="white" if ax is ax_mel else "0.7", lw=0.5, alpha=0.7)
    for p, s, e in zip(result.phonemes, bounds[:-1], bounds[1:], strict=True):
        ax_f0.text((s + e) / 2, 1.0, p, transform=ax_f0.get_xaxis_transform(), ha="center",
                   va="bottom", fontsize=7)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
