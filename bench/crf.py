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
from dataclasses import dataclass, field

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
        """Negative log-likelihood of one sentence's ``tags`` given ``feats``."""
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
    """One random CRF problem: a padded batch, its gold tags, emissions and scores."""

    tags: int
    lengths: list[int]
    mask: torch.Tensor  # (batch, time) bool
    gold: torch.Tensor  # (batch, time) long, 0 where padded
    emissions: torch.Tensor  # (batch, time, tags), no grad: each side gets its own leaf copy
    crf: CRF
    agreement: dict[str, float] = field(default_factory=dict)


def make_problem(tags: int, args: argparse.Namespace) -> Problem:
    """A random problem of ``tags`` tags at ``--batch`` x ``--length``."""
    g = torch.Generator().manual_seed(args.random_seed + tags)
    lengths = torch.randint(args.min_length, args.length + 1, (args.batch,), generator=g)
    lengths[0] = args.length
    mask = torch.arange(args.length).unsqueeze(0) < lengths.unsqueeze(1)
    gold = torch.randint(tags, (args.batch, args.length), generator=g).masked_fill(~mask, 0)
    emissions = torch.randn(args.batch, args.length, tags, generator=g)
    crf = CRF(tags)
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return Problem(tags, lengths.tolist(), mask, gold, emissions, crf)


def build_calls(problem: Problem) -> dict[tuple[str, str], Callable[[], object]]:
    """Check that the three agree on ``problem`` (``problem.agreement``; AssertionError if not),
    then (implementation, operation) → one call on the whole batch; a call that runs backward
    first clears the gradients its last call left (a few microseconds, the same for all)."""
    import torchcrf

    crf, mask, gold, lengths = problem.crf, problem.mask, problem.gold, problem.lengths
    peer, seed = torchcrf.CRF(problem.tags, batch_first=True), SeedLoopCRF(crf)
    with torch.no_grad():
        for theirs, ours in zip(
            peer.parameters(), (crf.start, crf.end, crf.transitions), strict=True
        ):
            theirs.copy_(ours)  # pytorch-crf's order: start, end, transitions
    kit_em = problem.emissions.clone().requires_grad_(True)
    peer_em = problem.emissions.clone().requires_grad_(True)
    extra = torch.zeros(*problem.emissions.shape[:2], 2)  # zero scores for begin and finish
    seed_em = torch.cat([problem.emissions, extra], dim=2).requires_grad_(True)
    plain_em, seed_plain = problem.emissions, seed_em.detach()
    ours, theirs = (
        crf.nll(kit_em, gold, mask, reduction="none"),
        -peer(peer_em, gold, mask, reduction="none"),
    )
    (ours.sum() + theirs.sum()).backward()
    with torch.no_grad():
        seeds = torch.stack(
            [seed.nll(seed_plain[r, :n], gold[r, :n]).squeeze() for r, n in enumerate(lengths)]
        )
        paths = [
            p[:n].tolist() for p, n in zip(crf.decode(plain_em, mask)[0], lengths, strict=True)
        ]
        same = paths == peer.decode(plain_em, mask)
        same_seed = paths == [seed.viterbi(seed_plain[r, :n])[1] for r, n in enumerate(lengths)]
    problem.agreement = found = {
        "pytorch-crf NLL": float((ours - theirs).detach().abs().max()),
        "seed-loop NLL": float((ours.detach() - seeds).abs().max()),
        "pytorch-crf emission gradient": float((kit_em.grad - peer_em.grad).abs().max()),
    }
    for name, value in found.items():
        if not value <= TOLERANCE:
            raise AssertionError(f"{name} differs from rnnkit's by {value:.3g} (> {TOLERANCE})")
    if not (same and same_seed):
        raise AssertionError(
            "the Viterbi paths of pytorch-crf or the seed loop differ from rnnkit's"
        )
    found["total"] = float(ours.detach().sum())

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

    nll, decode = OPERATIONS
    return {
        ("rnnkit", nll): kit_nll,
        ("pytorch-crf", nll): peer_nll,
        ("seed loop", nll): seed_nll,
        ("rnnkit", decode): torch.no_grad()(lambda: crf.decode(plain_em, mask)),
        ("pytorch-crf", decode): torch.no_grad()(lambda: peer.decode(plain_em, mask)),
        ("seed loop", decode): torch.no_grad()(seed_decode),
    }


