"""Benchmark: tagger training throughput and tagging latency, rnnkit vs the seed's BiLSTM-CRF.

1. **Seed size, rnnkit** (on ``--device``): the seed tutorial's "realistic" size (9 tags, which
   its begin and end tags make 11; length 30, embedding 100, BiLSTM 2 x 100, no dropout) as a
   ``Tagger`` (no chars, CRF head) on random sentences; ``Trainer.train_step`` timed for
   ``--seconds`` per batch size (``--batches``). Where the time goes: the same step with a
   softmax head, and ``CRF.nll`` forward+backward alone. Tagging: ``Tagger.decode``, one
   sentence and batches of 32 and 256.
2. **Seed size, the seed's algorithm** (CPU): the tutorial's BiLSTM-CRF, one sentence per SGD
   update, its CRF ``SeedLoopCRF`` from bench/crf.py, and again with the forward algorithm
   vectorised (the tutorial's exercise); its Viterbi for tagging.
3. **Recipes** (``--recipes``, with ``key=value`` overrides): the task built the CLI's way,
   ``--steps`` steps timed (batch making included), then ``task.tag`` on dev sentences, one at a
   time (median length) and in batches of 32 and 256; skipped with a note when the data is
   missing. ``--contextual FWD,BWD`` adds each recipe with those character LMs' features.

Target: ≥ 1,000 training sentences/s at the seed size. ``key=value`` overrides apply to every
recipe (``python bench/tagging.py --device cuda train.precision=bf16``).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import random
import statistics
import tempfile
from dataclasses import dataclass, field
from types import SimpleNamespace

import common as bench
import torch
from common import Rate, Step, median_s, progress, timed
from crf import SeedLoopCRF
from torch import nn

from rnnkit.data.batching import move
from rnnkit.data.text import resolve_data_path
from rnnkit.nn.crf import CRF
from rnnkit.nn.tagger import Tagger, TagModelConfig
from rnnkit.tasks import build_task
from rnnkit.tasks.tag import TagConfig
from rnnkit.train import Trainer

DEFAULT_RECIPES = "configs/ewt-upos.yaml,configs/uner-ewt-ner.yaml"
SEED_WORDS, SEED_TAGS, SEED_LENGTH = 10_000, 9, 30  # the seed's "realistic" size; +2 tags
SEED_EMBEDDING, SEED_HIDDEN = 100, 200  # hidden: both directions, as the tutorial counts it
SEED_LR, SEED_WEIGHT_DECAY = 0.01, 1e-4
CORPUS = 4096  # synthetic sentences, reused in turn
WARMUP_STEPS = 3
TAG_BATCHES = (32, 256)
TAG_SAMPLE = 256  # dev sentences tagged in batches
TARGET = 1_000.0  # training sentences/s at the seed size
QUOTED = "seed loop ~14 sent/s, forward vectorised ~123, Flair 0.15 ~77 (1,260 tok/s)"
TUNED = {  # flag: (value, --quick value, help)
    "seconds": (5.0, 0.3, "seed size: time per timed part"),
    "steps": (60, 3, "recipes: timed training steps"),
    "seed_sentences": (30, 3, "seed loop: timed sentences"),
    "vectorised_sentences": (120, 10, "seed, forward vectorised: timed sentences"),
    "seed_warmup": (3, 1, "seed: warm-up sentences"),
    "latency_sentences": (50, 5, "dev sentences of the median length, tagged one at a time"),
    "tag_repeats": (3, 1, "batch tagging runs, mean"),
}


def counted(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(sentences, real tokens) of a batch."""
    return batch["mask"].shape[0], int(batch["mask"].sum())


# ------------------------------------------------------------------- seed size, rnnkit
def seed_batches(words: torch.Tensor, tags: torch.Tensor, size: int) -> list[dict]:
    """The synthetic corpus ``(sentences, 30)`` cut into full batches of ``size``."""
    return [
        {"words": w, "mask": torch.ones_like(w, dtype=torch.bool), "tags": t}
        for w, t in zip(words.split(size), tags.split(size), strict=True)
        if len(w) == size
    ]


