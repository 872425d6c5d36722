"""The one training loop, shared by every task.

What the Trainer asks of a task (see ``rnnkit/tasks/base.py``): ``task.model.loss(batch)``, a
scalar to minimise; ``task.train_batches(epoch, rank, world_size)``, the epoch's batches (a
deterministic function of the seed and the epoch, so a resumed run sees the same data);
``task.evaluate()``, the named dev metrics, whose directions ``metric_goals`` gives; and
``task.model_files()`` for the checkpoints. A model that carries state from one batch to the
next (the language model's recurrent state across BPTT windows) may offer
``training_state()`` and ``load_training_state(tensors)``; checkpoints then keep that state
too, so that a run killed mid-epoch resumes bit for bit.

Here: the device, several processes (DDP), autocast, the training step, early stopping and
checkpoints. Elsewhere: the learning-rate schedules (``rnnkit/schedule.py``), the training
state's files (``rnnkit/checkpoint.py``), and what rank 0 shows (``rnnkit/reporting.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from rnnkit import checkpoint as ckpt
from rnnkit.config import setting, to_dict
from rnnkit.data.batching import move
from rnnkit.errors import ConfigError, DivergedError, ModelDirError
from rnnkit.reporting import StepReport, rank0_reporters
from rnnkit.runtime import (
    broadcast_parameters,
    init_distributed,
    local_rank,
    pick_device,
    rank,
    seed_everything,
    sum_gradients,
    world_size,
)
from rnnkit.schedule import Schedule
from rnnkit.tasks.base import Task, metric_goal

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """How to train; every task's recipe has a ``train:`` section of these keys."""

    epochs: int = setting(10, "passes over the task's training data", 1, 10**8)
    max_steps: int | None = setting(None, "stop after this many updates, whatever the epoch", 1)
    max_minutes: float | None = setting(
        None, "stop once training has run this long (wall clock)", 0, low_open=True
    )
    batch_size: int = setting(64, "examples per update", 1, 10**8)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = setting(1e-3, "learning rate", 0, low_open=True)
    weight_decay: float = setting(0.0, "weight decay (decoupled for adamw)", 0)
    momentum: float = setting(0.0, "SGD only", 0)
    # A negative max norm would flip every gradient's sign: training would ascend.
    clip_norm: float | None = setting(
        5.0, "max gradient L2 norm; null turns clipping off", 0, low_open=True
    )
    schedule: Literal["constant", "linear", "cosine", "plateau"] = "constant"
    warmup_steps: int = setting(0, "updates over which the LR rises from 0", 0)
    plateau_factor: float = setting(
        0.5, "schedule=plateau: multiply the LR by this ...", 0, 1, low_open=True
    )
    plateau_patience: int = 0  # ... on each epoch without dev improvement beyond this many
    metric: str = ""  # dev metric for early stopping and the best model ("" = task default)
    mode: Literal["auto", "max", "min"] = "auto"  # auto: min for losses/perplexity, else max
    patience: int | None = None  # stop after this many epochs without improvement
    target: float | None = None  # stop once the dev metric reaches this value
    seed: int = setting(1, "seeds every RNG (each accepts 0 to 2^63 - 1)", 0, 2**63 - 1)
    deterministic: bool = False
    device: str = "auto"
    # The matmuls' precision. bf16: bfloat16 autocast (float16 with loss scaling on GPUs
    # without bfloat16); weights, losses and optimizer state stay float32. auto: bf16 on CUDA,
    # and on CPUs with native bf16 (AVX512-BF16, AMX) for tasks whose models train faster
    # there (lm, cipher, translate); fp32 elsewhere. fp32: never autocast.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Weight averaging (AWD-LSTM's averaged SGD, SWA, or a moving average): dev is scored,
    # and the best model saved, with the averaged weights; training goes on with its own.
    average: Literal["none", "mean", "ema"] = "none"
    average_start: float = setting(
        0.5, "share of the run (steps, or train.max_minutes) before averaging starts", 0, 1,
        high_open=True,
    )  # fmt: skip
    average_decay: float = setting(
        0.999, "average=ema: the moving average's decay per step", 0, 1, low_open=True,
        high_open=True,
    )  # fmt: skip
    checkpoint_every: int = setting(
        0, "also checkpoint every N steps inside an epoch (0 = epoch ends)", 0
    )
    progress: bool = True  # progress bar (shown on terminals only)
    plot_every_s: float = 30.0  # redraw curve.png at most this often during training
    tensorboard: str = ""  # a directory for TensorBoard scalars (rank 0 only); "" = none
    compile: bool = False  # torch.compile the training step (pays off on GPUs, rarely on CPUs)


