"""Figures as PNG files: training curves, confusion matrices, attention maps."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from rnnkit.checkpoint import atomic_write_bytes  # noqa: E402


def save_figure(fig: Any, path: str | Path) -> None:
    """Lay ``fig`` out, write it to ``path`` as a PNG (atomically: a reader never sees half an
    image) and free it."""

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_training_curve(history: list[dict[str, Any]], metric: str, path: str | Path) -> None:
    """Training loss against epochs (log scale), and the dev metric against minutes."""
    epochs = [rec["epoch"] for rec in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(epochs, [rec["train_loss"] for rec in history], marker="o", ms=3)
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.set_title("training loss")
    minutes = [rec["elapsed_s"] / 60 for rec in history]
    right.plot(minutes, [rec.get(metric, float("nan")) for rec in history], marker="o", ms=3)
    right.set_xlabel("minutes of training (one point per epoch)")
    right.set_title(f"dev {metric}")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_confusion_matrix(
    labels: list[str], counts: list[list[int]], path: str | Path, title: str = ""
) -> None:
    """A confusion matrix as a heat map: gold labels down, predicted across.

    Each cell's colour is its share of the gold row (so rare classes show as clearly as common
    ones); the counts are written in the cells when there are at most 20 labels.
    """
    import numpy as np

    grid = np.asarray(counts, dtype=float).reshape(len(labels), len(labels))
    shares = grid / np.maximum(grid.sum(axis=1, keepdims=True), 1)
    side = min(24.0, max(4.5, 0.42 * len(labels) + 2.0))
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(labels))
    small = 8 if len(labels) <= 20 else 6
    ax.set_xticks(ticks, labels, rotation=90, fontsize=small)
    ax.set_yticks(ticks, labels, fontsize=small)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    if len(labels) <= 20:
        for i in ticks:
            for j in ticks:
                if grid[i, j]:
                    colour = "white" if shares[i, j] > 0.5 else "black"
                    ax.text(j, i, f"{int(grid[i, j])}", ha="center", va="center",
                            color=colour, fontsize=small)  # fmt: skip
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the gold row")
    if title:
        ax.set_title(title)
    save_figure(fig, path)


def plot_attention(
    source: list[str], target: list[str], weights: Any, path: str | Path, title: str = ""
) -> None:
    """The seed's attention heat map: one row per output word, one column per source word,
    every word labelled on its axis, a colour bar for the weight (0–1).

    weights: ``(len(target), len(source))`` rows of attention weights (a tensor, array or lists).
    """
    import numpy as np

    grid = np.asarray(weights, dtype=float).reshape(len(target), len(source))
    fig, ax = plt.subplots(
        figsize=(max(3.5, 0.45 * len(source) + 2.0), max(3.0, 0.4 * len(target) + 1.5))
    )
    image = ax.matshow(grid, cmap="bone", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(source)), source, rotation=90)
    ax.set_yticks(range(len(target)), target)
    ax.set_xlabel("source")
    ax.set_ylabel("translation")
    if title:
        ax.set_title(title, pad=12, fontsize=9)
    save_figure(fig, path)