def seed_size_trainer(head: str, args: argparse.Namespace, out_dir: str) -> Trainer:
    """A seed-size Tagger with the Trainer (and so the optimizer) a tag recipe would get."""
    torch.manual_seed(args.random_seed)
    config = TagModelConfig(
        embedding_dim=SEED_EMBEDDING, chars="none", hidden_size=SEED_HIDDEN // 2, layers=1,
        dropout=0.0, word_dropout=0.0, head=head, constrain=False,
    )  # fmt: skip
    model = Tagger(SEED_WORDS, 2, [f"T{i}" for i in range(SEED_TAGS)], config, scheme=None)
    train = dataclasses.replace(TagConfig().train, device=args.device)
    stand_in = SimpleNamespace(
        model=model, default_metric="accuracy", metric_goals={"accuracy": "max"}
    )
    return Trainer(stand_in, train, out_dir, log=lambda _: None)


def crf_only_step(batch_size: int, device: torch.device) -> Step:
    """The CRF's NLL forward+backward alone, on random emissions (as from an encoder)."""
    g = torch.Generator().manual_seed(batch_size)
    crf = CRF(SEED_TAGS).to(device)
    shape = (batch_size, SEED_LENGTH, SEED_TAGS)
    emissions = torch.randn(shape, generator=g).to(device).requires_grad_(True)
    tags = torch.randint(SEED_TAGS, shape[:2], generator=g).to(device)
    mask = torch.ones(shape[:2], dtype=torch.bool, device=device)

    def step() -> tuple[int, int]:
        emissions.grad = None
        crf.zero_grad(set_to_none=True)
        loss = crf.nll(emissions, tags, mask) / mask.numel()
        loss.backward()
        float(loss.detach())
        return batch_size, mask.numel()

    return step


def decode_step(model: Tagger, batch: dict[str, torch.Tensor]) -> Step:
    """``Tagger.decode`` of one ready batch, as a timed step."""

    @torch.no_grad()
    def step() -> tuple[int, int]:
        model.decode(batch).cpu()
        return batch["words"].shape[0], batch["words"].numel()

    return step


@dataclass
class Kit:
    """Section 1's figures, per batch size."""

    optimizer: str = ""
    device: str = "cpu"
    train: dict[int, Rate] = field(default_factory=dict)  # CRF head
    softmax: dict[int, Rate] = field(default_factory=dict)  # softmax head: all but the CRF
    crf_only: dict[int, Rate] = field(default_factory=dict)  # CRF NLL forward+backward
    latency_ms: float = 0.0  # decode one sentence
    tagging: dict[int, Rate] = field(default_factory=dict)  # decode in batches


def bench_kit(words: torch.Tensor, tags: torch.Tensor, args: argparse.Namespace) -> Kit:
    """Section 1: rnnkit at the seed size."""
    out = Kit()
    with tempfile.TemporaryDirectory(prefix="bench-tagging-") as tmp:
        trainers = {head: seed_size_trainer(head, args, tmp) for head in ("crf", "softmax")}
        device = trainers["crf"].device
        out.optimizer, out.device = bench.describe_optimizer(trainers["crf"].optimizer), str(device)
        for size in args.batches:
            progress(f"seed size, rnnkit, batch {size}: {args.seconds:g} s each part")
            batches = seed_batches(words, tags, size)
            for name, into in (("crf", out.train), ("softmax", out.softmax)):
                step = bench.training_step(trainers[name], itertools.cycle(batches), counted)
                into[size] = timed(step, args.seconds, warmup=WARMUP_STEPS)
            out.crf_only[size] = timed(crf_only_step(size, device), args.seconds, warmup=3)
            progress(f"  train {out.train[size].per_second:,.0f} sent/s")
        model = trainers["crf"].model.eval()
        one = move(seed_batches(words, tags, 1)[0], device)
        out.latency_ms = median_s(decode_step(model, one), args.seconds) * 1e3
        for size in TAG_BATCHES:
            step = decode_step(model, move(seed_batches(words, tags, size)[0], device))
            out.tagging[size] = timed(step, args.seconds, warmup=1)
    return out


