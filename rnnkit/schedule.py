"""Learning-rate schedules on ``torch.optim.lr_scheduler``: ``train.schedule`` and its keys.

- ``constant``, ``linear``, ``cosine``: a ``LambdaLR`` over :func:`lr_factor` (a linear warmup
  over ``warmup_steps``, then linear or cosine decay to zero over the steps, or over
  ``max_minutes`` where that budget runs out first).
- ``plateau``: a ``LinearLR`` warmup, then ``ReduceLROnPlateau`` on the dev metric: the rate
  times ``plateau_factor`` on every (``plateau_patience`` + 1)-th epoch in a row without a gain.
  Both multiply the optimizer's current rate, so a cut made during the warmup stays.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.lr_scheduler import LambdaLR, LinearLR, LRScheduler, ReduceLROnPlateau

if TYPE_CHECKING:
    from rnnkit.train import TrainConfig


def lr_factor(config: TrainConfig, step: int, total: int, minutes: float = 0.0) -> float:
    """What multiplies ``train.lr`` at ``step`` (counted from 0) of ``total``, ``minutes``
    into training, under schedule ``constant``, ``linear`` or ``cosine``.

    With ``max_minutes`` set, linear and cosine decay follow whichever budget runs out first,
    steps or time, so the rate reaches its end as the time budget does.
    """
    c = config
    if c.warmup_steps and step < c.warmup_steps:
        return (step + 1) / c.warmup_steps
    if c.schedule not in ("linear", "cosine"):
        return 1.0
    progress = min(1.0, (step - c.warmup_steps) / max(1, total - c.warmup_steps))
    if c.max_minutes:
        progress = max(progress, min(1.0, minutes / c.max_minutes))
    if c.schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class Schedule:
    """The learning rate of every step of one run: :meth:`advance` before each step sets it,
    :meth:`end_epoch` gives ``plateau`` the epoch's dev metric."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, config: TrainConfig, lower_is_better: bool = False
    ):
        self.total, self.minutes = 1, 0.0  # of the step being set; read by the LambdaLR
        self.plateau: ReduceLROnPlateau | None = None
        self.steps: LRScheduler
        if config.schedule != "plateau":
            factor = lambda step: lr_factor(config, step, self.total, self.minutes)  # noqa: E731
            self.steps = LambdaLR(optimizer, factor)
            return
        warmup = max(1, config.warmup_steps)  # (step + 1) / warmup up to step warmup - 1
        self.steps = LinearLR(optimizer, start_factor=1 / warmup, total_iters=warmup - 1)
        if config.plateau_factor < 1:  # 1 never changes the rate, and torch refuses it
            # Any strict gain counts (as for early stopping), and every cut is made (eps 0).
            c = config
            self.plateau = ReduceLROnPlateau(
                optimizer, "min" if lower_is_better else "max", c.plateau_factor,
                c.plateau_patience, 0.0, "abs", eps=0.0,
            )  # fmt: skip

    def advance(self, step: int, total: int, minutes: float = 0.0) -> None:
        """Set the optimizer's rate for ``step`` (from 0) of ``total``, ``minutes`` into
        training. The rate of step 0 is set when the schedule is made; each later step's
        here, just before it, so that it sees its own epoch's length and the clock of now."""
        self.total, self.minutes = total, minutes
        if step > self.steps.last_epoch:
            self.steps.step()

    def end_epoch(self, metric: float) -> None:
        """Give ``plateau`` the epoch's dev metric (a non-finite one counts as no gain)."""
        if self.plateau is not None:
            self.plateau.step(metric if math.isfinite(metric) else math.nan)

    def continue_at(self, step: int, best: float | None, bad_epochs: int) -> None:
        """Pick up a run saved without schedule state (before schedules were torch's) from
        what it kept: ``step`` steps taken, and for ``plateau`` the best dev metric and the
        epochs without a gain (its cuts are in the optimizer's rate already)."""
        steps = self.steps.state_dict()
        self.steps.load_state_dict({**steps, "last_epoch": step - 1, "_step_count": step + 1})
        if self.plateau is not None:
            plateau = self.plateau.state_dict()
            bad = bad_epochs % (self.plateau.patience + 1)
            best = plateau["best"] if best is None else best
            self.plateau.load_state_dict({**plateau, "num_bad_epochs": bad, "best": best})

    def state_dict(self) -> dict[str, Any]:
        """Both schedulers' state, JSON-ready (for ``trainer.json``)."""
        plateau = self.plateau.state_dict() if self.plateau is not None else None
        return {"steps": self.steps.state_dict(), "plateau": plateau}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s ``state``: its progress, under this run's settings
        (rate, warmup, factor, patience), so that keys changed on ``--resume`` apply."""
        for scheduler, saved in ((self.steps, state["steps"]), (self.plateau, state["plateau"])):
            if scheduler is not None and saved is not None:
                progress = {k: saved[k] for k in PROGRESS if k in saved}
                scheduler.load_state_dict({**scheduler.state_dict(), **progress})


# What a saved schedule passes on: how far it got, not the settings it ran under.
PROGRESS = ("last_epoch", "_step_count", "best", "num_bad_epochs", "cooldown_counter")
