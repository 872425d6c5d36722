"""Benchmark: rnnkit's language-model training loop against a plain PyTorch loop, the machine's
matrix-multiply rate, and generation speed, for one LM recipe on one machine.

1. **rnnkit** tokens/s: ``Trainer.train_step`` over the task's own batches.
2. **plain loop** tokens/s: the same network in ``torch.nn`` (``PlainLM``) over the same
   streams and BPTT windows, plain Adam, ``clip_grad_norm_``; the two run in alternating
   rounds (``--rounds``). The ratio rnnkit/plain is the toolkit's overhead (goal: about 1.0).
   Both are measured in each of ``--precisions`` (fp32 and bf16 autocast by default).
3. **matmul** GFLOP/s of float32 ``torch.mm``: a 2048² product (the peak) and one time step
   of each recurrent layer; model FLOPs per token counted analytically (training = 3 x
   forward), so achieved GFLOP/s and the share of peak.
4. **generation** tokens/s: ``task.generate`` at batch 1 with the model trained by (1).

    .venv/bin/python bench/lm.py                                  # shakespeare-char, ~1 min
    .venv/bin/python bench/lm.py --config configs/X.yaml model.hidden_size=256
    python bench/lm.py --device cuda --precisions fp32,bf16      # on a GPU: bf16 vs fp32
    python bench/lm.py --device cuda --precisions bf16 train.compile=true   # compiled

``key=value`` overrides work as on the CLI (``train.compile=true`` compiles rnnkit's side).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import common as bench
import torch
from common import progress
from torch import nn
from torch.nn import functional as F

from rnnkit.data.text import as_streams, windows
from rnnkit.nn.language_model import LMModelConfig
from rnnkit.tasks import build_task
from rnnkit.tasks.lm import LMConfig, LMTask
from rnnkit.train import Trainer, autocast_dtype

DEFAULT_CONFIG = "configs/shakespeare-char.yaml"
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
CELLS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
PEAK_SIZE = 2048
WARMUP_STEPS = 3
TEMPERATURE = 0.8
TUNED = {  # flag: (value, --quick value, help)
    "seconds": (20.0, 2.0, "training time per side"),
    "rounds": (2, 1, "alternating rounds per side"),
    "matmul_seconds": (3.0, 0.5, "time per matmul shape"),
    "gen_tokens": (500, 100, "tokens to generate"),
}


# ---------------------------------------------------------------------------- plain loop
class PlainLM(nn.Module):
    """The same network as rnnkit's, written directly with torch.nn."""

    def __init__(self, vocab_size: int, m: LMModelConfig):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, m.embedding_dim)
        self.embed_drop = nn.Dropout(m.embedding_dropout)
        self.rnn = CELLS[m.rnn](
            m.embedding_dim,
            m.hidden_size,
            num_layers=m.layers,
            dropout=m.dropout if m.layers > 1 else 0.0,
            batch_first=True,
        )
        self.drop = nn.Dropout(m.dropout)
        self.proj: nn.Linear | None = None
        self.adaptive: nn.AdaptiveLogSoftmaxWithLoss | None = None
        if m.adaptive_softmax:
            cutoffs = [x for x in m.cutoffs if x < vocab_size - 1]
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(
                m.hidden_size, vocab_size, cutoffs=cutoffs, div_value=4.0
            )
            return
        width = m.hidden_size
        if m.tie_weights and m.hidden_size != m.embedding_dim:
            self.proj = nn.Linear(m.hidden_size, m.embedding_dim)
            width = m.embedding_dim
        self.out = nn.Linear(width, vocab_size)
        if m.tie_weights:
            self.out.weight = self.embed.weight

    def forward(
        self, tokens: torch.Tensor, target: torch.Tensor, state: Any
    ) -> tuple[torch.Tensor, Any]:
        """Mean cross-entropy of ``target`` given ``tokens`` (both ``(batch, time)``)."""
        output, state = self.rnn(self.embed_drop(self.embed(tokens)), state)
        flat = self.drop(output).reshape(-1, output.shape[-1])
        if self.adaptive is not None:
            return self.adaptive(flat, target.reshape(-1)).loss, state
        if self.proj is not None:
            flat = self.proj(flat)
        return F.cross_entropy(self.out(flat), target.reshape(-1)), state


