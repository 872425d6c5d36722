"""What rank 0 shows of a training run: the progress bar, the epoch log lines, ``curve.png`` and
TensorBoard scalars. Each is a :class:`Reporter` the Trainer calls at the same few moments;
none of them takes part in training, so the loop neither knows nor cares which are on."""

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
    """A view of training; every hook does nothing unless a subclass says otherwise."""

    def epoch_started(self, epoch: int, batches: int, done: int) -> None:
        """Epoch ``epoch`` of ``batches`` batches begins, ``done`` of them already trained."""

    def step_done(self, report: StepReport) -> None:
        """A training step finished."""

    def epoch_done(self, history: list[dict[str, Any]], metrics: dict[str, float]) -> None:
        """An epoch ended: ``history[-1]`` is its record (``metrics.jsonl``'s last line),
        ``metrics`` its dev metrics."""

    def finished(self, history: list[dict[str, Any]]) -> None:
        """Training ended normally."""

    def close(self) -> None:
        """Training ended, normally or not: let go of files and terminals."""


class ProgressBar(Reporter):
    """A tqdm bar per epoch with the running loss (on terminals only)."""

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.bar: Any = None

    def epoch_started(self, epoch: int, batches: int, done: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=batches, initial=done, desc=f"epoch {epoch}/{self.epochs}",
                        disable=None, leave=False, dynamic_ncols=True, file=sys.stderr)  # fmt: skip

    def step_done(self, report: StepReport) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{report.epoch_loss:.4f}", refresh=False)

    def epoch_done(self, history: list[dict[str, Any]], metrics: dict[str, float]) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpochLog(Reporter):
    """One line per epoch: step, training loss, the dev metrics, elapsed seconds."""

    def __init__(self, epochs: int, log: Callable[[str], None]):
        self.epochs, self.log = epochs, log

    def epoch_done(self, history: list[dict[str, Any]], metrics: dict[str, float]) -> None:
        r = history[-1]
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        self.log(f"epoch {r['epoch']}/{self.epochs}  step {r['step']}  "
                 f"train_loss {r['train_loss']:.4f}  {shown}  {r['elapsed_s']:.1f}s")  # fmt: skip


class Curve(Reporter):
    """``curve.png``: redrawn after an epoch at most every ``every_s`` seconds, and at the end."""

    def __init__(self, path: Path, metric: str, every_s: float):
        self.path, self.metric, self.every_s = path, metric, every_s
        self.last = time.perf_counter()  # the first plot after every_s, and at the end

    def epoch_done(self, history: list[dict[str, Any]], metrics: dict[str, float]) -> None:
        if time.perf_counter() - self.last >= self.every_s:
            self.finished(history)

    def finished(self, history: list[dict[str, Any]]) -> None:
        if history:
            from rnnkit.plots import plot_training_curve

            plot_training_curve(history, self.metric, self.path)
            self.last = time.perf_counter()


class TensorBoard(Reporter):
    """``train/loss``, ``train/lr``, ``train/grad_norm``, ``train/terms_per_s`` every step and
    ``dev/METRIC`` every epoch, into the TensorBoard directory ``directory``."""

    def __init__(self, directory: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.tensorboard needs the tensorboard package (pip install tensorboard)"
            ) from None
        self.writer = SummaryWriter(directory)

    def step_done(self, report: StepReport) -> None:
        add, step = self.writer.add_scalar, report.step
        add("train/loss", report.loss, step)
        add("train/lr", report.lr, step)
        if report.grad_norm is not None:
            add("train/grad_norm", report.grad_norm, step)
        if report.terms_per_s > 0:
            add("train/terms_per_s", report.terms_per_s, step)

    def epoch_done(self, history: list[dict[str, Any]], metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(f"dev/{name}", value, history[-1]["epoch"])

    def close(self) -> None:  # a failed run's last scalars are worth keeping too
        self.writer.close()


def rank0_reporters(
    config: TrainConfig, out_dir: Path, metric: str, log: Callable[[str], None]
) -> list[Reporter]:
    """The reporters ``config`` asks for, in the order they run."""
    reporters: list[Reporter] = [ProgressBar(config.epochs)] if config.progress else []
    reporters += [EpochLog(config.epochs, log), Curve(out_dir / "curve.png", metric,
                  config.plot_every_s)]  # fmt: skip
    if config.tensorboard:
        reporters.append(TensorBoard(config.tensorboard))
    return reporters


__all__ = ["Curve", "EpochLog", "ProgressBar", "Reporter", "StepReport", "TensorBoard",
           "rank0_reporters"]  # fmt: skip
