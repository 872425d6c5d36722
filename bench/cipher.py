"""Benchmark: the seed tutorial's one-message-at-a-time cipher loop against rnnkit's cipher task.

Both learn ROT13 over ``A``-``Z`` plus ``-`` (random 32-symbol messages) at the same model
sizes, on the CPU. The seed side re-implements the tutorial's loop (one message per Adam step,
lr 0.001); rnnkit is ``CipherTask`` + ``Trainer`` with its own defaults. Per side and size:
training messages/s (``Trainer.train_step`` for rnnkit), and wall time until dev character
accuracy reaches 0.99 from fresh weights, validation included (the seed loop checks every
``--seed-eval-every`` messages, up to ``--seed-budget`` s; rnnkit runs ``Trainer.fit`` with
short epochs). Cracking unknown keys is bench/crack.py.

    .venv/bin/python bench/cipher.py                              # 32x64, about a minute
    .venv/bin/python bench/cipher.py --sizes 32x64,5x10           # also the seed's 5/10 sizes
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import common as bench
import torch
from common import progress
from torch import nn

from rnnkit.config import from_dict
from rnnkit.tasks import build_task
from rnnkit.tasks.cipher import CipherConfig
from rnnkit.train import Trainer

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ-"
MESSAGE_LENGTH = 32
SEED_LR = 0.001
TARGET = 0.99
TUNED = {  # flag: (value, --quick value, help)
    "throughput_seconds": (20.0, 3.0, "training time timed per side"),
    "seed_budget": (300.0, 6.0, "seed: seconds to reach 99%%"),
    "eval_messages": (500, 200, "held-out messages per validation"),
    "seed_eval_every": (50, 50, "seed: validate every N messages"),
    "rnnkit_epoch_messages": (256, 256, "rnnkit: messages per epoch"),
    "rnnkit_max_epochs": (400, 8, "rnnkit: give up after N epochs"),
}


@dataclass
class TargetRun:
    """How a run towards the target accuracy went."""

    reached: bool
    seconds: float  # wall time to the target, or to giving up
    messages: int  # training messages consumed by then
    accuracy: float  # dev character accuracy at the last check
    limit: str  # what stopped an unsuccessful run, in words
    detail: str = ""  # extra facts for the notes

    def __str__(self) -> str:
        if self.reached:
            return f"{secs(self.seconds)} ({self.messages:,} msgs)"
        return (
            f"not reached within {self.limit} ({secs(self.seconds)}, {self.messages:,} msgs; "
            f"accuracy {self.accuracy:.4f})"
        )


def secs(seconds: float) -> str:
    """Seconds with two decimals below ten, one above."""
    return f"{seconds:.1f} s" if seconds >= 10 else f"{seconds:.2f} s"


# ---------------------------------------------------------------------------- the seed's loop
class SeedNet(nn.Module):
    """The tutorial's embedding, LSTM and linear layer, one message ``(32,)`` at a time."""

    def __init__(self, embedding_dim: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(len(ALPHABET), embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden)
        self.linear = nn.Linear(hidden, len(ALPHABET))

    def forward(self, cipher: torch.Tensor) -> torch.Tensor:
        """``(seq_len,)`` symbol ids → ``(seq_len, vocab)`` scores, batch of one."""
        output, _ = self.lstm(self.embed(cipher).unsqueeze(1))
        return self.linear(output).squeeze(1)


def seed_example(rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """One fresh (ciphertext, plaintext) pair of ``(32,)`` long tensors, made the seed's way."""
    plain = [rng.randrange(len(ALPHABET)) for _ in range(MESSAGE_LENGTH)]
    cipher = [(i + 13) % len(ALPHABET) for i in plain]
    return torch.tensor(cipher), torch.tensor(plain)


@torch.no_grad()
def seed_accuracy(net: SeedNet, heldout: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Character accuracy, one message at a time, softmax then most likely symbol."""
    right = sum(int((torch.softmax(net(c), 1).argmax(1) == p).sum()) for c, p in heldout)
    return right / (len(heldout) * MESSAGE_LENGTH)


def seed_step(embedding_dim: int, hidden: int, seed: int) -> tuple[SeedNet, bench.Step]:
    """A fresh seed model and its training step: one new message, one update."""
    torch.manual_seed(seed)
    net = SeedNet(embedding_dim, hidden)
    optimizer = torch.optim.Adam(net.parameters(), lr=SEED_LR)
    rng = random.Random(seed)

    def step() -> tuple[int, int]:
        cipher, plain = seed_example(rng)
        loss = nn.functional.cross_entropy(net(cipher), plain)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return 1, 0

    return net, step


def seed_time_to_target(embedding_dim: int, hidden: int, args: argparse.Namespace) -> TargetRun:
    """Train the seed loop from fresh weights, validating every ``--seed-eval-every``
    messages, until the target or ``--seed-budget`` seconds."""
    heldout_rng = random.Random(args.seed + 1_000_003)
    heldout = [seed_example(heldout_rng) for _ in range(args.eval_messages)]
    net, step = seed_step(embedding_dim, hidden, args.seed)
    messages, eval_seconds, start = 0, 0.0, time.perf_counter()
    while True:
        for _ in range(args.seed_eval_every):
            step()
        messages += args.seed_eval_every
        before_eval = time.perf_counter()
        accuracy = seed_accuracy(net, heldout)
        eval_seconds += time.perf_counter() - before_eval
        elapsed = time.perf_counter() - start
        progress(f"  seed: {messages} messages  dev char acc {accuracy:.4f}  {elapsed:.1f}s")
        if accuracy >= TARGET or elapsed >= args.seed_budget:
            detail = (
                f"{secs(eval_seconds)} of it validation, {secs(elapsed - eval_seconds)} training"
            )
            limit = f"{args.seed_budget:g} s"
            return TargetRun(accuracy >= TARGET, elapsed, messages, accuracy, limit, detail)


# -------------------------------------------------------------------------------- rnnkit
def rnnkit_config(
    embedding_dim: int, hidden: int, args: argparse.Namespace, short_epochs: bool = True
) -> CipherConfig:
    """rnnkit's cipher defaults with only the sizes, device, target and epoch length changed:
    ``short_epochs`` makes epochs ``--rnnkit-epoch-messages`` long so that the dev accuracy is
    checked often; without it they keep the default length (for the throughput loop)."""
    data = {"eval_messages": args.eval_messages}
    if short_epochs:
        data["train_messages"] = args.rnnkit_epoch_messages
    train = {"device": "cpu", "progress": False, "seed": args.seed, "target": TARGET}
    train |= {"epochs": args.rnnkit_max_epochs}
    if args.rnnkit_batch:
        train["batch_size"] = args.rnnkit_batch
    model = {"embedding_dim": embedding_dim, "hidden_size": hidden}
    return from_dict(CipherConfig, {"model": model, "data": data, "train": train})


def rnnkit_time_to_target(config: CipherConfig, out_dir: Path) -> TargetRun:
    """``Trainer.fit`` from fresh weights; the first epoch whose dev accuracy meets the target."""
    task = build_task("cipher", config)
    trainer = Trainer(task, config.train, out_dir, log=lambda msg: progress(f"  rnnkit: {msg}"))
    start = time.perf_counter()
    trainer.fit()
    fit_seconds = time.perf_counter() - start
    history, per_epoch = trainer.state.history, config.data.train_messages
    total = len(history) * per_epoch
    detail = (
        f"elapsed_s counts validation, checkpoint writes and plots; fit() took "
        f"{secs(fit_seconds)} for {total:,} messages ({total / fit_seconds:,.0f} msg/s end to end)"
    )
    accuracy = history[-1]["char_accuracy"]
    for record in history:
        if record["char_accuracy"] >= TARGET:
            messages = record["epoch"] * per_epoch
            return TargetRun(True, record["elapsed_s"], messages, accuracy, "", detail)
    limit = f"{config.train.epochs} epochs"
    return TargetRun(False, history[-1]["elapsed_s"], total, accuracy, limit, detail)


# ----------------------------------------------------------------------------- reporting
def flops_per_message(embedding_dim: int, hidden: int, length: int = 32, vocab: int = 28) -> float:
    """Training FLOPs for one message: LSTM (4 gates) and output layer, forward x 3."""
    per_symbol = 2 * 4 * hidden * (embedding_dim + hidden) + 2 * hidden * vocab
    return 3.0 * length * per_symbol


def size_section(
    size: tuple[int, int], sides: dict[str, tuple[bench.Rate, TargetRun]], peak: float
) -> str:
    """The table and notes for one model size: ``sides`` maps a side's name to its
    throughput and its run to the target (the seed first, then rnnkit)."""
    (seed, seed_run), (kit, kit_run) = sides.values()
    rows = [
        [name, f"{rate.per_second:,.0f}", run, f"{run.accuracy:.4f}"]
        for name, (rate, run) in sides.items()
    ]
    flops = flops_per_message(*size)
    seed_gflops, kit_gflops = seed.per_second * flops / 1e9, kit.per_second * flops / 1e9
    alone = [run.messages / rate.per_second if rate.per_second else float("nan")
             for rate, run in sides.values()]  # fmt: skip
    lines = [
        f"#### embedding {size[0]}, hidden {size[1]}",
        "",
        *bench.table("side | messages/s | time to 99% | final acc", rows),
        "",
        f"- throughput ratio rnnkit/seed: **{kit.per_second / seed.per_second:.1f}x**",
        f"- compute: {flops / 1e6:.2f} MFLOP per training message; seed {seed_gflops:.2f} GFLOP/s, "
        f"rnnkit {kit_gflops:.2f} GFLOP/s, of a {peak:.0f} GFLOP/s matmul peak "
        f"(the ratio can never exceed peak / seed = {peak / seed_gflops:.0f}x on this machine)",
        f"- seed: time to target includes validation ({seed_run.detail})",
        f"- rnnkit: {kit_run.detail}",
        f"- training alone to the target, at the measured rates: seed {alone[0]:.2f} s, "
        f"rnnkit {alone[1]:.2f} s",
        f"- throughput samples: seed {seed.items:,} msgs in {seed.seconds:.1f} s, rnnkit "
        f"{kit.items:,} msgs in {kit.seconds:.1f} s",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked; ``size_list`` from ``--sizes`` or the single size."""
    defaults = CipherConfig().model
    parser = bench.parser(__doc__, "tiny budgets, ~15 s", tuned=TUNED)
    parser.add_argument("--embedding-dim", type=int, help=f"default {defaults.embedding_dim}")
    parser.add_argument("--hidden", type=int, help=f"default {defaults.hidden_size}")
    parser.add_argument("--sizes", help="several EMBEDDINGxHIDDEN pairs, e.g. 32x64,5x10")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rnnkit-batch", type=int, help="rnnkit: batch size (default: its own)")
    args = bench.finish(parser, parser.parse_args(argv))
    if args.sizes and (args.embedding_dim or args.hidden):
        parser.error("give either --sizes or --embedding-dim/--hidden, not both")
    args.size_list = [
        (args.embedding_dim or defaults.embedding_dim, args.hidden or defaults.hidden_size)
    ]
    if args.sizes:
        try:
            args.size_list = [
                tuple(int(n) for n in part.lower().split("x")) for part in args.sizes.split(",")
            ]
        except ValueError:
            parser.error(f"bad --sizes {args.sizes!r} (expected EMBEDDINGxHIDDEN,...)")
        if any(len(size) != 2 for size in args.size_list):
            parser.error(f"bad --sizes {args.sizes!r} (expected EMBEDDINGxHIDDEN,...)")
    return args


def bench_size(size: tuple[int, int], args: argparse.Namespace) -> str:
    """Both sides at one (embedding, hidden) size: throughput, then time to target."""
    progress(f"== embedding {size[0]}, hidden {size[1]}: seed throughput, then time to target")
    seed_speed = bench.timed(seed_step(*size, args.seed)[1], args.throughput_seconds, warmup=20)
    seed_run = seed_time_to_target(*size, args)
    progress("rnnkit: throughput (the Trainer's step, batch making included), time to target")
    task = build_task("cipher", config := rnnkit_config(*size, args, short_epochs=False))
    with tempfile.TemporaryDirectory(prefix="bench-cipher-") as tmp:
        trainer = Trainer(task, config.train, Path(tmp) / "speed", log=lambda _: None)
        count = lambda b: (len(b["source"]), 0)  # noqa: E731
        step = bench.training_step(trainer, bench.endless(task.train_batches), count)
        kit_speed = bench.timed(step, args.throughput_seconds, warmup=2)
        kit_run = rnnkit_time_to_target(rnnkit_config(*size, args), Path(tmp) / "fit")
    sides = {
        "seed (batch 1)": (seed_speed, seed_run),
        f"rnnkit (batch {config.train.batch_size})": (kit_speed, kit_run),
    }
    return size_section(size, sides, args.peak)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit status."""
    args = parse_args(argv)
    args.peak = bench.matmul_rate(2048, 2048, 2048, 0.5 if args.quick else 2.0, "cpu")
    progress(f"matmul peak {args.peak:.0f} GFLOP/s")
    before = bench.cpu_ticks()
    sections = [bench_size(size, args) for size in args.size_list]
    t, machine = rnnkit_config(*args.size_list[0], args).train, f"device cpu, {bench.threads(args)}"
    title = "Cipher benchmark: seed loop vs rnnkit"
    lines = bench.header(title, args, bench.others_share(before), machine, __doc__) + [
        f"- seed side: batch 1, Adam lr {SEED_LR}, no clipping; validates every "
        f"{args.seed_eval_every} messages on {args.eval_messages} held-out messages, "
        f"gives up after {args.seed_budget:g} s",
        f"- rnnkit side: its defaults (batch {t.batch_size}"
        f"{' from --rnnkit-batch' if args.rnnkit_batch else ''}), {t.optimizer} lr {t.lr}, "
        f"clip_norm {t.clip_norm}; epochs of {args.rnnkit_epoch_messages} messages, validated on "
        f"{args.eval_messages} dev messages, at most {t.epochs} epochs",
        f"- throughput: `Timer.blocked_autorange` over {args.throughput_seconds:g} s of training "
        f"per side, no validation (rnnkit's loop keeps its default epochs of "
        f"{CipherConfig().data.train_messages:,} messages)",
        "",
    ]
    bench.publish("\n".join(lines) + "\n" + "\n".join(sections), args.target)
    return 0


if __name__ == "__main__":
    bench.run(main)
