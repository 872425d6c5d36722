"""The one training loop, shared by every task.

The Trainer knows three things about a task: ``task.model.loss(batch)`` gives a scalar to
minimise, ``task.train_batches(epoch)`` gives the epoch's batches (a deterministic function of
the seed and the epoch, so a resumed run sees the same data), and ``task.evaluate()`` returns
named dev metrics. Everything else — optimisation, schedules, early stopping, checkpoints,
logs and plots — lives here. A model that carries state from one batch to the next (the
language model's recurrent state across BPTT windows) may offer ``training_state()`` and
``load_training_state(tensors)``; checkpoints then keep that state too, so that a run killed
mid-epoch resumes bit for bit.
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
from tqdm import tqdm

from rnnkit import checkpoint as ckpt
from rnnkit.config import to_dict
from rnnkit.data.batching import move
from rnnkit.errors import ConfigError, DivergedError, ModelDirError
from rnnkit.runtime import (
    init_distributed,
    local_rank,
    pick_device,
    rank,
    seed_everything,
    world_size,
)
from rnnkit.tasks.base import Task, metric_goal

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """How to train; every task's recipe has a ``train:`` section of these keys."""

    epochs: int = 10  # passes over the task's training data
    max_steps: int | None = None  # stop after this many updates, whatever the epoch
    max_minutes: float | None = None  # stop once training has run this long (wall clock)
    batch_size: int = 64
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0  # SGD only
    clip_norm: float | None = 5.0  # max gradient L2 norm; null turns clipping off
    schedule: Literal["constant", "linear", "cosine", "plateau"] = "constant"
    warmup_steps: int = 0
    plateau_factor: float = 0.5  # schedule=plateau: multiply the LR by this ...
    plateau_patience: int = 0  # ... on each epoch without dev improvement beyond this many
    metric: str = ""  # dev metric for early stopping and the best model ("" = task default)
    mode: Literal["auto", "max", "min"] = "auto"  # auto: min for losses/perplexity, else max
    patience: int | None = None  # stop after this many epochs without improvement
    target: float | None = None  # stop once the dev metric reaches this value
    seed: int = 1
    deterministic: bool = False
    device: str = "auto"
    # The matmuls' precision. bf16: bfloat16 autocast (float16 with loss scaling on GPUs
    # without bfloat16); weights, losses and optimizer state stay float32. auto: bf16 on CUDA,
    # and on CPUs with native bf16 (AVX512-BF16, AMX) for tasks whose models train faster
    # there (lm, cipher, translate); fp32 elsewhere. fp32: never autocast.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch (0 = epoch ends)
    progress: bool = True  # progress bar (shown on terminals only)
    plot_every_s: float = 30.0  # redraw curve.png at most this often during training
    tensorboard: str = ""  # a directory for TensorBoard scalars (rank 0 only); "" = none
    compile: bool = False  # torch.compile the training step (pays off on GPUs, rarely on CPUs)

    def validate(self) -> None:
        for name in ("epochs", "batch_size"):
            if not 1 <= getattr(self, name) <= 10**8:
                raise ConfigError(
                    f"bad value {getattr(self, name)} for train.{name} (from 1 to 10^8)"
                )
        if not 0 <= self.seed < 2**63:  # what every RNG it seeds accepts
            raise ConfigError(f"bad value {self.seed} for train.seed (from 0 to 2^63 - 1)")
        if self.lr <= 0:
            raise ConfigError(f"bad value {self.lr} for train.lr (must be > 0)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"bad value {self.max_steps} for train.max_steps (must be ≥ 1)")
        for name in ("weight_decay", "momentum", "warmup_steps", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"bad value {getattr(self, name)} for train.{name} (must be ≥ 0)")
        # A negative max norm would flip every gradient's sign: training would ascend.
        for name in ("clip_norm", "max_minutes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"bad value {value} for train.{name} (> 0, or null for none)")
        if not 0 < self.plateau_factor <= 1:
            raise ConfigError(f"bad value {self.plateau_factor} for train.plateau_factor")


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
    """What the loop must remember across a kill: saved in trainer.json."""

    step: int = 0
    epoch: int = 0  # epochs fully finished
    batch_in_epoch: int = 0  # batches of epoch ``epoch + 1`` already taken
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    lr_scale: float = 1.0
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
        self.state = _State()
        self._last_plot = time.perf_counter()  # first plot after plot_every_s, and at the end
        self.ddp: torch.nn.Module | None = None
        if self.world > 1 and config.batch_size < self.world:
            raise ConfigError(
                f"train.batch_size {config.batch_size} is smaller than the {self.world} "
                "processes: every process needs examples of each global batch"
            )
        if self.world > 1:
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
        self.board = None
        if config.tensorboard and self.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError(
                    "train.tensorboard needs the tensorboard package (pip install tensorboard)"
                ) from None
            self.board = SummaryWriter(config.tensorboard)

    # ----------------------------------------------------------------- set-up
    def _total_steps(self, steps_per_epoch: int) -> int:
        total = self.config.epochs * steps_per_epoch
        return min(total, self.config.max_steps) if self.config.max_steps else total

    def _lr_at(self, step: int, total: int, minutes: float = 0.0) -> float:
        """The learning rate for ``step`` of ``total``, ``minutes`` into training.

        With ``max_minutes`` set, linear and cosine decay follow whichever budget runs out
        first, steps or time, so the rate reaches its end as the time budget does.
        """
        c = self.config
        factor = 1.0
        if c.warmup_steps and step < c.warmup_steps:
            factor = (step + 1) / c.warmup_steps
        elif c.schedule in ("linear", "cosine"):
            span = max(1, total - c.warmup_steps)
            progress = min(1.0, (step - c.warmup_steps) / span)
            if c.max_minutes:
                progress = max(progress, min(1.0, minutes / c.max_minutes))
            if c.schedule == "linear":
                factor = 1.0 - progress
            else:
                factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        return c.lr * factor * self.state.lr_scale

    # ------------------------------------------------------------ checkpoints
    def _carried(self) -> list[dict[str, torch.Tensor]]:
        """Every process's carried state (each reads its own streams), gathered on all."""
        if not hasattr(self.model, "training_state"):
            return []
        state = {k: v.detach().cpu() for k, v in self.model.training_state().items()}
        if self.world == 1:
            return [state]
        import torch.distributed as dist

        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, state)
        return states

    def _training_files(self, new_best: bool, carried: list) -> dict[str, bytes]:
        weights = self.model.state_dict()
        files = dict(self.task.model_files())
        if new_best or not (self.out_dir / "model.safetensors").exists():
            files["model.safetensors"] = ckpt.tensors_to_bytes(weights)
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"cuda{i}"] = s
        trainer_tensors = {f"model.{k}": v for k, v in weights.items()}
        trainer_tensors.update({f"rng.{k}": v for k, v in rng.items()})
        for r, state in enumerate(carried):  # state carried between batches (the LM's)
            prefix = "carried." if len(carried) == 1 else f"carried.rank{r}."
            trainer_tensors.update({prefix + k: v for k, v in state.items()})
        files["trainer.safetensors"] = ckpt.tensors_to_bytes(trainer_tensors)
        opt_tensors, opt_meta = _flatten_optimizer(self.optimizer.state_dict())
        files["optimizer.safetensors"] = ckpt.tensors_to_bytes(opt_tensors)
        files["trainer.json"] = ckpt.json_bytes(
            {
                "state": self.state.__dict__,
                "python_rng": _python_rng_to_json(random.getstate()),
                "optimizer": opt_meta,
                "train_config": to_dict(self.config),
            }
        )
        lines = "".join(json.dumps(rec) + "\n" for rec in self.state.history)
        files["metrics.jsonl"] = lines.encode("utf-8")
        return files

    def save(self, new_best: bool = False) -> None:
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

    def restore(self) -> None:
        """Continue from the training state in ``out_dir`` (``--resume``)."""
        if self.is_main:
            ckpt.recover(self.out_dir)
        path = self.out_dir / "trainer.json"
        if not path.exists():
            raise ModelDirError(
                f"{self.out_dir} holds no training state to resume (no trainer.json)"
            )
        meta = ckpt.read_json(path)
        tensors = ckpt.read_tensors(self.out_dir / "trainer.safetensors")
        weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            self.model.load_state_dict(weights)
            opt = ckpt.read_tensors(self.out_dir / "optimizer.safetensors")
            self.optimizer.load_state_dict(_unflatten_optimizer(opt, meta["optimizer"]))
            self.state = _State(**meta["state"])
            if self.state.best is not None and not math.isfinite(self.state.best):
                self.state.best = None  # written by an older version that kept a NaN best
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            raise ModelDirError(f"{self.out_dir}: training state does not fit ({err})") from None
        if hasattr(self.model, "load_training_state"):
            own = "carried." if self.world == 1 else f"carried.rank{self.rank}."
            carried = {k[len(own) :]: v for k, v in tensors.items() if k.startswith(own)}
            if any(k.startswith("rank") for k in carried):  # saved by several processes
                raise ModelDirError(
                    f"{self.out_dir} was trained on several processes; resume it on as many"
                )
            self.model.load_training_state(carried)
        torch.set_rng_state(tensors["rng.torch"])
        if torch.cuda.is_available():
            cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda")]
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
        random.setstate(_python_rng_from_json(meta["python_rng"]))

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
            if self.board is not None:  # a failed run's last scalars are worth keeping too
                self.board.close()

    def _fit(self, resume: bool) -> dict[str, Any]:
        c = self.config
        seed_everything(c.seed, c.deterministic)
        if resume:
            if self.world > 1 and not self.is_main:
                import torch.distributed as dist

                dist.barrier()  # rank 0 brings the directory to one checkpoint first
            self.restore()
            if self.world > 1 and self.is_main:
                import torch.distributed as dist

                dist.barrier()
        if self.state.finished:
            self.log(f"{self.out_dir}: training already finished at step {self.state.step}")
            return self._summary(0.0)
        started = time.perf_counter()
        elapsed_before = self.state.history[-1]["elapsed_s"] if self.state.history else 0.0
        stop = False
        while self.state.epoch < c.epochs and not stop:
            epoch = self.state.epoch + 1
            batches = self.task.train_batches(epoch, self.rank, self.world)
            total = self._total_steps(len(batches))
            self.model.train()
            bar = tqdm(
                total=len(batches),
                initial=self.state.batch_in_epoch,
                desc=f"epoch {epoch}/{c.epochs}",
                disable=None if (c.progress and self.is_main) else True,
                leave=False,
                dynamic_ncols=True,
                file=sys.stderr,
            )
            for i, batch in enumerate(batches):
                if i < self.state.batch_in_epoch:
                    continue  # already trained on before the run was interrupted
                minutes = self._agreed((elapsed_before + time.perf_counter() - started) / 60)
                value = self.train_step(batch, self._lr_at(self.state.step, total, minutes))
                self.state.batch_in_epoch = i + 1
                self.state.loss_sum += value
                bar.update(1)
                bar.set_postfix(loss=f"{self.state.loss_sum / (i + 1):.4f}", refresh=False)
                if c.max_steps and self.state.step >= c.max_steps:
                    stop = True
                    break
                if c.max_minutes is not None and (
                    self._agreed(elapsed_before + time.perf_counter() - started)
                    >= 60 * c.max_minutes
                ):
                    stop = True
                    break
                if c.checkpoint_every and self.state.step % c.checkpoint_every == 0:
                    self.save()
            bar.close()
            stop = self._end_epoch(epoch, started, elapsed_before) or stop
        self.state.finished = True
        self.save()
        self.plot(force=True)
        return self._summary(time.perf_counter() - started)

    def train_step(self, batch: dict[str, Any], lr: float | None = None) -> float:
        """One update on ``batch``, exactly as :meth:`fit` takes it: learning rate, autocast,
        the loss (weighted across processes), backward (through the float16 loss scaler),
        gradient clipping, the optimizer step, TensorBoard scalars. Returns the batch's mean
        loss. ``fit`` calls it for every batch, and the benchmarks time it, so that what they
        measure is the training step itself. ``lr`` sets the rate for this step (``fit``
        passes its schedule's); None keeps the optimizer's. Raises :class:`DivergedError` on
        a non-finite loss, or gradient norm, before the weights change."""
        c, where = self.config, f"step {self.state.step + 1} (epoch {self.state.epoch + 1})"
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        batch = move(batch, self.device)
        started = time.perf_counter()
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
        self.scaler.unscale_(self.optimizer)
        norm = None
        if c.clip_norm:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.clip_norm)
            # Clipping cannot mend inf or NaN; under float16 loss scaling an overflow is
            # expected now and then, and the scaler skips that step itself.
            if not math.isfinite(float(norm)) and not self.scaler.is_enabled():
                raise DivergedError(
                    f"training diverged: the gradient norm is {float(norm)} at {where}; "
                    "lower train.lr"
                )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.state.step += 1
        if self.board is not None:
            rate = self.optimizer.param_groups[0]["lr"]
            self._board_step(value, rate, norm, batch, time.perf_counter() - started)
        return value

    # ------------------------------------------------------------ processes
    def _loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, float]:
        """The loss to differentiate and the global batch's mean loss as a number.

        Under several processes each one's mean is weighted by its share of the global
        batch's loss terms (see :func:`loss_terms`): DDP then averages the gradients to those
        of the global mean, and every process sees the same value (and so takes the same
        decision on a non-finite loss).
        """
        if self.ddp is None:
            loss = self.step_loss(batch)
            return loss, float(loss.detach())
        import torch.distributed as dist

        own = self._terms(batch)
        loss = self.step_loss(batch)
        sums = torch.tensor([own, float(loss.detach()) * own], dtype=torch.float64)
        sums = sums.to(self.device)  # NCCL reduces device tensors only; gloo takes either
        dist.all_reduce(sums)
        total, loss_sum = (float(x) for x in sums.cpu())
        return loss * (own * self.world / total), loss_sum / total

    def _terms(self, batch: dict[str, Any]) -> int:
        counted = getattr(self.model, "loss_terms", None)  # a model whose mean is another's
        return int(counted(batch)) if counted is not None else loss_terms(batch)

    def _agreed(self, value: float) -> float:
        """Rank 0's clock on every process: clocks differ, decisions taken on them must not.
        Only ``train.max_minutes`` takes decisions on the clock; without it, no collective."""
        if self.world == 1 or self.config.max_minutes is None:
            return value
        import torch.distributed as dist

        shared = [value]
        dist.broadcast_object_list(shared, src=0)
        return shared[0]

    def _board_step(self, loss: float, lr: float, norm: Any, batch: dict, seconds: float) -> None:
        step = self.state.step
        assert self.board is not None  # called only when there is one
        self.board.add_scalar("train/loss", loss, step)
        self.board.add_scalar("train/lr", lr, step)
        if norm is not None:
            self.board.add_scalar("train/grad_norm", float(norm), step)
        if seconds > 0:  # this process's loss terms (tokens or examples) per second
            self.board.add_scalar("train/terms_per_s", self._terms(batch) / seconds, step)

    def _end_epoch(self, epoch: int, started: float, elapsed_before: float) -> bool:
        """Evaluate, keep the best model, checkpoint, log; True when training should stop."""
        c = self.config
        self.model.eval()
        with torch.no_grad():
            metrics = self.task.evaluate().metrics
        self.model.train()
        if self.world > 1:  # one set of numbers, hence one early-stopping decision, for all
            import torch.distributed as dist

            shared = [metrics]
            dist.broadcast_object_list(shared, src=0)
            metrics = shared[0]
        if self.board is not None:
            for name, value in metrics.items():
                self.board.add_scalar(f"dev/{name}", value, epoch)
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
            if c.schedule == "plateau" and self.state.bad_epochs % (c.plateau_patience + 1) == 0:
                self.state.lr_scale *= c.plateau_factor
        steps = max(1, self.state.batch_in_epoch)
        record = {
            "epoch": epoch,
            "step": self.state.step,
            "train_loss": self.state.loss_sum / steps,
            "lr": self.optimizer.param_groups[0]["lr"],
            "elapsed_s": round(elapsed_before + time.perf_counter() - started, 3),
            **metrics,
        }
        self.state.history.append(record)
        self.state.epoch = epoch
        self.state.batch_in_epoch = 0
        self.state.loss_sum = 0.0
        self.save(new_best=better)
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        self.log(
            f"epoch {epoch}/{c.epochs}  step {self.state.step}  "
            f"train_loss {record['train_loss']:.4f}  {shown}  {record['elapsed_s']:.1f}s"
        )
        self.plot()
        reached = c.target is not None and (
            value <= c.target if self.lower_is_better else value >= c.target
        )
        patience_out = c.patience is not None and self.state.bad_epochs >= c.patience
        return bool(reached or patience_out)

    def plot(self, force: bool = False) -> None:
        if not self.is_main or not self.state.history:
            return
        now = time.perf_counter()
        if not force and now - self._last_plot < self.config.plot_every_s:
            return
        from rnnkit.plots import plot_training_curve

        plot_training_curve(self.state.history, self.metric, self.out_dir / "curve.png")
        self._last_plot = now

    def _summary(self, seconds: float) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "best": self.state.best,
            "best_epoch": self.state.best_epoch,
            "steps": self.state.step,
            "minutes": seconds / 60,
        }


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _python_rng_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_rng_from_json(data: list) -> tuple:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)