def bench_tags(tags: int, args: argparse.Namespace) -> str:
    """One tag count: the problem, the agreement check, the timings; its report section."""
    progress(f"== {tags} tags: checking agreement, then timing")
    problem = make_problem(tags, args)
    calls = build_calls(problem)
    fast = {key: call for key, call in calls.items() if key[0] != "seed loop"}
    slow = {key: call for key, call in calls.items() if key[0] == "seed loop"}
    times = bench.medians(fast, args.seconds) | bench.medians(slow, args.seed_seconds)
    ms = {key: m.median * 1e3 for key, m in times.items()}
    rows, notes = [], []
    for op in OPERATIONS:
        kit, peer, seed = (ms[(impl, op)] for impl in IMPLEMENTATIONS)
        rows.append([op, f"{kit:,.3f}", f"{peer:,.3f}", f"{seed:,.1f}", f"**{peer / kit:.2f}×**",
                     f"**{seed / kit:,.0f}×**"])  # fmt: skip
        notes.append(
            f"{op}: ≥{TARGET_PEER:g}× over pytorch-crf {verdict(peer / kit, TARGET_PEER)}, "
            f"≥{TARGET_SEED:g}× over the seed loop {verdict(seed / kit, TARGET_SEED)}"
        )
    blocks = ", ".join(
        f"{impl} {len(times[(impl, OPERATIONS[0])].times)}" for impl in IMPLEMENTATIONS
    )
    a = problem.agreement
    lines = [
        f"#### {tags} tags (seed loop: {tags + 2}, with begin and finish)",
        "",
        *bench.table(
            [
                "operation",
                "rnnkit ms",
                "pytorch-crf ms",
                "seed loop ms",
                f"rnnkit speed-up over pytorch-crf (target ≥{TARGET_PEER:g}×)",
                f"over seed loop (target ≥{TARGET_SEED:g}×)",
            ],
            rows,
        ),  # fmt: skip
        "",
        f"- targets: {'; '.join(notes)}",
        f"- lengths {min(problem.lengths)}–{max(problem.lengths)}, "
        f"{sum(problem.lengths):,} tokens in the batch; timed blocks per operation: {blocks}",
        f"- agreement: max |ΔNLL| per sentence vs rnnkit: pytorch-crf {a['pytorch-crf NLL']:.2g}, "
        f"seed loop {a['seed-loop NLL']:.2g} (rnnkit's summed NLL {a['total']:,.2f}); max "
        f"|Δ emission gradient| pytorch-crf {a['pytorch-crf emission gradient']:.2g}; Viterbi "
        "paths equal",
        "",
    ]
    return "\n".join(lines)


def verdict(value: float, target: float) -> str:
    """'met' or a bold 'not met'."""
    return "met" if value >= target else "**not met**"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit status."""
    p = bench.parser(__doc__, "batch 8, a handful of calls, a few seconds", tuned=TUNED)
    p.add_argument("--tags", default=[9, 20], type=bench.int_list, help="tag counts (9,20)")
    p.add_argument("--length", type=int, default=40, help="padded length (40)")
    p.add_argument("--min-length", type=int, default=20, help="shortest sentence (20)")
    p.add_argument("--random-seed", type=int, default=0, help="for the random problem (0)")
    args = bench.finish(p, p.parse_args(argv))
    if not 1 <= args.min_length <= args.length:
        p.error("need 1 ≤ --min-length ≤ --length")
    if not bench.needs("torchcrf", pip="pytorch-crf"):
        return 2
    before = bench.cpu_ticks()
    sections = [bench_tags(tags, args) for tags in args.tags]
    machine = (
        f"pytorch-crf {bench.version('pytorch-crf')}, device cpu, float32, {bench.threads(args)}"
    )
    title = "CRF benchmark: rnnkit vs pytorch-crf vs seed loop"
    lines = [
        *bench.header(title, args, bench.others_share(before), machine, __doc__),
        f"- problem: batch {args.batch}, padded length {args.length}, lengths uniform in "
        f"[{args.min_length}, {args.length}] (first sentence full length), random emissions "
        f"(requiring grad), gold tags and CRF scores; random seed {args.random_seed}",
        f"- timing: median ms per batch of {args.batch} sentences, `Timer.blocked_autorange` for "
        f"{args.seconds:g} s per case (seed loop {args.seed_seconds:g} s) in 3 interleaved "
        "rounds; speed-up = their ms / rnnkit's ms",
        "",
    ]
    bench.publish("\n".join(lines) + "\n" + "\n".join(sections), args.target)
    return 0


if __name__ == "__main__":
    bench.run(main)