class PlainUpdate:
    """Bare PyTorch's training update, the peer of ``Trainer.train_step`` (here and in
    bench/gpu.py): the loss under autocast when ``half`` is set, ``zero_grad``, backward,
    ``clip_grad_norm_``, the optimizer's step, ``float(loss)``."""

    def __init__(self, model: nn.Module, optimizer: Any, clip_norm: float, device: Any):
        self.model, self.optimizer = model, optimizer
        self.clip_norm, self.device = clip_norm, device
        self.half: torch.dtype | None = None
        self.model.train()

    def update(self, loss_of: Callable[[], torch.Tensor]) -> None:
        with torch.autocast(self.device.type, dtype=self.half, enabled=self.half is not None):
            loss = loss_of()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_norm:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.optimizer.step()
        float(loss.detach())


class PlainLoop(PlainUpdate):
    """A hand-written truncated-BPTT loop over the same streams and windows."""

    def __init__(self, task: LMTask, config: LMConfig, device: torch.device):
        torch.manual_seed(config.train.seed)
        t = config.train
        model = PlainLM(len(task.vocab), config.model).to(device)
        adam = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        super().__init__(model, adam, t.clip_norm, device)
        self.half = autocast_dtype(t, device, task.cpu_bf16_pays)  # as rnnkit's Trainer
        self.rows = as_streams(task.ids("train"), t.batch_size).to(device)
        self.spans = windows(self.rows, config.data.bptt)
        self.position = 0
        self.state: Any = None

    def step(self) -> tuple[int, int]:
        if self.position == len(self.spans):
            self.position, self.state = 0, None  # a new epoch starts from a fresh state
        start, length = self.spans[self.position]
        self.position += 1
        tokens = self.rows[:, start : start + length]
        target = self.rows[:, start + 1 : start + 1 + length]

        def loss_of() -> torch.Tensor:
            loss, state = self.model(tokens, target, self.state)
            self.state = (
                tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
            )
            return loss

        self.update(loss_of)
        return target.shape[0], target.numel()


# --------------------------------------------------------------------------------- FLOPs
@dataclass
class MatmulRate:
    m: int
    k: int
    n: int
    gflops: float
    label: str

    @property
    def shape(self) -> str:
        return f"{self.m}x{self.k} @ {self.k}x{self.n}"


def layer_inputs(m: LMModelConfig) -> list[int]:
    """The input width of each recurrent layer."""
    return [m.embedding_dim] + [m.hidden_size] * (m.layers - 1)


def step_shapes(config: LMConfig) -> list[tuple[int, int, int, str]]:
    """``(m, k, n, label)`` of one time step's product per distinct recurrent-layer shape."""
    m = config.model
    gates = GATES[m.rnn] * m.hidden_size
    shapes: list[tuple[int, int, int, str]] = []
    for layer, width in enumerate(layer_inputs(m), start=1):
        shape = (config.train.batch_size, width + m.hidden_size, gates)
        if shape not in [s[:3] for s in shapes]:
            label = (
                f"layer {layer}" if m.layers == 1 or layer == 1 else f"layers {layer}-{m.layers}"
            )
            shapes.append((*shape, label))
    return shapes


def flops_per_token(m: LMModelConfig, vocab_size: int) -> tuple[int, str]:
    """Training FLOPs per token (3 x forward) and how the output layer was counted."""
    gates, hidden = GATES[m.rnn], m.hidden_size
    forward = sum(2 * gates * hidden * (width + hidden) for width in layer_inputs(m))
    if m.adaptive_softmax:
        cutoffs = [x for x in m.cutoffs if x < vocab_size - 1]
        head = (cutoffs[0] if cutoffs else vocab_size) + len(cutoffs)
        forward += 2 * hidden * head
        how = f"adaptive softmax: head only, 2*H*{head} (cutoffs[0] + clusters; an underestimate)"
    elif m.tie_weights and hidden != m.embedding_dim:
        forward += 2 * hidden * m.embedding_dim + 2 * m.embedding_dim * vocab_size
        how = "tied: projection 2*H*E + output 2*E*V"
    else:
        forward += 2 * hidden * vocab_size
        how = "output 2*H*V"
    return 3 * forward, how


