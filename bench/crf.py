"""Benchmark: rnnkit's CRF against pytorch-crf and the seed tutorial's per-tag loop.

Per tag count (``--tags``) one random problem: a batch of 32 sentences padded to 40, lengths
uniform in [20, 40], random emissions requiring gradients, gold tags and CRF scores. Timed on
the CPU: NLL forward+backward (summed) and Viterbi decoding by rnnkit's ``CRF`` and by
``torchcrf.CRF`` (the same scores copied in), both on the padded batch with a mask, and by
``SeedLoopCRF``: the tutorial's algorithm, one sentence at a time at its own length, begin and
finish tags inside its transition matrix, a log-sum-exp (or argmax) per next tag per step.
The three are first checked to agree (NLL, emission gradients to 1e-4; paths equal). Targets:
≥2x over pytorch-crf, ≥100x over the seed loop.

    .venv/bin/python bench/crf.py                      # 9 and 20 tags, about a minute
    .venv/bin/python bench/crf.py --tags 5,9,20,50 --threads 1

Needs pytorch-crf (a dev dependency: ``pip install pytorch-crf``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import common as bench
import torch
from common import progress
from torch import nn

from rnnkit.nn.crf import CRF

# The seed tutorial's score for moves that can never happen (into begin, out of finish) and its
# starting value for every tag but begin.
SEED_IMPOSSIBLE = -10000.0
# flag: (value, --quick value, help); --quick also shrinks the batch, since even one pass of
# the seed loop over 32 sentences takes seconds.
TUNED = {
    "batch": (32, 8, "sentences per batch"),
    "seconds": (2.0, 0.1, "timed seconds per case"),
    "seed_seconds": (8.0, 0.1, "seed loop: timed seconds per case"),
}
TOLERANCE = 1e-4
TARGET_PEER = 2.0
TARGET_SEED = 100.0
IMPLEMENTATIONS = ("rnnkit", "pytorch-crf", "seed loop")
OPERATIONS = ("NLL forward+backward", "Viterbi decode")


# ------------------------------------------------------------------------------ seed loop
def _top_index(row: torch.Tensor) -> int:
    """Position of the largest entry of a ``(1, n)`` row, as a Python int."""
    _, where = torch.max(row, 1)
    return int(where.item())


def _row_log_sum_exp(row: torch.Tensor) -> torch.Tensor:
    """log Σ exp over a ``(1, n)`` row, shifted by its maximum (found through the argmax)."""
    peak = row[0, _top_index(row)]
    shift = peak.view(1, -1).expand(1, row.size(1))
    return peak + torch.log(torch.sum(torch.exp(row - shift)))


class SeedLoopCRF(nn.Module):
    """The tutorial's CRF algorithm for one unbatched sentence, begin/finish tags included.

    Built from an rnnkit CRF so that both define the same distribution: ``scores[to, from]``
    holds rnnkit's ``transitions[from, to]`` for real tags, ``start`` in the begin column and
    ``end`` in the finish row. Emissions ``(time, tags + 2)`` carry columns for begin and
    finish too (the tutorial's tagger scores all its tags); every path through them pays a
    -10000 move, so they change nothing measurable.
    """

    def __init__(self, crf: CRF):
        super().__init__()
        real = crf.num_tags
        self.size = real + 2
        self.begin, self.finish = real, real + 1
        scores = torch.full((self.size, self.size), SEED_IMPOSSIBLE)
        with torch.no_grad():
            scores[:real, :real] = crf.transitions.t()
            scores[:real, self.begin] = crf.start
            scores[self.finish, :real] = crf.end
        self.scores = nn.Parameter(scores)

    def _initial(self) -> torch.Tensor:
        state = torch.full((1, self.size), SEED_IMPOSSIBLE)
        state[0][self.begin] = 0.0
        return state

    def log_partition(self, feats: torch.Tensor) -> torch.Tensor:
        """Forward algorithm: per step, per next tag, one log-sum-exp over the previous tags."""
        alpha = self._initial()
        for emit in feats:
            per_tag = []
            for nxt in range(self.size):
                incoming = self.scores[nxt].view(1, -1)
                own = emit[nxt].view(1, -1).expand(1, self.size)
                per_tag.append(_row_log_sum_exp(alpha + incoming + own).view(1))
            alpha = torch.cat(per_tag).view(1, -1)
        return _row_log_sum_exp(alpha + self.scores[self.finish])

    def gold_score(self, feats: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        """Score of one tag sequence, summed step by step."""
        path = torch.cat([torch.tensor([self.begin], dtype=torch.long), tags])
        total = torch.zeros(1)
        for t, emit in enumerate(feats):
            total = total + self.scores[path[t + 1], path[t]] + emit[path[t + 1]]
        return total + self.scores[self.finish, path[-1]]

    def nll(self, feats: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        return self.log_partition(feats) - self.gold_score(feats, tags)

    def viterbi(self, feats: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Best path of one sentence: per step, per next tag, an argmax; Python back-pointers."""
        best = self._initial()
        pointers: list[list[int]] = []
        for emit in feats:
            step_pointers: list[int] = []
            step_best = []
            for nxt in range(self.size):
                candidates = best + self.scores[nxt]
                came_from = _top_index(candidates)
                step_pointers.append(came_from)
                step_best.append(candidates[0][came_from].view(1))
            best = (torch.cat(step_best) + emit).view(1, -1)
            pointers.append(step_pointers)
        closing = best + self.scores[self.finish]
        last = _top_index(closing)
        score = closing[0][last]
        path = [last]
        for step_pointers in reversed(pointers):
            last = step_pointers[last]
            path.append(last)
        if path.pop() != self.begin:
            raise AssertionError("the best path does not start at the begin tag")
        path.reverse()
        return score, path


# -------------------------------------------------------------------------------- problem
@dataclass
class Problem:
    tags: int
    lengths: list[int]
    mask: torch.Tensor  # (batch, time) bool
    gold: torch.Tensor  # (batch, time) long, 0 where padded
    emissions: torch.Tensor  # (batch, time, tags), no grad: each side gets its own leaf copy
    crf: CRF


def make_problem(tags: int, args: argparse.Namespace) -> Problem:
    g = torch.Generator().manual_seed(args.random_seed + tags)
    batch, time_steps = args.batch, args.length
    lengths = torch.randint(args.min_length, time_steps + 1, (batch,), generator=g)
    lengths[0] = time_steps
    mask = torch.arange(time_steps).unsqueeze(0) < lengths.unsqueeze(1)
    gold = torch.randint(tags, (batch, time_steps), generator=g).masked_fill(~mask, 0)
    emissions = torch.randn(batch, time_steps, tags, generator=g)
    crf = CRF(tags)
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return Problem(tags, lengths.tolist(), mask, gold, emissions, crf)


def make_peer(problem: Problem) -> nn.Module:
    import torchcrf

    peer = torchcrf.CRF(problem.tags, batch_first=True)
    with torch.no_grad():
        peer.transitions.copy_(problem.crf.transitions)
        peer.start_transitions.copy_(problem.crf.start)
        peer.end_transitions.copy_(problem.crf.end)
    return peer


def seed_emissions(problem: Problem) -> torch.Tensor:
    """The emissions with zero-score columns for the begin and finish tags appended."""
    extra = torch.zeros(*problem.emissions.shape[:2], 2)
    return torch.cat([problem.emissions, extra], dim=2)


# ----------------------------------------------------------------------------------- sides
def build_calls(problem: Problem) -> dict[tuple[str, str], Callable[[], object]]:
    """(implementation, operation) → one call on the whole batch; a call that runs backward
    first clears the gradients its last call left (a few microseconds, the same for all)."""
    crf, mask, gold, lengths = problem.crf, problem.mask, problem.gold, problem.lengths
    peer, seed = make_peer(problem), SeedLoopCRF(crf)
    kit_em = problem.emissions.clone().requires_grad_(True)
    peer_em = problem.emissions.clone().requires_grad_(True)
    seed_em = seed_emissions(problem).requires_grad_(True)
    plain_em, seed_plain = problem.emissions, seed_em.detach()

    def cleared(*tensors: torch.Tensor) -> None:
        for tensor in tensors:
            tensor.grad = None

    def kit_nll() -> None:
        cleared(kit_em, *crf.parameters())
        crf.nll(kit_em, gold, mask, reduction="sum").backward()

    def peer_nll() -> None:
        cleared(peer_em, *peer.parameters())
        (-peer(peer_em, gold, mask, reduction="sum")).backward()

    def seed_nll() -> None:
        cleared(seed_em, *seed.parameters())
        for row, length in enumerate(lengths):
            seed.nll(seed_em[row, :length], gold[row, :length]).backward()

    def seed_decode() -> object:
        return [seed.viterbi(seed_plain[row, :length]) for row, length in enumerate(lengths)]

    nll_op, decode_op = OPERATIONS
    return {
        ("rnnkit", nll_op): kit_nll,
        ("pytorch-crf", nll_op): peer_nll,
        ("seed loop", nll_op): seed_nll,
        ("rnnkit", decode_op): torch.no_grad()(lambda: crf.decode(plain_em, mask)),
        ("pytorch-crf", decode_op): torch.no_grad()(lambda: peer.decode(plain_em, mask)),
        ("seed loop", decode_op): torch.no_grad()(seed_decode),
    }


# ------------------------------------------------------------------------------- checking
@dataclass
class Agreement:
    peer_nll: float  # largest |difference| of per-sentence NLL, pytorch-crf vs rnnkit
    seed_nll: float  # the same, seed loop vs rnnkit
    peer_grad: float  # largest |difference| of the emission gradients, pytorch-crf vs rnnkit
    total_nll: float  # rnnkit's summed NLL


def check_agreement(problem: Problem) -> Agreement:
    """Compare the three on the problem; raise AssertionError when they disagree."""
    crf, mask, gold = problem.crf, problem.mask, problem.gold
    peer = make_peer(problem)
    seed = SeedLoopCRF(crf)
    kit_em = problem.emissions.clone().requires_grad_(True)
    peer_em = problem.emissions.clone().requires_grad_(True)
    ours_graph = crf.nll(kit_em, gold, mask, reduction="none")
    theirs_graph = -peer(peer_em, gold, mask, reduction="none")
    ours_graph.sum().backward()
    theirs_graph.sum().backward()
    ours, theirs = ours_graph.detach(), theirs_graph.detach()
    with torch.no_grad():
        seed_em = seed_emissions(problem)
        seeds = torch.stack(
            [
                seed.nll(seed_em[row, :length], gold[row, :length]).squeeze()
                for row, length in enumerate(problem.lengths)
            ]
        )
    agreement = Agreement(
        peer_nll=float((ours - theirs).abs().max()),
        seed_nll=float((ours - seeds).abs().max()),
        peer_grad=float((kit_em.grad - peer_em.grad).abs().max()),
        total_nll=float(ours.sum()),
    )
    for name, value in (
        ("pytorch-crf NLL", agreement.peer_nll),
        ("seed-loop NLL", agreement.seed_nll),
        ("pytorch-crf emission gradient", agreement.peer_grad),
    ):
        if not value <= TOLERANCE:
            raise AssertionError(f"{name} differs from rnnkit's by {value:.3g} (> {TOLERANCE})")
    with torch.no_grad():
        paths, _ = crf.decode(problem.emissions, mask)
        kit_paths = [paths[row, :n].tolist() for row, n in enumerate(problem.lengths)]
        peer_paths = peer.decode(problem.emissions, mask)
        seed_paths = [seed.viterbi(seed_em[row, :n])[1] for row, n in enumerate(problem.lengths)]
    if kit_paths != peer_paths:
        raise AssertionError("pytorch-crf's Viterbi paths differ from rnnkit's")
    if kit_paths != seed_paths:
        raise AssertionError("the seed loop's Viterbi paths differ from rnnkit's")
    return agreement


# --------------------------------------------------------------------------------- timing
def bench_tags(tags: int, args: argparse.Namespace) -> tuple[Problem, Agreement, dict]:
    """Check the three agree on a ``tags``-tag problem, then time them: (implementation,
    operation) → merged ``Measurement``."""
    progress(f"== {tags} tags: checking agreement")
    problem = make_problem(tags, args)
    agreement = check_agreement(problem)
    progress(
        f"  max |ΔNLL| per sentence: pytorch-crf {agreement.peer_nll:.2g}, "
        f"seed loop {agreement.seed_nll:.2g}; max |Δgrad| pytorch-crf {agreement.peer_grad:.2g}; "
        "paths equal"
    )
    calls = build_calls(problem)
    fast = {key: call for key, call in calls.items() if key[0] != "seed loop"}
    slow = {key: call for key, call in calls.items() if key[0] == "seed loop"}
    progress(f"  timing: {args.seconds:g} s per case, seed loop {args.seed_seconds:g} s")
    times = bench.medians(fast, args.seconds) | bench.medians(slow, args.seed_seconds)
    for (impl, op), m in times.items():
        progress(f"  {op:<21} {impl:<12} {m.median * 1e3:10.2f} ms")
    return problem, agreement, times


# ------------------------------------------------------------------------------ reporting
def speedup(theirs: float, ours: float) -> float:
    return theirs / ours if ours > 0 else float("nan")


def verdict(value: float, target: float) -> str:
    return "met" if value >= target else "**not met**"


def tags_section(problem: Problem, agreement: Agreement, measured: dict) -> str:
    """One tag count's table and notes."""
    times = {key: m.median * 1e3 for key, m in measured.items()}
    counts = {key: len(m.times) for key, m in measured.items()}
    lines = [
        f"#### {problem.tags} tags (seed loop: {problem.tags + 2}, with begin and finish)",
        "",
        "| operation | rnnkit ms | pytorch-crf ms | seed loop ms "
        f"| rnnkit speed-up over pytorch-crf (target ≥{TARGET_PEER:g}×) "
        f"| over seed loop (target ≥{TARGET_SEED:g}×) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for op in OPERATIONS:
        kit, peer, seed = (times[(impl, op)] for impl in IMPLEMENTATIONS)
        over_peer, over_seed = speedup(peer, kit), speedup(seed, kit)
        lines.append(
            f"| {op} | {kit:,.3f} | {peer:,.3f} | {seed:,.1f} | **{over_peer:.2f}×** "
            f"| **{over_seed:,.0f}×** |"
        )
        notes.append(
            f"{op}: ≥{TARGET_PEER:g}× over pytorch-crf {verdict(over_peer, TARGET_PEER)}, "
            f"≥{TARGET_SEED:g}× over the seed loop {verdict(over_seed, TARGET_SEED)}"
        )
    samples = ", ".join(f"{impl} {counts[(impl, OPERATIONS[0])]}" for impl in IMPLEMENTATIONS)
    lines += [
        "",
        f"- targets: {'; '.join(notes)}",
        f"- lengths {min(problem.lengths)}–{max(problem.lengths)}, "
        f"{sum(problem.lengths):,} tokens in the batch; timed blocks per operation: {samples}",
        f"- agreement: max |ΔNLL| per sentence vs rnnkit: pytorch-crf {agreement.peer_nll:.2g}, "
        f"seed loop {agreement.seed_nll:.2g} (rnnkit's summed NLL {agreement.total_nll:,.2f}); "
        f"max |Δ emission gradient| pytorch-crf {agreement.peer_grad:.2g}; Viterbi paths equal",
        "",
    ]
    return "\n".join(lines)


def header(args: argparse.Namespace, others: float | None) -> str:
    machine = (
        f"pytorch-crf {bench.version('pytorch-crf')}, device cpu, float32, {bench.threads(args)}"
    )
    return "\n".join(
        [
            *bench.header(
                "CRF benchmark: rnnkit vs pytorch-crf vs seed loop", args, others, machine
            ),
            f"- problem: batch {args.batch}, padded length {args.length}, lengths uniform in "
            f"[{args.min_length}, {args.length}] (first sentence full length), random emissions "
            f"(requiring grad), gold tags and CRF scores; random seed {args.random_seed}",
            "- rnnkit: `CRF.nll(reduction='sum').backward()`, `CRF.decode`; pytorch-crf "
            "(`batch_first=True`, rnnkit's scores copied in): `-crf(..., reduction='sum')"
            ".backward()`, `crf.decode`; both on the padded batch with a mask",
            "- seed loop: the tutorial's algorithm re-implemented, one sentence at a time at its "
            "own length, begin/finish tags inside the transition matrix, per step a loop over "
            "next tags (one log-sum-exp, or argmax, each); NLL backward per sentence; Python "
            "back-pointers",
            f"- timing: median ms per batch of {args.batch} sentences, `Timer.blocked_autorange`"
            f" for {args.seconds:g} s per case (seed loop {args.seed_seconds:g} s) in 3 "
            "interleaved rounds; speed-up = their ms / rnnkit's ms",
            "",
        ]
    )


# ------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench.parser(__doc__, "batch 8, a handful of calls, a few seconds", tuned=TUNED)
    p.add_argument("--tags", default=[9, 20], type=bench.int_list, help="tag counts (9,20)")
    p.add_argument("--length", type=int, default=40, help="padded length (40)")
    p.add_argument("--min-length", type=int, default=20, help="shortest sentence (20)")
    p.add_argument("--random-seed", type=int, default=0, help="for the random problem (0)")
    args = bench.finish(p, p.parse_args(argv))
    if not 1 <= args.min_length <= args.length:
        p.error("need 1 ≤ --min-length ≤ --length")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not bench.needs("torchcrf", pip="pytorch-crf"):
        return 2
    before = bench.cpu_ticks()
    sections = [tags_section(*bench_tags(tags, args)) for tags in args.tags]
    others = bench.others_share(before)
    bench.publish(header(args, others) + "\n" + "\n".join(sections), args.target)
    return 0


if __name__ == "__main__":
    bench.run(main)
