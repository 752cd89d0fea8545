"""The project's PNG writers: log-mel panels, F0 contours, and synthesis with phoneme boundaries.

Training evaluation (``tasks/``), the samples stage and the CLIs write their pictures here, so
every mel in the project's PNGs is the same log-mel. matplotlib is imported on first use: it takes
a second to import and only these writers need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from etils import epath

from naturalspeech2_jax.evaluation.codec_metrics import log_mel

if TYPE_CHECKING:
    from naturalspeech2_jax.inference.synthesizer import SynthesisResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_mels(path: str | epath.Path, panels: dict[str, np.ndarray]) -> None:
    """One log-mel panel per waveform (title -> 16 kHz audio), stacked in one PNG."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.2 * len(panels)), squeeze=False)
    for ax, (title, wav) in zip(axes[:, 0], panels.items(), strict=True):
        ax.imshow(log_mel(wav), origin="lower", aspect="auto", cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel")
    axes[-1, 0].set_xlabel("frame (12.5 ms)")
    fig.tight_layout()
    fig.savefig(str(path), dpi=80)
    plt.close(fig)


def plot_pitch(
    path: str | epath.Path, curves: dict[str, tuple[np.ndarray, np.ndarray | None]]
) -> None:
    """F0 contours in Hz (log-F0 input; unvoiced frames blank where a voiced mask is given)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 2.6))
    for label, (log_f0, voiced) in curves.items():
        f0 = np.exp(np.asarray(log_f0, np.float64))
        if voiced is not None:
            f0 = np.where(np.asarray(voiced) > 0, f0, np.nan)
        ax.plot(np.arange(len(f0)), f0, label=label, lw=1)
    ax.set_xlabel("frame (12.5 ms)")
    ax.set_ylabel("F0 (Hz)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path), dpi=80)
    plt.close(fig)


def plot_synthesis(path: str, result: SynthesisResult, title: str = "") -> None:
    """Mel spectrogram (top) and F0 contour (bottom), both with the phoneme boundaries."""
    plt = _pyplot()
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