# ---------------------------------------------------------------------------- generation
def generation_rate(task: LMTask, prompt: str, length: int) -> tuple[float, float]:
    """(tokens/s, seconds) of generating ``length`` tokens, timed by ``Timer.timeit`` (after
    its own untimed calls)."""
    count = [0]

    def generate() -> None:
        count[0] = sum(
            1 for _ in task.generate(prompt, length=length, temperature=TEMPERATURE, seed=0)
        )

    seconds = bench.timer(generate).timeit(1).median
    return count[0] / seconds, seconds


# ------------------------------------------------------------------------------ results
@dataclass
class Results:
    # precision → (rnnkit, plain loop)
    rates: dict[str, tuple[bench.Rate, bench.Rate]] = field(default_factory=dict)
    peak: float = 0.0
    bf16_peak: float = 0.0
    steps: list[MatmulRate] = field(default_factory=list)
    generation: float = 0.0
    generation_seconds: float = 0.0
    others: float | None = None
    optimizer: str = ""  # the Trainer's optimizer, in words
    device: str = "cpu"


def measure(config: LMConfig, task: LMTask, args: argparse.Namespace) -> Results:
    results = Results()
    before = bench.cpu_ticks()
    with tempfile.TemporaryDirectory(prefix="bench-lm-") as tmp:
        for precision in args.precisions:
            train = dataclasses.replace(config.train, precision=precision)
            trainer = Trainer(task, train, f"{tmp}/{precision}", log=lambda _: None)
            results.optimizer = bench.describe_optimizer(trainer.optimizer)
            results.device = str(trainer.device)
            kit = bench.training_step(
                trainer,
                bench.endless(task.train_batches),
                lambda b: (b["target"].shape[0], b["target"].numel()),
            )
            plain = PlainLoop(task, dataclasses.replace(config, train=train), trainer.device).step
            rates = results.rates[precision] = (bench.Rate(), bench.Rate())
            share = args.seconds / args.rounds
            for r in range(1, args.rounds + 1):
                progress(f"{precision}, round {r}/{args.rounds}: rnnkit, then plain, {share:g} s")
                warmup = WARMUP_STEPS if r == 1 else 0
                bench.timed(kit, share, rates[0], warmup)
                bench.timed(plain, share, rates[1], warmup)
            progress(
                f"  {precision}: rnnkit {rates[0].tokens_per_second:,.0f} tok/s, "
                f"plain {rates[1].tokens_per_second:,.0f} tok/s"
            )
        device = trainer.device
        progress(f"matmul {PEAK_SIZE}x{PEAK_SIZE}")
        results.peak = bench.matmul_rate(
            PEAK_SIZE, PEAK_SIZE, PEAK_SIZE, args.matmul_seconds, device
        )
        results.bf16_peak = bench.matmul_rate(
            PEAK_SIZE, PEAK_SIZE, PEAK_SIZE, args.matmul_seconds, device, torch.bfloat16
        )
        for m, k, n, label in step_shapes(config):
            progress(f"matmul {m}x{k} @ {k}x{n}")
            rate = bench.matmul_rate(m, k, n, args.matmul_seconds, device)
            results.steps.append(MatmulRate(m, k, n, rate, label))
        progress(f"generating {args.gen_tokens} tokens")
        results.generation, results.generation_seconds = generation_rate(
            task, args.prompt, args.gen_tokens
        )
    results.others = bench.others_share(before)
    return results


