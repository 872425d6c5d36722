"""Benchmark: translation training throughput and decoding speed, rnnkit vs the seed's loop.

1. **rnnkit**: the model of ``configs/fra-eng-tutorial.yaml``, ``Trainer.train_step`` over
   ``task.train_batches``, target tokens/s at batch 64 (the recipe's) and 256, each in
   float32 and bfloat16 autocast (``train.precision``).
2. **The seed's loop**, re-implemented: one pair per SGD update, a GRU encoder fed one word at
   a time, the tutorial's attention decoder over ``MAX_LENGTH`` (10) positions, teacher
   forcing on half of the pairs.
3. **Decoding**: ``task.translate`` of dev sources, greedy and beam 5, sentences/s.

The pairs are the recipe's when ``--data-dir`` holds ``eng-fra/fra.txt``, else synthetic ones.

    .venv/bin/python bench/translate.py                 # about 6 minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import tempfile
import time
from pathlib import Path

import common as bench
import torch
from common import progress
from torch import nn
from torch.nn import functional as F

from rnnkit.config import from_dict, read_yaml
from rnnkit.data.parallel import Pair
from rnnkit.datasets import data_dir
from rnnkit.nn.seq2seq import EOS_ID
from rnnkit.tasks.translate import TranslateConfig, TranslateTask, pair_vocabs
from rnnkit.train import Trainer

RECIPE = bench.REPO / "configs" / "fra-eng-tutorial.yaml"
SEED_MAX_LENGTH = 10
WARMUP = 3
TUNED = {  # flag: (value, --quick value, help)
    "seconds": (60.0, 3.0, "rnnkit training time"),
    "seed_pairs": (300, 20, "pairs the seed loop trains"),
    "decode": (512, 64, "dev sources to translate"),
}


def synthetic_pairs(count: int, seed: int = 1) -> list[Pair]:
    """Random sentences of 3–9 words over 4,000 French-like and 2,800 English-like words."""
    rng = random.Random(seed)
    src = [f"f{i}" for i in range(4000)]
    tgt = [f"e{i}" for i in range(2800)]
    pairs = []
    for i in range(count):
        s = " ".join(rng.choice(src) for _ in range(rng.randint(3, 9)))
        t = " ".join(rng.choice(tgt) for _ in range(rng.randint(3, 9)))
        pairs.append(Pair(s, t, i + 1))
    return pairs


def build_task(args: argparse.Namespace) -> tuple[TranslateTask, str]:
    config = from_dict(TranslateConfig, read_yaml(RECIPE))
    config.train.device = "cpu"
    root = data_dir(args.data_dir)
    if not args.synthetic and (root / config.data.file).exists():
        return TranslateTask.build(
            config, root
        ), f"{config.data.file} (tutorial recipe's train split)"
    pairs = synthetic_pairs(400 if args.quick else 10_000)
    task = TranslateTask(config, pair_vocabs(config.data, pairs))  # synthetic: same code paths
    task._splits = {"train": pairs, "dev": pairs[:256], "test": pairs[:256]}
    return task, "synthetic pairs (--synthetic, or no eng-fra/fra.txt in the data directory)"


def bench_rnnkit(
    task: TranslateTask, seconds: float, batch_size: int, bf16: bool
) -> tuple[float, int]:
    """Target tokens/s of the Trainer's own step at this batch size (in bfloat16 autocast,
    ``train.precision: bf16``, or in float32), and the steps timed. The recipe's optimizer is
    fused Adam 1e-3 with clip_norm 1.0, what this loop typed out by hand before the harness
    change. Starts from the same initial weights each time."""
    initial = {k: v.clone() for k, v in task.model.state_dict().items()}
    recipe = task.config.train
    task.config.train = dataclasses.replace(
        recipe, batch_size=batch_size, precision="bf16" if bf16 else "fp32"
    )
    with tempfile.TemporaryDirectory(prefix="bench-translate-") as tmp:
        trainer = Trainer(task, task.config.train, tmp, log=lambda _: None)
        tokens = lambda b: (len(b["target_mask"]), int(b["target_mask"].sum()))  # noqa: E731
        step = bench.training_step(trainer, bench.endless(task.train_batches), tokens)
        rate = bench.run_for(step, seconds, warmup=WARMUP)
    task.model.load_state_dict(initial)
    task.config.train = recipe
    return rate.tokens_per_second, rate.steps


class SeedEncoder(nn.Module):
    def __init__(self, vocab: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.embedding = nn.Embedding(vocab, hidden)
        self.gru = nn.GRU(hidden, hidden)

    def forward(self, word: torch.Tensor, state: torch.Tensor):
        return self.gru(self.embedding(word).view(1, 1, -1), state)


class SeedAttnDecoder(nn.Module):
    """The seed's decoder: attention weights from a linear layer over MAX_LENGTH positions."""

    def __init__(self, hidden: int, vocab: int, dropout: float = 0.1):
        super().__init__()
        self.embedding = nn.Embedding(vocab, hidden)
        self.attn = nn.Linear(hidden * 2, SEED_MAX_LENGTH)
        self.attn_combine = nn.Linear(hidden * 2, hidden)
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden, hidden)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, word: torch.Tensor, state: torch.Tensor, memory: torch.Tensor):
        embedded = self.dropout(self.embedding(word).view(1, 1, -1))
        weights = F.softmax(self.attn(torch.cat((embedded[0], state[0]), 1)), dim=1)
        applied = torch.bmm(weights.unsqueeze(0), memory.unsqueeze(0))
        mixed = F.relu(self.attn_combine(torch.cat((embedded[0], applied[0]), 1)).unsqueeze(0))
        output, state = self.gru(mixed, state)
        return F.log_softmax(self.out(output[0]), dim=1), state


