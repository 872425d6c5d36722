"""The learning-rate schedules on torch.optim.lr_scheduler give, step by step, the rates of the
formulas they replaced (written out again here, independently of rnnkit/schedule.py)."""

import json
import math

import pytest
import torch

from rnnkit.config import from_dict
from rnnkit.schedule import Schedule, lr_factor
from rnnkit.train import TrainConfig


def _config(**keys) -> TrainConfig:
    return from_dict(TrainConfig, {"lr": 0.1, **keys})


def _old_rate(c: TrainConfig, step: int, total: int, minutes: float, scale: float) -> float:
    """The Trainer's ``_lr_at`` before schedules were torch's."""
    factor = 1.0
    if c.warmup_steps and step < c.warmup_steps:
        factor = (step + 1) / c.warmup_steps
    elif c.schedule in ("linear", "cosine"):
        progress = min(1.0, (step - c.warmup_steps) / max(1, total - c.warmup_steps))
        if c.max_minutes:
            progress = max(progress, min(1.0, minutes / c.max_minutes))
        if c.schedule == "linear":
            factor = 1.0 - progress
        else:
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    return c.lr * factor * scale


def _old_run(c: TrainConfig, epochs: list[int], metrics: list[float], lower=False, clock=None):
    """Every step's rate under the old loop: epochs of the given lengths, ``metrics`` the dev
    metric after each, the plateau scale cut on every (patience + 1)-th bad epoch in a row."""
    rates, step, best, bad, scale = [], 0, None, 0, 1.0
    for length, value in zip(epochs, metrics, strict=True):
        total = len(epochs) * length  # the old loop took this epoch's length for every epoch
        for _ in range(length):
            rates.append(_old_rate(c, step, total, clock(step) if clock else 0.0, scale))
            step += 1
        if math.isfinite(value) and (best is None or (value < best if lower else value > best)):
            best, bad = value, 0
        else:
            bad += 1
            if c.schedule == "plateau" and bad % (c.plateau_patience + 1) == 0:
                scale *= c.plateau_factor
    return rates


def _new_run(c, epochs, metrics, lower=False, clock=None, cut_at: int | None = None):
    """The same run through :class:`Schedule`, as the Trainer drives it; with ``cut_at``, the
    schedule and optimizer go through JSON after that epoch, as a resumed run's do."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=c.lr)
    schedule = Schedule(optimizer, c, lower)
    rates, step = [], 0
    for epoch, (length, value) in enumerate(zip(epochs, metrics, strict=True)):
        for _ in range(length):
            schedule.advance(step, len(epochs) * length, clock(step) if clock else 0.0)
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            step += 1
        schedule.end_epoch(value)
        if epoch == cut_at:
            saved = json.loads(json.dumps([schedule.state_dict(), optimizer.state_dict()]))
            optimizer = torch.optim.SGD([weight], lr=c.lr)
            schedule = Schedule(optimizer, c, lower)
            schedule.load_state_dict(saved[0])
            optimizer.load_state_dict(saved[1])
    return rates


SETTINGS = [
    {},
    {"warmup_steps": 7},
    {"schedule": "linear"},
    {"schedule": "linear", "warmup_steps": 5},
    {"schedule": "cosine"},
    {"schedule": "cosine", "warmup_steps": 12},
    {"schedule": "cosine", "warmup_steps": 100},  # longer than the run
    {"schedule": "plateau"},
    {"schedule": "plateau", "plateau_patience": 1, "plateau_factor": 0.3},
    {"schedule": "plateau", "warmup_steps": 25},  # cuts made while still warming up
    {"schedule": "plateau", "plateau_factor": 1.0},
]
METRICS = [0.5, 0.4, 0.6, 0.6, float("nan"), 0.55, 0.7, 0.7]


@pytest.mark.parametrize("keys", SETTINGS, ids=lambda k: "-".join(map(str, k.values())) or "-")
@pytest.mark.parametrize("lower", [False, True])
def test_every_schedule_gives_the_old_rates_step_by_step(keys, lower):
    c, epochs = _config(**keys), [6] * len(METRICS)
    want = _old_run(c, epochs, METRICS, lower)
    assert _new_run(c, epochs, METRICS, lower) == pytest.approx(want, rel=1e-12, abs=1e-15)
    # Resumed after any epoch, through JSON: the same rates again, bit for bit.
    whole = _new_run(c, epochs, METRICS, lower)
    for cut in range(len(METRICS) - 1):
        assert _new_run(c, epochs, METRICS, lower, cut_at=cut) == whole


def test_epochs_of_different_lengths_decay_over_each_ones_own_total():
    c = _config(schedule="linear", warmup_steps=3)
    epochs, metrics = [5, 9, 4], [0.1, 0.2, 0.3]
    want = _old_run(c, epochs, metrics)
    assert _new_run(c, epochs, metrics) == pytest.approx(want, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_decay_follows_the_time_budget_when_it_ends_first(schedule):
    c = _config(schedule=schedule, warmup_steps=2, max_minutes=1.0)
    clock = lambda step: step / 30  # noqa: E731  (a minute every 30 steps, of 60)
    epochs, metrics = [20, 20, 20], [0.1, 0.2, 0.3]
    want = _old_run(c, epochs, metrics, clock=clock)
    assert _new_run(c, epochs, metrics, clock=clock) == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert want[-1] == 0.0 and want[29] > 0.0


def test_a_resumed_schedule_takes_its_progress_and_this_runs_settings():
    weight = torch.nn.Parameter(torch.zeros(1))
    first = Schedule(torch.optim.SGD([weight], lr=0.1), _config(schedule="plateau"))
    for metric in (0.5, 0.4):
        first.end_epoch(metric)
    saved = json.loads(json.dumps(first.state_dict()))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    changed = _config(schedule="plateau", plateau_factor=0.1, plateau_patience=1)
    resumed = Schedule(optimizer, changed)
    resumed.load_state_dict(saved)
    assert resumed.plateau.best == 0.5 and resumed.plateau.num_bad_epochs == 0
    assert (resumed.plateau.factor, resumed.plateau.patience) == (0.1, 1)
    for metric in (0.45, 0.45):  # two more bad epochs: patience 1 cuts once, by 0.1
        resumed.end_epoch(metric)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)


def test_cosine_schedule_with_warmup():
    c = _config(schedule="cosine", warmup_steps=10, lr=1.0)
    lrs = [lr_factor(c, step, 110) for step in range(110)]
    assert lrs[0] == 0.1 and lrs[9] == 1.0
    assert abs(lrs[60] - 0.5) < 1e-9 and lrs[-1] < 0.01


def test_schedule_follows_the_time_budget_when_it_ends_first():
    c = _config(schedule="linear", lr=1.0, max_minutes=10)
    assert lr_factor(c, 10, 1000, minutes=0.0) == 0.99
    assert lr_factor(c, 10, 1000, minutes=5.0) == 0.5
    assert lr_factor(c, 10, 1000, minutes=10.0) == 0.0