def report(config: LMConfig, task: LMTask, results: Results, args: argparse.Namespace) -> str:
    m, t, d = config.model, config.train, config.data
    vocab = len(task.vocab)
    flops, how = flops_per_token(m, vocab)
    machine = f"device {results.device}, {bench.threads(args)}"
    output = "adaptive softmax" if m.adaptive_softmax else "tied" if m.tie_weights else "full"
    spans = ", ".join(
        f"{p}: rnnkit {kit.steps:,} steps in {kit.seconds:.1f} s, plain {plain.steps:,} in "
        f"{plain.seconds:.1f} s"
        for p, (kit, plain) in results.rates.items()
    )
    lines = [
        *bench.header("LM benchmark: rnnkit vs plain PyTorch", args, results.others, machine),
        f"- recipe: `{args.config}`, data {d.train} ({d.level} level), "
        f"{task.ids('train').numel():,} training tokens",
        f"- model: {bench.describe(config, task)}; output {output}, embedding dropout "
        f"{m.embedding_dropout}",
        f"- rnnkit: {results.optimizer}; plain: Adam (not fused) lr {t.lr}, clip_norm "
        f"{t.clip_norm}; each precision on both sides (bf16: autocast, float32 weights)",
        f"- training: {WARMUP_STEPS} warm-up steps, then {args.seconds:g} s per side and "
        f"precision in {args.rounds} alternating round(s): {spans}",
        "",
        "| measure | value |",
        "|---|---:|",
    ]
    peak = results.peak or float("nan")
    for precision, (kit, plain) in results.rates.items():
        kit_rate, plain_rate = kit.tokens_per_second, plain.tokens_per_second
        kit_gflops, plain_gflops = kit_rate * flops / 1e9, plain_rate * flops / 1e9
        top = results.bf16_peak if precision == "bf16" else peak
        shown = bench.ratio(kit_rate, plain_rate, ".3f")
        lines += [
            f"| {precision}: rnnkit training, tokens/s | {kit_rate:,.0f} |",
            f"| {precision}: plain loop training, tokens/s | {plain_rate:,.0f} |",
            f"| {precision}: ratio rnnkit / plain | **{shown}** |",
            f"| {precision}: achieved GFLOP/s, rnnkit (plain); share of that precision's peak "
            f"| {kit_gflops:,.2f} ({plain_gflops:,.2f}); {kit_gflops / top:.1%} "
            f"({plain_gflops / top:.1%}) |",
        ]
    lines += [
        f"| model FLOPs per token (training = 3 x forward) | {flops / 1e6:,.3f} M |",
        f"| matmul peak GFLOP/s ({PEAK_SIZE}x{PEAK_SIZE} float32) | {results.peak:,.1f} |",
        f"| matmul peak GFLOP/s ({PEAK_SIZE}x{PEAK_SIZE} bfloat16) | {results.bf16_peak:,.1f} |",
    ]
    for rate in results.steps:
        lines.append(
            f"| matmul GFLOP/s, one step of {rate.label} ({rate.shape}) | {rate.gflops:,.1f} |"
        )
    trained = sum(kit.seconds for kit, _ in results.rates.values())
    lines += [
        f"| generation tokens/s (batch 1, {args.gen_tokens} tokens, temperature {TEMPERATURE}) "
        f"| {results.generation:,.0f} |",
        "",
        f"- FLOPs: per layer 2*G*H*(in+H) with G={GATES[m.rnn]} ({m.rnn}), {how}; "
        "elementwise gate math, softmax and the optimizer not counted",
        f"- generation: {results.generation_seconds:.2f} s for {args.gen_tokens} tokens, prompt "
        f"{args.prompt!r}, model trained {trained:.0f} s by the rnnkit loop",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench.parser(
        __doc__, "~2 s spans, 100 generated tokens", data_dir=True, tuned=TUNED, device="auto"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    p.add_argument("--prompt", default="", help="generation prompt (default: none)")
    p.add_argument(
        "--precisions", default="fp32,bf16", type=lambda text: text.split(","),
        help="train.precision values to measure, each on both sides (default fp32,bf16)",
    )  # fmt: skip
    return bench.finish(p, p.parse_intermixed_args(argv))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = bench.load_recipe(args.config, "lm", [f"train.device={args.device}", *args.overrides])
    progress(f"building the task ({config.data.train})")
    task = build_task("lm", config, args.data_dir)
    results = measure(config, task, args)
    bench.publish(report(config, task, results, args), args.target)
    return 0


if __name__ == "__main__":
    bench.run(main)