# ------------------------------------------------------------------------------ seed side
class SeedVectorisedCRF(SeedLoopCRF):
    """The seed's CRF with the exercise done: one log-sum-exp over all next tags per step."""

    def log_partition(self, feats: torch.Tensor) -> torch.Tensor:
        """log Z of one sentence, vectorised over next tags."""
        alpha = self._initial()  # (1, from)
        for emit in feats:
            # scores[to, from] + alpha[from], summed in log space over "from", for every "to"
            alpha = (torch.logsumexp(self.scores + alpha, dim=1) + emit).view(1, -1)
        return torch.logsumexp(alpha + self.scores[self.finish], dim=1)


class SeedTagger(nn.Module):
    """The tutorial's BiLSTM-CRF, unbatched: one sentence ``(time,)`` of word ids at a time."""

    def __init__(self, crf_class: type[SeedLoopCRF]):
        super().__init__()
        self.half = SEED_HIDDEN // 2
        self.embed = nn.Embedding(SEED_WORDS, SEED_EMBEDDING)
        self.lstm = nn.LSTM(SEED_EMBEDDING, self.half, num_layers=1, bidirectional=True)
        self.to_tags = nn.Linear(SEED_HIDDEN, SEED_TAGS + 2)
        self.crf = crf_class(CRF(SEED_TAGS))

    def features(self, words: torch.Tensor) -> torch.Tensor:
        """Tag scores ``(time, 11)``; the LSTM starts from a random state, as in the tutorial."""
        state = (torch.randn(2, 1, self.half), torch.randn(2, 1, self.half))
        hidden, _ = self.lstm(self.embed(words).view(len(words), 1, -1), state)
        return self.to_tags(hidden.view(len(words), SEED_HIDDEN))


@dataclass
class SeedSide:
    """Section 2's figures."""

    loop: Rate = field(default_factory=Rate)
    vectorised: Rate = field(default_factory=Rate)
    latency_ms: float = 0.0  # the tutorial's Viterbi, one sentence
    agreement: float = 0.0  # |log Z loop - log Z vectorised| on one sentence


def bench_seed(words: torch.Tensor, tags: torch.Tensor, args: argparse.Namespace) -> SeedSide:
    """Section 2: the seed's algorithm, per-tag loop and vectorised."""
    out = SeedSide()
    torch.manual_seed(args.random_seed)
    models = {"loop": SeedTagger(SeedLoopCRF), "vectorised": SeedTagger(SeedVectorisedCRF)}
    models["vectorised"].load_state_dict(models["loop"].state_dict())
    with torch.no_grad():
        feats = torch.randn(SEED_LENGTH, SEED_TAGS + 2)
        a, b = (float(m.crf.log_partition(feats)) for m in models.values())
    out.agreement = abs(a - b)
    if not out.agreement <= 1e-3 * max(1.0, abs(a)):
        raise AssertionError(f"vectorised forward algorithm disagrees: {a} vs {b}")
    for name, count in (("loop", args.seed_sentences), ("vectorised", args.vectorised_sentences)):
        model, rows = models[name], itertools.cycle(range(len(words)))
        optimizer = torch.optim.SGD(model.parameters(), lr=SEED_LR, weight_decay=SEED_WEIGHT_DECAY)

        def step(model: SeedTagger = model, optimizer=optimizer, rows=rows) -> tuple[int, int]:
            row = next(rows)
            model.zero_grad()
            model.crf.nll(model.features(words[row]), tags[row]).backward()
            optimizer.step()
            return 1, SEED_LENGTH

        progress(f"seed size, seed's algorithm ({name}): {count} sentences")
        setattr(out, name, timed(step, warmup=args.seed_warmup, steps=count))
    sentences = itertools.cycle(words)
    tagger = models["loop"].eval()
    out.latency_ms = median_s(
        torch.no_grad()(lambda: tagger.crf.viterbi(tagger.features(next(sentences)))), args.seconds
    ) * 1e3  # fmt: skip
    return out


