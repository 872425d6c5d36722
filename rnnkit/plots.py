"""Figures: training curves (and, later, attention maps and confusion matrices)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from rnnkit.checkpoint import atomic_write_bytes  # noqa: E402


def plot_training_curve(history: list[dict[str, Any]], metric: str, path: str | Path) -> None:
    """Training loss against epochs (log scale), and the dev metric against minutes."""
    import io

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
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