def bench_seed(task: TranslateTask, pairs: int, hidden: int = 256) -> float:
    """Target tokens/s of the seed's one-pair-at-a-time loop (see the module docstring)."""
    encoder = SeedEncoder(len(task.vocab), hidden)
    decoder = SeedAttnDecoder(hidden, len(task.target_vocab))
    enc_opt = torch.optim.SGD(encoder.parameters(), lr=0.01)
    dec_opt = torch.optim.SGD(decoder.parameters(), lr=0.01)
    criterion = nn.NLLLoss()
    rng = random.Random(1)
    train = [
        p for p in task.pairs("train") if len(p.source.split()) < SEED_MAX_LENGTH
    ]  # the seed's memory holds MAX_LENGTH positions (its source has no EOS beyond them)

    def one_pair() -> int:
        pair = rng.choice(train)
        src = torch.tensor(task.vocab.encode(pair.source.split()) + [EOS_ID]).view(-1, 1)
        tgt = torch.tensor(task.target_vocab.encode(pair.target.split()) + [EOS_ID]).view(-1, 1)
        state = torch.zeros(1, 1, hidden)
        enc_opt.zero_grad()
        dec_opt.zero_grad()
        memory = torch.zeros(SEED_MAX_LENGTH, hidden)
        for i in range(min(src.shape[0], SEED_MAX_LENGTH)):
            out, state = encoder(src[i], state)
            memory[i] = out[0, 0]
        word, loss, trained = torch.tensor([[2]]), 0.0, 0  # <s>
        forcing = rng.random() < 0.5
        for i in range(tgt.shape[0]):
            log_probs, state = decoder(word, state, memory)
            loss = loss + criterion(log_probs, tgt[i])
            trained += 1
            if forcing:
                word = tgt[i]
            else:
                word = log_probs.topk(1)[1].squeeze().detach()
                if int(word) == EOS_ID:
                    break
        loss.backward()
        enc_opt.step()
        dec_opt.step()
        return trained

    return bench.run_steps(lambda: (1, one_pair()), pairs, WARMUP).tokens_per_second


def bench_decoding(task: TranslateTask, count: int) -> dict[int, float]:
    sources = sorted({p.source for p in task.pairs("dev")})[:count]
    rates = {}
    for beam in (1, 5):
        task.translate(sources[:8], beam)  # warm-up
        start = time.perf_counter()
        task.translate(sources, beam)
        rates[beam] = len(sources) / (time.perf_counter() - start)
    return rates


def _native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def main(argv: list[str] | None = None) -> int:
    parser = bench.parser(__doc__, "tiny timings", tuned=TUNED)
    parser.add_argument("--data-dir", help="where eng-fra/fra.txt lives")
    parser.add_argument("--synthetic", action="store_true", help="synthetic pairs even if found")
    args = bench.finish(parser, parser.parse_args(argv))
    torch.manual_seed(1)
    ticks = bench.cpu_ticks()
    task, data = build_task(args)
    progress(f"data: {data}")
    settings = [(64, False), (64, True), (256, False), (256, True)]
    ours = {}
    for batch_size, bf16 in settings:
        progress(f"rnnkit training, batch {batch_size}{', bf16' * bf16} ...")
        ours[batch_size, bf16] = bench_rnnkit(task, args.seconds, batch_size, bf16)
    progress("seed loop ...")
    seed = bench_seed(task, args.seed_pairs)
    progress("decoding ...")
    decode = bench_decoding(task, args.decode)
    busy = bench.others_share(ticks)
    machine = f"device cpu, {bench.threads(args)}"
    rows = [
        f"rnnkit, batch {b}, {'bfloat16 autocast' if bf16 else 'float32'} ({steps} steps) | "
        f"{rate:,.0f} | **{rate / seed:.1f}×**"
        for (b, bf16), (rate, steps) in ours.items()
    ]
    rows.append(f"seed's one-pair loop ({args.seed_pairs} pairs) | {seed:,.0f} | 1.0×")
    lines = [
        "",
        *bench.header(
            "Translation benchmark: rnnkit vs the seed's one-pair loop", args, busy, machine
        ),
        f"- data: {data}. Model: configs/fra-eng-tutorial.yaml sizes.",
        "",
        *bench.table("training | target tokens/s | ratio over the seed's loop (target ≥30×)", rows),
        "",
        "- the recipe trains at batch 64; bfloat16 autocast is `train.precision: bf16` (this CPU "
        "has native bf16: " + ("yes" if _native_bf16() else "no") + ")",
        "",
        *bench.table(
            "decoding (batch 128) | sentences/s",
            [("greedy", f"{decode[1]:,.0f}"), ("beam 5", f"{decode[5]:,.0f}")],
        ),
    ]
    bench.publish("\n".join(lines), args.target)
    return 0


if __name__ == "__main__":
    bench.run(main)