# -------------------------------------------------------------------------------- recipes
@dataclass
class Recipe:
    """Section 3's figures for one recipe."""

    path: str
    note: str = ""  # why it was skipped, when it was
    model: str = ""
    sentences: int = 0
    batch: int = 0
    train: Rate = field(default_factory=Rate)
    latency_ms: float = 0.0
    latency_length: int = 0
    tagging: dict[int, Rate] = field(default_factory=dict)
    sample: int = 0
    cached: Rate | None = None  # contextual: the same steps again, features cached


def bench_recipe(
    path: str, args: argparse.Namespace, contextual: list[str] | None = None
) -> Recipe:
    """Section 3: one recipe trained and tagged (``contextual``: with these LMs)."""
    out = Recipe(path + (" + contextual" if contextual else ""))
    config = bench.load_recipe(path, "tag", [f"train.device={args.device}", *args.overrides])
    if contextual:
        config.model.contextual = contextual
    out.model, out.batch = bench.describe(config), config.train.batch_size
    missing = [n for n in (config.data.train, config.data.dev)
               if not resolve_data_path(n, args.data_dir).exists()]  # fmt: skip
    if missing:
        out.note = f"skipped: {', '.join(missing)} not found under {args.data_dir}"
        progress(f"{path}: {out.note}")
        return out
    progress(f"{path}: building the task, then {args.steps} steps")
    task = build_task("tag", config, args.data_dir)
    out.sentences = len(task.sentences("train"))
    with tempfile.TemporaryDirectory(prefix="bench-tagging-") as tmp:
        trainer = Trainer(task, config.train, tmp, log=lambda _: None)
        out.model = bench.describe(config, optimizer=trainer.optimizer)
        step = bench.training_step(trainer, bench.endless(task.train_batches), counted)
        out.train = timed(step, warmup=WARMUP_STEPS, steps=args.steps)
        if contextual:  # the same batches again: every sentence's features now cached
            again = bench.training_step(trainer, bench.endless(task.train_batches), counted)
            out.cached = timed(again, warmup=WARMUP_STEPS, steps=args.steps)
    dev = [s.tokens for s in task.sentences("dev") if s.tokens]
    median = statistics.median_low(len(s) for s in dev)
    order = sorted(range(len(dev)), key=lambda i: (abs(len(dev[i]) - median), i))
    chosen = [dev[i] for i in order[: args.latency_sentences]]  # the median length, or near it
    out.latency_length = statistics.median_low(len(s) for s in chosen)
    each = itertools.cycle(chosen)
    out.latency_ms = median_s(lambda: task.tag([next(each)]), args.seconds) * 1e3
    sample = random.Random(args.random_seed).sample(dev, min(TAG_SAMPLE, len(dev)))
    out.sample, tokens = len(sample), sum(len(s) for s in sample)
    for size in TAG_BATCHES:
        run = bench.timer(lambda b=size: task.tag(sample, batch_size=b)).timeit(args.tag_repeats)
        out.tagging[size] = Rate(len(sample), tokens, args.tag_repeats, run.median)
    return out


# ------------------------------------------------------------------------------ reporting
def ratio(ours: float, theirs: float) -> str:
    """``ours / theirs`` with one decimal, or nothing."""
    return bench.ratio(ours, theirs, ",.1f", "")


