"""Training-curve plots saved beside a model (people would rather look than read loss logs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_losses(history: list[dict[str, float]], path: Path, title: str, xlabel: str = "step", skip: tuple[str, ...] = ("step",)) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key in history[0]:
        if key in skip:
            continue
        vals = np.array([h[key] for h in history])
        window = max(1, len(vals) // 50)  # a moving average keeps noisy small batches readable
        ax.plot(np.arange(window, len(vals) + 1), np.convolve(vals, np.ones(window) / window, mode="valid"), label=key)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
