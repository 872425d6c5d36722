"""What rank 0 shows of a training run: the progress bar, the epoch log lines, ``curve.png`` and
TensorBoard scalars. Each is a :class:`Reporter` the Trainer calls at the same few moments;
none takes part in training, so the loop neither knows nor cares which are on."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnkit.errors import ConfigError

if TYPE_CHECKING:
    from rnnkit.train import TrainConfig


@dataclass
class StepReport:
    """One finished training step, as the reporters see it."""

    step: int  # updates so far
    loss: float  # the batch's mean loss
    epoch_loss: float  # the running mean of this epoch's batch losses
    lr: float
    grad_norm: float | None  # before clipping; None when clipping is off
    terms_per_s: float  # this process's loss terms (tokens or examples) per second


class Reporter:
    """A view of training. ``history`` is ``metrics.jsonl``'s records, one per finished epoch.
    Every hook does nothing unless a subclass says otherwise."""

    def epoch_started(self, epoch: int, batches: int, done: int) -> None:
        """Epoch ``epoch`` of ``batches`` batches begins, ``done`` of them already trained."""

    def step_done(self, report: StepReport) -> None:
        """A training step finished."""

    def epoch_done(self, history: list[dict[str, Any]], metrics: dict[str, float]) -> None:
        """An epoch ended (``history[-1]``) with dev ``metrics``, and was checkpointed."""

    def close(self) -> None:
        """Training ended, finished or failed: write what is left, let go of files."""


class ProgressBar(Reporter):
    """A tqdm bar per epoch with the running loss, on terminals only."""

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.bar: Any = None

    def epoch_started(self, epoch: int, batches: int, done: int) -> None:
        """Open the epoch's bar, ``done`` batches in when a run resumed mid-epoch."""
        from tqdm import tqdm

        self.bar = tqdm(total=batches, initial=done, desc=f"epoch {epoch}/{self.epochs}",
                        disable=None, leave=False, dynamic_ncols=True, file=sys.stderr)  # fmt: skip

    def step_done(self, report: StepReport) -> None:
        """Advance the bar and show the epoch's running loss."""
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{report.epoch_loss:.4f}", refresh=False)

    def epoch_done(self, history: list[dict[str, Any]], metrics: dict[str, float]) -> None:
        """Close the epoch's bar."""
        self.close()

    def close(self) -> None:
        """Close the bar, if one is open."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpochLog(Reporter):
    """One line per epoch: step, training loss, the dev metrics, elapsed seconds."""

    def __init__(self, epochs: int, log: Callable[[str], None]):
        self.epochs, self.log = epochs, log

    def epoch_done(self, history: list[dict[str, Any]], metrics: dict[str, float]) -> None:
        """Log the epoch's line."""
        r, shown = history[-1], "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        self.log(f"epoch {r['epoch']}/{self.epochs}  step {r['step']}  "
                 f"train_loss {r['train_loss']:.4f}  {shown}  {r['elapsed_s']:.1f}s")  # fmt: skip


class Curve(Reporter):
    """``curve.png``: redrawn after an epoch at most every ``every_s`` seconds, and at the end."""

    def __init__(self, path: Path, metric: str, every_s: float):
        self.path, self.metric, self.every_s = path, metric, every_s
        self.last = time.perf_counter()  # when curve.png was last drawn
        self.history: list[dict[str, Any]] | None = None  # epochs not drawn yet

    def epoch_done(self, history: list[dict[str, Any]], metrics: dict[str, float]) -> None:
        """Keep the history; redraw if ``every_s`` seconds have passed since the last drawing."""
        self.history = history
        if time.perf_counter() - self.last >= self.every_s:
            self.close()

    def close(self) -> None:
        """Draw the epochs not drawn yet, if any."""
        if self.history:
            from rnnkit.plots import plot_training_curve

            plot_training_curve(self.history, self.metric, self.path)
            self.last, self.history = time.perf_counter(), None


class TensorBoard(Reporter):
    """``train/loss``, ``train/lr``, ``train/grad_norm`` (when clipping) and
    ``train/terms_per_s`` every step, ``dev/METRIC`` every epoch, into ``directory``."""

    def __init__(self, directory: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.tensorboard needs the tensorboard package (pip install tensorboard)"
            ) from None
        self.writer = SummaryWriter(directory)

    def step_done(self, report: StepReport) -> None:
        """Write the step's training scalars (grad_norm only when clipping)."""
        scalars = {"loss": report.loss, "lr": report.lr, "grad_norm": report.grad_norm,
                   "terms_per_s": report.terms_per_s or None}  # fmt: skip
        for name, value in scalars.items():
            if value is not None:
                self.writer.add_scalar(f"train/{name}", value, report.step)

    def epoch_done(self, history: list[dict[str, Any]], metrics: dict[str, float]) -> None:
        """Write the dev metrics at the epoch's number."""
        for name, value in metrics.items():
            self.writer.add_scalar(f"dev/{name}", value, history[-1]["epoch"])

    def close(self) -> None:
        """Flush and close the event file; a failed run's last scalars are worth keeping too."""
        self.writer.close()


def rank0_reporters(
    config: TrainConfig, out_dir: Path, metric: str, log: Callable[[str], None]
) -> list[Reporter]:
    """The reporters ``config`` asks for, in the order they run."""
    reporters: list[Reporter] = [ProgressBar(config.epochs)] if config.progress else []
    reporters.append(EpochLog(config.epochs, log))
    reporters.append(Curve(out_dir / "curve.png", metric, config.plot_every_s))
    if config.tensorboard:
        reporters.append(TensorBoard(config.tensorboard))
    return reporters