def training_table(kit: Kit, seed: SeedSide, recipes: list[Recipe]) -> list[str]:
    """Training throughput of every side."""
    loop, vec = seed.loop.per_second, seed.vectorised.per_second
    rows = [
        f"seed size, rnnkit | {size} | {rate.per_second:,.0f} | {rate.tokens_per_second:,.0f} | "
        f"**{ratio(rate.per_second, loop)}** | **{ratio(rate.per_second, vec)}**"
        for size, rate in kit.train.items()
    ]
    rows += [
        f"seed size, seed's loop | 1 | {loop:,.1f} | {seed.loop.tokens_per_second:,.0f} | 1.0× |",
        f"seed size, seed's loop, forward vectorised | 1 | {vec:,.1f} | "
        f"{seed.vectorised.tokens_per_second:,.0f} | {ratio(vec, loop)} | 1.0×",
    ]
    plain = {r.path: r for r in recipes}
    for r in recipes:
        if r.note:
            rows.append(f"`{r.path}` | | {r.note} | | |")
            continue
        rates = [("", r.train)]
        if r.cached is not None:
            rates = [(", first epoch (feature pass)", r.train), (", later epochs", r.cached)]
        base = plain.get(r.path.removesuffix(" + contextual"))
        for label, rate in rates:
            share = ""
            if r.cached is not None and base is not None and not base.note:
                share = f" ({rate.per_second / base.train.per_second:.0%} of the recipe)"
            rows.append(
                f"`{r.path}`{label} | {r.batch} | {rate.per_second:,.0f}{share} | "
                f"{rate.tokens_per_second:,.0f} | |"
            )
    head = "setting | batch | sentences/s | tokens/s | ratio over seed loop | over seed, forward "
    return bench.table(head + "vectorised", rows)


def parts_table(kit: Kit) -> list[str]:
    """Where a seed-size training step's time goes."""
    rows = []
    for size, full in kit.train.items():
        soft, crf = kit.softmax[size].per_second, kit.crf_only[size].per_second
        rows += [
            f"training step, CRF head | {size} | {full.per_second:,.0f} | 100%",
            f"training step, softmax head (all but the CRF) | {size} | {soft:,.0f} | "
            f"{full.per_second / soft:.0%}",
            f"CRF NLL forward+backward alone | {size} | {crf:,.0f} | {full.per_second / crf:.0%}",
        ]
    head = "seed size, rnnkit | batch | sentences/s | share of a training step's time"
    return bench.table(head, rows)


def tagging_table(kit: Kit, seed: SeedSide, recipes: list[Recipe]) -> list[str]:
    """Tagging latency and throughput of every side."""

    def one(setting: str, ms: float, tokens: int) -> str:
        return f"{setting} | 1 | {ms:.2f} | {1e3 / ms:,.0f} | {tokens * 1e3 / ms:,.0f}"

    rows = [one("seed size, rnnkit `Tagger.decode`", kit.latency_ms, SEED_LENGTH)]
    rows += [
        f"seed size, rnnkit `Tagger.decode` | {size} | {rate.seconds / rate.steps * 1e3:.1f} | "
        f"{rate.per_second:,.0f} | {rate.tokens_per_second:,.0f}"
        for size, rate in kit.tagging.items()
    ]
    rows.append(one("seed size, seed's Viterbi loop", seed.latency_ms, SEED_LENGTH))
    for r in (r for r in recipes if not r.note):
        setting = f"`{r.path}` `task.tag`"
        rows.append(one(f"{setting}, {r.latency_length} tokens", r.latency_ms, r.latency_length))
        rows += [
            f"{setting}, {r.sample} dev sentences | {size} | {rate.seconds * 1e3:,.0f} (all "
            f"{r.sample}) | {rate.per_second:,.0f} | {rate.tokens_per_second:,.0f}"
            for size, rate in r.tagging.items()
        ]
    return bench.table("setting | batch | ms per call (median) | sentences/s | tokens/s", rows)


