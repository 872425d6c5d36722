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

``key=value`` overrides work as on the CLI (``train.compile=true`` compiles rnnkit's side).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
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
        dropout = m.dropout if m.layers > 1 else 0.0
        self.rnn = CELLS[m.rnn](m.embedding_dim, m.hidden_size, m.layers, dropout=dropout,
                               batch_first=True)  # fmt: skip
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


class PlainLoop:
    """A hand-written truncated-BPTT loop over the same streams and windows: the loss under
    autocast when the Trainer would use it, ``zero_grad``, backward, ``clip_grad_norm_``, plain
    Adam's step, ``float(loss)``."""

    def __init__(self, task: LMTask, config: LMConfig, device: torch.device):
        torch.manual_seed(config.train.seed)
        t, self.device, self.clip_norm = config.train, device, config.train.clip_norm
        self.model = PlainLM(len(task.vocab), config.model).to(device).train()
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay
        )
        self.half = autocast_dtype(t, device, task.cpu_bf16_pays)  # as rnnkit's Trainer
        self.rows = as_streams(task.ids("train"), t.batch_size).to(device)
        self.spans = windows(self.rows, config.data.bptt)
        self.position, self.state = 0, None

    def step(self) -> tuple[int, int]:
        """One update on the next BPTT window; (streams, tokens)."""
        if self.position == len(self.spans):
            self.position, self.state = 0, None  # a new epoch starts from a fresh state
        start, length = self.spans[self.position]
        self.position += 1
        tokens = self.rows[:, start : start + length]
        target = self.rows[:, start + 1 : start + 1 + length]
        with torch.autocast(self.device.type, dtype=self.half, enabled=self.half is not None):
            loss, state = self.model(tokens, target, self.state)
        self.state = (
            tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_norm:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.optimizer.step()
        float(loss.detach())
        return target.shape[0], target.numel()


# --------------------------------------------------------------------------------- FLOPs
def layer_inputs(m: LMModelConfig) -> list[int]:
    """The input width of each recurrent layer."""
    return [m.embedding_dim] + [m.hidden_size] * (m.layers - 1)


def step_shapes(config: LMConfig) -> dict[tuple[int, int, int], str]:
    """``(m, k, n)`` of one time step's product per distinct recurrent-layer shape → label."""
    m, shapes = config.model, {}
    for layer, width in enumerate(layer_inputs(m), start=1):
        shape = (config.train.batch_size, width + m.hidden_size, GATES[m.rnn] * m.hidden_size)
        label = f"layer {layer}" if m.layers == 1 or layer == 1 else f"layers {layer}-{m.layers}"
        shapes.setdefault(shape, label)
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


# ------------------------------------------------------------------------------ measuring
@dataclass
class Results:
    """Everything the benchmark measured."""

    rates: dict[str, tuple[bench.Rate, bench.Rate]] = field(default_factory=dict)  # (rnnkit, plain)
    peaks: dict[str, float] = field(default_factory=dict)  # "fp32"/"bf16" → GFLOP/s
    steps: dict[str, float] = field(default_factory=dict)  # a layer's step product → GFLOP/s
    generation: float = 0.0
    generation_seconds: float = 0.0
    others: float | None = None
    optimizer: str = ""  # the Trainer's optimizer, in words
    device: str = "cpu"


def measure(config: LMConfig, task: LMTask, args: argparse.Namespace) -> Results:
    """Both loops in every precision, the matmul rates and generation."""
    results, before = Results(), bench.cpu_ticks()
    count = lambda b: (b["target"].shape[0], b["target"].numel())  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench-lm-") as tmp:
        for precision in args.precisions:
            train = dataclasses.replace(config.train, precision=precision)
            trainer = Trainer(task, train, f"{tmp}/{precision}", log=lambda _: None)
            results.optimizer = bench.describe_optimizer(trainer.optimizer)
            results.device = str(device := trainer.device)
            kit = bench.training_step(trainer, bench.endless(task.train_batches), count)
            plain = PlainLoop(task, dataclasses.replace(config, train=train), device).step
            rates = results.rates[precision] = (bench.Rate(), bench.Rate())
            share = args.seconds / args.rounds
            for r in range(1, args.rounds + 1):
                progress(f"{precision}, round {r}/{args.rounds}: rnnkit, then plain, {share:g} s")
                bench.timed(kit, share, rates[0], WARMUP_STEPS if r == 1 else 0)
                bench.timed(plain, share, rates[1], WARMUP_STEPS if r == 1 else 0)
        progress("matmul rates, then generation")
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            results.peaks[name] = bench.matmul_rate(
                *[PEAK_SIZE] * 3, args.matmul_seconds, device, dtype
            )
        for (m, k, n), label in step_shapes(config).items():
            shown = f"{label} ({m}x{k} @ {k}x{n})"
            results.steps[shown] = bench.matmul_rate(m, k, n, args.matmul_seconds, device)
        count = [0]

        def generate() -> None:  # Timer.timeit runs it twice untimed first: count the last
            tokens = task.generate(args.prompt, args.gen_tokens, TEMPERATURE, seed=0)
            count[0] = sum(1 for _ in tokens)

        results.generation_seconds = bench.timer(generate).timeit(1).median
        results.generation = count[0] / results.generation_seconds
    results.others = bench.others_share(before)
    return results


def report(config: LMConfig, task: LMTask, results: Results, args: argparse.Namespace) -> str:
    """The markdown report."""
    m, t, d = config.model, config.train, config.data
    flops, how = flops_per_token(m, len(task.vocab))
    output = "adaptive softmax" if m.adaptive_softmax else "tied" if m.tie_weights else "full"
    spans = ", ".join(
        f"{p}: rnnkit {kit.steps:,} steps in {kit.seconds:.1f} s, plain {plain.steps:,} in "
        f"{plain.seconds:.1f} s"
        for p, (kit, plain) in results.rates.items()
    )
    machine = f"device {results.device}, {bench.threads(args)}"
    title = "LM benchmark: rnnkit vs plain PyTorch"
    lines = [
        *bench.header(title, args, results.others, machine, __doc__),
        f"- recipe: `{args.config}`, data {d.train} ({d.level} level), "
        f"{task.ids('train').numel():,} training tokens",
        f"- model: {bench.describe(config, task)}; output {output}, embedding dropout "
        f"{m.embedding_dropout}",
        f"- rnnkit: {results.optimizer}; plain: Adam (not fused) lr {t.lr}, clip_norm "
        f"{t.clip_norm}; each precision on both sides (bf16: autocast, float32 weights)",
        f"- training: {WARMUP_STEPS} warm-up steps, then `Timer.blocked_autorange` for "
        f"{args.seconds:g} s per side and precision in {args.rounds} alternating round(s): {spans}",
        "",
        "| measure | value |",
        "|---|---:|",
    ]
    for precision, (kit, plain) in results.rates.items():
        kit_rate, plain_rate = kit.tokens_per_second, plain.tokens_per_second
        kit_gflops, plain_gflops = kit_rate * flops / 1e9, plain_rate * flops / 1e9
        top = results.peaks["bf16" if precision == "bf16" else "fp32"] or float("nan")
        lines += [
            f"| {precision}: rnnkit training, tokens/s | {kit_rate:,.0f} |",
            f"| {precision}: plain loop training, tokens/s | {plain_rate:,.0f} |",
            f"| {precision}: ratio rnnkit / plain | **{kit_rate / plain_rate:.3f}×** |",
            f"| {precision}: achieved GFLOP/s, rnnkit (plain); share of that precision's peak "
            f"| {kit_gflops:,.2f} ({plain_gflops:,.2f}); {kit_gflops / top:.1%} "
            f"({plain_gflops / top:.1%}) |",
        ]
    lines += [
        f"| model FLOPs per token (training = 3 x forward) | {flops / 1e6:,.3f} M |",
        *(
            f"| matmul peak GFLOP/s ({PEAK_SIZE}x{PEAK_SIZE} {name}) | {results.peaks[key]:,.1f} |"
            for key, name in (("fp32", "float32"), ("bf16", "bfloat16"))
        ),
        *(
            f"| matmul GFLOP/s, one step of {shape} | {rate:,.1f} |"
            for shape, rate in results.steps.items()
        ),
        f"| generation tokens/s (batch 1, {args.gen_tokens} tokens, temperature {TEMPERATURE}) "
        f"| {results.generation:,.0f} |",
        "",
        f"- FLOPs: per layer 2*G*H*(in+H) with G={GATES[m.rnn]} ({m.rnn}), {how}; "
        "elementwise gate math, softmax and the optimizer not counted",
        f"- generation: {results.generation_seconds:.2f} s for {args.gen_tokens} tokens, prompt "
        f"{args.prompt!r}, model trained {sum(k.seconds for k, _ in results.rates.values()):.0f} s "
        "by the rnnkit loop",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit status."""
    p = bench.parser(__doc__, "~2 s spans, 100 tokens", data_dir=True, tuned=TUNED, device="auto")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    p.add_argument("--prompt", default="", help="generation prompt (default: none)")
    p.add_argument("--precisions", default="fp32,bf16", type=lambda text: text.split(","),
                   help="train.precision values, each on both sides (fp32,bf16)")  # fmt: skip
    args = bench.finish(p, p.parse_intermixed_args(argv))
    config = bench.load_recipe(args.config, "lm", [f"train.device={args.device}", *args.overrides])
    progress(f"building the task ({config.data.train})")
    task = build_task("lm", config, args.data_dir)
    bench.publish(report(config, task, measure(config, task, args), args), args.target)
    return 0


if __name__ == "__main__":
    bench.run(main)