def make_optimizer(
    model: torch.nn.Module, config: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """The optimizer ``config`` names, over ``model``'s trainable parameters on ``device``."""
    c = config
    params = [p for p in model.parameters() if p.requires_grad]
    if c.optimizer == "sgd":
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
    cls = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
    # The fused kernel updates every parameter in one pass: for the small models of this
    # toolkit the per-parameter Python overhead of the default loop is a real cost.
    fused = device.type in ("cpu", "cuda")
    return cls(params, lr=c.lr, weight_decay=c.weight_decay, fused=fused)


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX tiles): there
    bf16 matmuls run at about twice float32's rate; elsewhere they are emulated, and slower."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(cpu, probe, None)
        if check is not None and check():
            return True
    return False


def autocast_dtype(
    config: TrainConfig, device: torch.device, cpu_bf16_pays: bool = False
) -> torch.dtype | None:
    """The autocast dtype of training steps under ``train.precision``, or None for none:
    bfloat16 (float16 on GPUs without bfloat16) on CUDA, bfloat16 on CPUs.

    ``auto`` on a CPU takes bf16 only where it has native bf16 and ``cpu_bf16_pays`` (the
    task's ``cpu_bf16_pays``: whether its models train faster there, as measured by
    ``bench/precision.py``; a task that does not say trains in fp32)."""
    if config.precision == "fp32" or device.type not in ("cuda", "cpu"):
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if config.precision == "bf16" or (cpu_bf16_pays and native_bf16()):
        return torch.bfloat16
    return None


class _LossOf(torch.nn.Module):
    """``model.loss`` as a forward pass, so that DistributedDataParallel sees it run."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model: Any = cast(Any, model)  # its loss is the model's own (duck-typed) method

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """The model's mean loss on ``batch`` (a scalar tensor, with its graph)."""
        return self.model.loss(batch)


def loss_terms(batch: dict[str, Any]) -> int:
    """How many terms a batch's mean loss averages: its target tokens where a mask says
    (``target_mask``, else ``mask``), else its rows. Weighting each process's mean by this
    makes the average over processes the mean over the whole global batch."""
    for key in ("target_mask", "mask"):
        if isinstance(batch.get(key), torch.Tensor):
            return int(batch[key].sum())
    first = next(v for v in batch.values() if isinstance(v, torch.Tensor))
    return int(first.shape[0])


@dataclass
class _State:
    """The loop's counters, kept across a kill: ``trainer.json``'s ``state``."""

    step: int = 0
    epoch: int = 0  # epochs fully finished
    batch_in_epoch: int = 0  # batches of epoch ``epoch + 1`` already taken
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    loss_sum: float = 0.0  # running sum of this epoch's batch losses
    history: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False