def report(kit: Kit, seed: SeedSide, recipes: list[Recipe], others: float | None, args) -> str:
    """The markdown report."""
    verdicts = ", ".join(
        f"batch {size}: {rate.per_second:,.0f} sent/s, "
        f"{'met' if rate.per_second >= TARGET else '**not met**'}"
        for size, rate in kit.train.items()
    )
    machine = f"rnnkit device {kit.device} (seed side: cpu), float32, {bench.threads(args)}"
    title = "Tagging benchmark: rnnkit vs the seed's BiLSTM-CRF"
    lines = [
        *bench.header(title, args, others, machine, __doc__),
        f"- seed size: {SEED_TAGS} tags + begin/end = {SEED_TAGS + 2} (rnnkit: {SEED_TAGS} tags "
        f"with start/end score vectors), length {SEED_LENGTH}, embedding {SEED_EMBEDDING}, BiLSTM "
        f"hidden {SEED_HIDDEN} ({SEED_HIDDEN // 2} per direction), vocabulary {SEED_WORDS:,}; "
        f"synthetic corpus of {CORPUS:,} random sentences, random seed {args.random_seed}",
        f"- rnnkit at the seed size: `Tagger` (chars none, CRF head, no dropout), the Trainer's "
        f"{kit.optimizer}, clip_norm 5.0, {WARMUP_STEPS} warm-up steps then `Timer."
        f"blocked_autorange` for {args.seconds:g} s per batch size",
        f"- seed's algorithm: one sentence per update, SGD lr {SEED_LR}, weight decay "
        f"{SEED_WEIGHT_DECAY}, random initial LSTM state; {args.seed_warmup} warm-up sentences, "
        f"then {seed.loop.steps} (per-tag loop) and {seed.vectorised.steps} (forward "
        f"vectorised) timed; log Z of both forward algorithms agree to {seed.agreement:.1e}",
        f"- target ≥ {TARGET:,.0f} training sentences/s at the seed size: {verdicts}",
        f"- for scale, quoted by the issue (not measured here): {QUOTED}",
        *bench.section("Training throughput", *training_table(kit, seed, recipes)),
        *bench.section("Where a seed-size training step goes", *parts_table(kit), ""),
        "- share = the CRF-head step's sentences/s over the part's",
        *bench.section("Tagging", *tagging_table(kit, seed, recipes), ""),
        "- seed size: rnnkit decodes ready tensors in eval mode (no batch making); the seed's "
        "Viterbi includes its BiLSTM features",
    ]
    for r in recipes:
        lines.append(
            f"- `{r.path}`: {r.note}"
            if r.note
            else f"- `{r.path}`: {r.model}; {r.sentences:,} training sentences; {WARMUP_STEPS} "
            f"warm-up steps then {r.train.steps} timed ({r.train.seconds:.1f} s); tagging: one "
            f"sentence of the median length ({r.latency_length}) over {args.seconds:g} s; "
            f"batches: {r.sample} random dev sentences, mean of {args.tag_repeats} run(s)"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit status."""
    p = bench.parser(__doc__, "a handful of steps", data_dir=True, tuned=TUNED, device="cpu")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides")
    p.add_argument("--batches", default=[32, 128], type=bench.int_list, help="seed-size batches")
    p.add_argument("--recipes", default=DEFAULT_RECIPES, help="tag recipes, comma-separated")
    p.add_argument("--contextual", metavar="FWD,BWD", help="also each recipe with these char LMs")
    p.add_argument("--random-seed", type=int, default=1, help="for models and data (1)")
    args = bench.finish(p, p.parse_intermixed_args(argv))
    before = bench.cpu_ticks()
    g = torch.Generator().manual_seed(args.random_seed)
    words = torch.randint(2, SEED_WORDS, (CORPUS, SEED_LENGTH), generator=g)
    tags = torch.randint(SEED_TAGS, (CORPUS, SEED_LENGTH), generator=g)
    kit, seed = bench_kit(words, tags, args), bench_seed(words, tags, args)
    paths = [path.strip() for path in args.recipes.split(",") if path.strip()]
    recipes = [bench_recipe(path, args) for path in paths]
    if args.contextual:
        lms = [str(bench.resolve(p.strip())) for p in args.contextual.split(",")]
        recipes += [bench_recipe(path, args, lms) for path in paths]
    bench.publish(report(kit, seed, recipes, bench.others_share(before), args), args.target)
    return 0


if __name__ == "__main__":
    bench.run(main)