class Trainer:
    """Trains ``task.model`` and writes a model directory to ``out_dir`` as it goes."""

    # What training adds to the task's own files (see rnnkit/tasks/storage.py).
    FILES = (
        "trainer.json", "trainer.safetensors", "optimizer.safetensors", "metrics.jsonl", "curve.png"
    )  # fmt: skip

    def __init__(
        self,
        task: Task,
        config: TrainConfig,
        out_dir: str | Path,
        log: Callable[[str], None] | None = None,
    ):
        self.task = task
        self.config = config
        self.out_dir = Path(out_dir)
        self.rank, self.world = rank(), world_size()
        self.is_main = self.rank == 0
        shown = log or logger.info  # the CLI shows rnnkit's log on stderr
        self.log = shown if self.is_main else (lambda msg: None)  # one voice: rank 0's
        self.device = pick_device(config.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", local_rank())
        self.metric = config.metric or task.default_metric
        # The task names its metrics and their directions, so a misspelt train.metric stops
        # the run here, before any data is read or any epoch runs.
        goal = metric_goal(task, self.metric)
        self.lower_is_better = goal == "min" if config.mode == "auto" else config.mode == "min"
        # Any: the model's own methods (loss, training_state) are duck-typed, as the contract says
        self.model: Any = cast(Any, task.model.to(self.device))
        self.optimizer = make_optimizer(self.model, config, self.device)
        self.schedule: Schedule | None = None  # made by fit (and restored by --resume)
        self.state = _State()
        self.grad_norm: float | None = None  # of the last step, before clipping
        self.ddp: torch.nn.Module | None = None
        if self.world > 1 and config.batch_size < self.world:
            raise ConfigError(
                f"train.batch_size {config.batch_size} is smaller than the {self.world} "
                "processes: every process needs examples of each global batch"
            )
        # A model whose loss's gradient is the batch's sum (word2vec's per-example step)
        # reduces by hand: the processes' gradients add up, sparse and row ones included.
        self.sums = self.world > 1 and bool(getattr(self.model, "sums_gradients", False))
        if self.sums:
            init_distributed(self.device)
            broadcast_parameters(self.model)
        elif self.world > 1:
            init_distributed(self.device)
            from torch.nn.parallel import DistributedDataParallel

            # A model whose steps may leave some parameters out (the adaptive softmax's
            # clusters, an autoencoder's second decoder) says so; DDP must then look for them.
            self.ddp = DistributedDataParallel(
                _LossOf(self.model),
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(getattr(self.model, "skips_parameters", False)),
            )
        # The step's loss: the model's own, through DDP's wrapper under several processes,
        # compiled when asked (the first steps then pay for compilation).
        self.step_loss: Callable[..., Any] = self.model.loss if self.ddp is None else self.ddp
        if config.compile:
            self.step_loss = torch.compile(self.step_loss)
        half = autocast_dtype(config, self.device, getattr(task, "cpu_bf16_pays", False))
        self.autocast, self.half = half is not None, half or torch.bfloat16
        # float16 has too little range for raw gradients: scale the loss, unscale before
        # clipping, and skip steps whose gradients overflowed (bfloat16 needs none of this).
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.autocast and self.half == torch.float16
        )
        self.reporters = (
            rank0_reporters(config, self.out_dir, self.metric, shown) if self.is_main else []
        )
        self.average: AveragedModel | None = None
        if config.average != "none":
            ema = get_ema_multi_avg_fn(config.average_decay) if config.average == "ema" else None
            self.average = AveragedModel(self.model, multi_avg_fn=ema)

    # ------------------------------------------------------------ checkpoints
    def _carried(self) -> list[dict[str, torch.Tensor]]:
        """Every process's carried state (each reads its own streams), gathered on all."""
        if not hasattr(self.model, "training_state"):
            return []
        state = {k: v.detach().cpu() for k, v in self.model.training_state().items()}
        if self.world == 1:
            return [state]
        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, state)
        return states

    def _training_files(self, new_best: bool, carried: list) -> dict[str, bytes]:
        weights = self.model.state_dict()
        files = dict(self.task.model_files())
        if new_best or not (self.out_dir / "model.safetensors").exists():
            with self._averaged_weights():  # the weights dev was scored with
                shown = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            files["model.safetensors"] = ckpt.tensors_to_bytes(shown)
        schedule = self.schedule.state_dict() if self.schedule is not None else None
        state = ckpt.TrainingState(weights, self.optimizer.state_dict(), schedule,
                                   self.state.__dict__, carried)  # fmt: skip
        if self.average is not None:
            state.averaged = self.average.state_dict()
        files.update(ckpt.training_files(state, to_dict(self.config)))
        lines = "".join(json.dumps(rec) + "\n" for rec in self.state.history)
        files["metrics.jsonl"] = lines.encode("utf-8")
        return files

    def save(self, new_best: bool = False) -> None:
        """Checkpoint the run (and, when ``new_best``, the best model) into ``out_dir``; every
        process takes part, rank 0 writes."""
        # A finite loss can still come with an infinite gradient (and no clipping to see it):
        # one pass over the weights per checkpoint keeps NaN out of every file on disk.
        broken = [n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if broken:
            raise DivergedError(
                f"training diverged: non-finite weights in {broken[0]} at step {self.state.step}; "
                f"the checkpoint on disk is the last good one; lower train.lr or set "
                f"train.clip_norm"
            )
        carried = self._carried()  # collective: every process takes part
        if self.is_main:
            ckpt.commit(self.out_dir, self._training_files(new_best, carried))

    def _restore(self, schedule: Schedule) -> None:
        """Continue from the training state in ``out_dir`` (``--resume``)."""
        if self.is_main:
            ckpt.recover(self.out_dir)  # the others wait: one committed checkpoint for all
        if self.world > 1:
            dist.barrier()
        saved = ckpt.read_training_state(self.out_dir, self.rank, self.world)
        try:
            self.model.load_state_dict(saved.weights)
            self.optimizer.load_state_dict(saved.optimizer)
            # lr_scale: the plateau cuts of older files, already in the optimizer's rate
            self.state = _State(**{k: v for k, v in saved.counters.items() if k != "lr_scale"})
            if saved.schedule is not None:
                schedule.load_state_dict(saved.schedule)
            else:  # written before schedules were torch's
                schedule.continue_at(self.state.step, self.state.best, self.state.bad_epochs)
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            raise ModelDirError(f"{self.out_dir}: training state does not fit ({err})") from None
        if self.state.best is not None and not math.isfinite(self.state.best):
            self.state.best = None  # written by an older version that kept a NaN best
        if self.average is not None and saved.averaged:
            self.average.load_state_dict(saved.averaged)
        if hasattr(self.model, "load_training_state"):
            self.model.load_training_state(saved.carried[0])
        ckpt.restore_rng(saved)

    # ------------------------------------------------------------------- loop
    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train until the epochs, the step budget, the patience or the target run out.

        Returns the summary: best dev metric, its epoch, steps, and minutes of training. The
        main process holds the output directory's writer lock throughout: a second trainer on
        the same directory is refused before it trains.
        """
        try:
            if not self.is_main:
                return self._fit(resume)
            with ckpt.writing(self.out_dir):
                return self._fit(resume)
        finally:
            for reporter in self.reporters:
                reporter.close()

    def _fit(self, resume: bool) -> dict[str, Any]:
        c = self.config
        seed_everything(c.seed, c.deterministic)
        self.schedule = schedule = Schedule(self.optimizer, c, self.lower_is_better)
        if resume:
            self._restore(schedule)
        if self.state.finished:
            self.log(f"{self.out_dir}: training already finished at step {self.state.step}")
            return self._summary(0.0)
        before = self.state.history[-1]["elapsed_s"] if self.state.history else 0.0
        started = time.perf_counter() - before  # of the whole run, across resumes
        stop = False
        while self.state.epoch < c.epochs and not stop and not self._no_time_for_epoch(started):
            epoch = self.state.epoch + 1
            batches = self.task.train_batches(epoch, self.rank, self.world)
            total = c.epochs * len(batches)
            total = min(total, c.max_steps) if c.max_steps else total
            self.model.train()
            for reporter in self.reporters:
                reporter.epoch_started(epoch, len(batches), self.state.batch_in_epoch)
            done = self.state.batch_in_epoch  # already trained on before an interruption
            starting_at = getattr(batches, "starting_at", None)  # skips them without making them
            rest = starting_at(done) if starting_at else itertools.islice(batches, done, None)
            for i, batch in enumerate(rest, start=done):
                minutes = self._agreed(time.perf_counter() - started) / 60
                schedule.advance(self.state.step, total, minutes)
                began = time.perf_counter()
                value = self.train_step(batch)
                if self.average is not None:
                    self._average(total, minutes)
                self.state.batch_in_epoch = i + 1
                self.state.loss_sum += value
                self._report_step(batch, value, time.perf_counter() - began)
                stop = bool(c.max_steps and self.state.step >= c.max_steps) or (
                    c.max_minutes is not None
                    and self._agreed(time.perf_counter() - started) >= 60 * c.max_minutes
                )
                if stop:
                    break
                if c.checkpoint_every and self.state.step % c.checkpoint_every == 0:
                    self.save()
            stop = self._end_epoch(epoch, started, schedule) or stop
        self.state.finished = True
        self.save()
        return self._summary(time.perf_counter() - started - before)

    def train_step(self, batch: dict[str, Any]) -> float:
        """One update on ``batch``, exactly as :meth:`fit` takes it: autocast, the loss
        (weighted across processes), backward (through the float16 loss scaler), gradient
        clipping, the optimizer step at the optimizer's current rate (``fit`` sets its
        schedule's before each step). Returns the batch's mean loss. ``fit`` calls it for
        every batch, and the benchmarks time it, so that what they measure is the training
        step itself. Raises :class:`DivergedError` on a non-finite loss, or gradient norm,
        before the weights change."""
        c, where = self.config, f"step {self.state.step + 1} (epoch {self.state.epoch + 1})"
        batch = move(batch, self.device)
        with torch.autocast(self.device.type, dtype=self.half, enabled=self.autocast):
            loss, value = self._loss(batch)
        if not math.isfinite(value):
            # Stop before the broken weights reach a checkpoint: the files on disk stay
            # those of the last finished epoch, and --resume starts from there.
            raise DivergedError(
                f"training diverged: the loss is {value} at {where}; lower train.lr or set "
                "train.clip_norm"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.sums:
            sum_gradients(self.model)
        self.scaler.unscale_(self.optimizer)
        self.grad_norm = None
        if c.clip_norm:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.clip_norm)
            self.grad_norm = float(norm)
            # Clipping cannot mend inf or NaN; under float16 loss scaling an overflow is
            # expected now and then, and the scaler skips that step itself.
            if not math.isfinite(self.grad_norm) and not self.scaler.is_enabled():
                raise DivergedError(
                    f"training diverged: the gradient norm is {self.grad_norm} at {where}; "
                    "lower train.lr"
                )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.state.step += 1
        return value

    def _average(self, total: int, minutes: float) -> None:
        """Fold the weights into their average once ``train.average_start`` of the run is
        done (by steps, or by ``train.max_minutes``, whichever is further)."""
        assert self.average is not None
        c, done = self.config, self.state.step / max(1, total)
        if c.max_minutes:
            done = max(done, minutes / c.max_minutes)
        if done >= c.average_start:
            self.average.update_parameters(self.model)

    @contextlib.contextmanager
    def _averaged_weights(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block (as they are without an
        average, or before it started), its own again after."""
        average = self.average
        if average is None or int(average.n_averaged) == 0:
            yield
            return
        own = [p.detach().clone() for p in self.model.parameters()]
        with torch.no_grad():
            for p, mean in zip(self.model.parameters(), average.module.parameters(), strict=True):
                p.copy_(mean)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, mine in zip(self.model.parameters(), own, strict=True):
                    p.copy_(mine)

    # ------------------------------------------------------------ processes
    def _loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, float]:
        """The loss to differentiate and the global batch's mean loss as a number.

        Under several processes each one's mean is weighted by its share of the global
        batch's loss terms (see :func:`loss_terms`): DDP then averages the gradients to those
        of the global mean, and every process sees the same value (and so takes the same
        decision on a non-finite loss). A model whose gradient is its batch's sum keeps its
        loss unweighted: the sum of the shares' gradients is the global batch's.
        """
        if self.world == 1:
            loss = self.step_loss(batch)
            return loss, float(loss.detach())
        own = self._terms(batch)
        loss = self.step_loss(batch)
        sums = torch.tensor([own, float(loss.detach()) * own], dtype=torch.float64)
        sums = sums.to(self.device)  # NCCL reduces device tensors only; gloo takes either
        dist.all_reduce(sums)
        total, loss_sum = (float(x) for x in sums.cpu())
        if self.sums:  # gradients of sums: added as they are (sum_gradients)
            return loss, loss_sum / total
        return loss * (own * self.world / total), loss_sum / total

    def _terms(self, batch: dict[str, Any]) -> int:
        counted = getattr(self.model, "loss_terms", None)  # a model whose mean is another's
        return int(counted(batch)) if counted is not None else loss_terms(batch)

    def _agreed(self, value: float) -> float:
        """Rank 0's clock on every process: clocks differ, decisions taken on them must not.
        Only ``train.max_minutes`` takes decisions on the clock; without it, no collective."""
        if self.world == 1 or self.config.max_minutes is None:
            return value
        shared = [value]
        dist.broadcast_object_list(shared, src=0)
        return shared[0]

    def _no_time_for_epoch(self, started: float) -> bool:
        """True when ``train.max_minutes`` leaves less time than the last dev pass took: the
        few steps such an epoch could take are worth less than the dev pass after them, which
        would only run the training past its budget."""
        c = self.config
        if c.max_minutes is None or not self.state.history:
            return False
        dev_s = self.state.history[-1].get("dev_s", 0.0)
        # Rank 0's sum, so that every process takes the same decision.
        if self._agreed(time.perf_counter() - started + dev_s) < 60 * c.max_minutes:
            return False
        self.log(
            f"not starting epoch {self.state.epoch + 1}: less of train.max_minutes is left "
            f"than a dev pass takes ({dev_s:.0f} s)"
        )
        return True

    def _dev_metrics(self) -> dict[str, float]:
        """The dev metrics: rank 0 evaluates, every other process receives its numbers, so
        that all take one early-stopping decision (and none spends the time evaluating)."""
        metrics: Any = None
        if self.is_main:
            self.model.eval()
            with torch.no_grad(), self._averaged_weights():
                metrics = self.task.evaluate().metrics
            self.model.train()
        if self.world > 1:
            shared = [metrics]
            dist.broadcast_object_list(shared, src=0)
            metrics = shared[0]
        return metrics

    # -------------------------------------------------------------- reports
    def _report_step(self, batch: dict[str, Any], loss: float, seconds: float) -> None:
        if not self.reporters:
            return
        terms_per_s = self._terms(batch) / seconds if seconds > 0 else 0.0
        epoch_loss = self.state.loss_sum / self.state.batch_in_epoch
        rate = self.optimizer.param_groups[0]["lr"]
        report = StepReport(self.state.step, loss, epoch_loss, rate, self.grad_norm, terms_per_s)
        for reporter in self.reporters:
            reporter.step_done(report)

    def _end_epoch(self, epoch: int, started: float, schedule: Schedule) -> bool:
        """Evaluate, keep the best model, checkpoint, report; True when training should stop."""
        c = self.config
        dev_started = time.perf_counter()
        metrics = self._dev_metrics()
        dev_s = time.perf_counter() - dev_started
        if self.metric not in metrics:
            raise ConfigError(
                f"bad value {self.metric!r} for train.metric (choices: {', '.join(metrics)})"
            )
        value = metrics[self.metric]
        better = math.isfinite(value) and (
            self.state.best is None
            or (value < self.state.best if self.lower_is_better else value > self.state.best)
        )
        if better:
            self.state.best, self.state.best_epoch, self.state.bad_epochs = value, epoch, 0
        else:
            self.state.bad_epochs += 1
        self.state.history.append({
            "epoch": epoch,
            "step": self.state.step,
            "train_loss": self.state.loss_sum / max(1, self.state.batch_in_epoch),
            "lr": self.optimizer.param_groups[0]["lr"],  # the epoch's last, before a plateau cut
            "elapsed_s": round(time.perf_counter() - started, 3),
            "dev_s": round(dev_s, 3),  # how long a dev pass takes: the budget plans with it
            **metrics,
        })  # fmt: skip
        schedule.end_epoch(value)
        self.state.epoch = epoch
        self.state.batch_in_epoch = 0
        self.state.loss_sum = 0.0
        self.save(new_best=better)
        for reporter in self.reporters:
            reporter.epoch_done(self.state.history, metrics)
        reached = c.target is not None and (
            value <= c.target if self.lower_is_better else value >= c.target
        )
        patience_out = c.patience is not None and self.state.bad_epochs >= c.patience
        return bool(reached or patience_out)

    def _summary(self, seconds: float) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "best": self.state.best,
            "best_epoch": self.state.best_epoch,
            "steps": self.state.step,
            "minutes": seconds / 60,
        }
