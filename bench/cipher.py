"""Benchmark: the seed tutorial's one-message-at-a-time cipher loop against rnnkit's cipher task.

Both learn ROT13 over ``A``-``Z`` plus ``-`` (random 32-symbol messages) at the same model
sizes, on the CPU. The seed side re-implements the tutorial's loop (one message per Adam
step, lr 0.001); rnnkit is ``CipherTask`` + ``Trainer`` with its own defaults. Per side and
size: training messages/s (``Trainer.train_step`` for rnnkit), and wall time until dev
character accuracy reaches 0.99 from fresh weights, validation included (the seed loop checks
every ``--seed-eval-every`` messages, up to ``--seed-budget`` s; rnnkit runs ``Trainer.fit``
with short epochs). ``--crack LM`` instead measures breaking unknown Vigenère and substitution
keys (``rnnkit.crack``: LM search, classical, and end-to-end models if given).

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
SHIFT = 13
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


@dataclass
class SideResult:
    side: str
    throughput: bench.Rate  # items: messages
    target: TargetRun


def secs(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 10 else f"{seconds:.2f} s"


# ---------------------------------------------------------------------------- the seed's loop
@dataclass
class SeedNet:
    """The tutorial's three separate modules, used the way it uses them."""

    embed: nn.Embedding
    lstm: nn.LSTM
    linear: nn.Linear

    @classmethod
    def create(cls, embedding_dim: int, hidden: int) -> SeedNet:
        vocab = len(ALPHABET)
        embed = nn.Embedding(vocab, embedding_dim)
        return cls(embed, nn.LSTM(embedding_dim, hidden), nn.Linear(hidden, vocab))

    def parameters(self) -> list[nn.Parameter]:
        return [*self.embed.parameters(), *self.lstm.parameters(), *self.linear.parameters()]

    def scores(self, cipher: torch.Tensor) -> torch.Tensor:
        """``(seq_len,)`` symbol ids → ``(seq_len, vocab)`` scores, batch of one."""
        embedded = self.embed(cipher).unsqueeze(1)  # (seq_len, 1, E)
        output, _ = self.lstm(embedded)  # (seq_len, 1, H)
        return self.linear(output).squeeze(1)  # (seq_len, vocab)


def encrypt(message: str, shift: int = SHIFT) -> str:
    return "".join(ALPHABET[(ALPHABET.index(ch) + shift) % len(ALPHABET)] for ch in message)


def seed_example(rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """One fresh (ciphertext, plaintext) pair of ``(32,)`` long tensors, made the seed's way."""
    message = "".join(rng.choice(ALPHABET) for _ in range(MESSAGE_LENGTH))
    cipher = [ALPHABET.index(ch) for ch in encrypt(message)]
    plain = [ALPHABET.index(ch) for ch in message]
    return torch.tensor(cipher), torch.tensor(plain)


@torch.no_grad()
def seed_accuracy(net: SeedNet, heldout: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Character accuracy, one message at a time, softmax then most likely symbol."""
    right = total = 0
    for cipher, plain in heldout:
        probabilities = torch.softmax(net.scores(cipher), dim=1)
        predicted = probabilities.argmax(dim=1)
        right += int((predicted == plain).sum())
        total += plain.numel()
    return right / total


def seed_step(embedding_dim: int, hidden: int, seed: int) -> tuple[SeedNet, bench.Step]:
    """A fresh seed model and its training step: one new message, one update."""
    torch.manual_seed(seed)
    net = SeedNet.create(embedding_dim, hidden)
    optimizer = torch.optim.Adam(net.parameters(), lr=SEED_LR)
    loss_fn, rng = nn.CrossEntropyLoss(), random.Random(seed)

    def step() -> tuple[int, int]:
        cipher, plain = seed_example(rng)
        loss = loss_fn(net.scores(cipher), plain)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return 1, 0

    return net, step


def seed_throughput(embedding_dim: int, hidden: int, seconds: float, seed: int) -> bench.Rate:
    _, step = seed_step(embedding_dim, hidden, seed)
    return bench.timed(step, seconds, warmup=20)


def seed_time_to_target(embedding_dim: int, hidden: int, args: argparse.Namespace) -> TargetRun:
    heldout_rng = random.Random(args.seed + 1_000_003)
    heldout = [seed_example(heldout_rng) for _ in range(args.eval_messages)]
    net, step = seed_step(embedding_dim, hidden, args.seed)
    messages, accuracy, eval_seconds = 0, 0.0, 0.0
    start = time.perf_counter()
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
    """rnnkit's cipher defaults with only the sizes, device, target and epoch length changed.

    ``short_epochs`` makes epochs ``--rnnkit-epoch-messages`` long, so that the dev accuracy is
    checked often; without it they keep rnnkit's default length (for the throughput loop).
    """
    data = {"eval_messages": args.eval_messages}
    if short_epochs:
        data["train_messages"] = args.rnnkit_epoch_messages
    train = {"device": "cpu", "progress": False, "seed": args.seed, "target": TARGET}
    train["epochs"] = args.rnnkit_max_epochs
    if args.rnnkit_batch:
        train["batch_size"] = args.rnnkit_batch
    model = {"embedding_dim": embedding_dim, "hidden_size": hidden}
    return from_dict(CipherConfig, {"model": model, "data": data, "train": train})


def rnnkit_throughput(config: CipherConfig, seconds: float, out_dir: Path) -> bench.Rate:
    """Time the Trainer's own step over ``task.train_batches`` (batch making included)."""
    task = build_task("cipher", config)
    trainer = Trainer(task, config.train, out_dir, log=lambda _: None)
    step = bench.training_step(
        trainer, bench.endless(task.train_batches), lambda b: (len(b["source"]), 0)
    )
    return bench.timed(step, seconds, warmup=2)


def rnnkit_time_to_target(config: CipherConfig, out_dir: Path) -> TargetRun:
    task = build_task("cipher", config)
    trainer = Trainer(task, config.train, out_dir, log=lambda msg: progress(f"  rnnkit: {msg}"))
    start = time.perf_counter()
    trainer.fit()
    fit_seconds = time.perf_counter() - start
    history = trainer.state.history  # what metrics.jsonl holds
    per_epoch = config.data.train_messages
    total_messages = len(history) * per_epoch
    detail = (
        f"elapsed_s counts validation, checkpoint writes and plots; fit() took "
        f"{secs(fit_seconds)} for {total_messages:,} messages "
        f"({total_messages / fit_seconds:,.0f} msg/s end to end)"
    )
    last = history[-1]
    accuracy = last["char_accuracy"]
    for record in history:
        if record["char_accuracy"] >= TARGET:
            messages = record["epoch"] * per_epoch
            return TargetRun(True, record["elapsed_s"], messages, accuracy, "", detail)
    limit = f"{config.train.epochs} epochs"
    return TargetRun(False, last["elapsed_s"], total_messages, accuracy, limit, detail)


# ----------------------------------------------------------------------------- reporting


def format_target(run: TargetRun) -> str:
    if run.reached:
        return f"{secs(run.seconds)} ({run.messages:,} msgs)"
    return (
        f"not reached within {run.limit} ({secs(run.seconds)}, {run.messages:,} msgs; "
        f"accuracy {run.accuracy:.4f})"
    )


def training_seconds(result: SideResult) -> float:
    """Messages needed for the target (or consumed without it) over the measured rate."""
    rate = result.throughput.per_second
    return result.target.messages / rate if rate else float("nan")


def flops_per_message(embedding_dim: int, hidden: int, length: int = 32, vocab: int = 28) -> float:
    """Training FLOPs for one message: LSTM (4 gates) and output layer, forward x 3."""
    per_symbol = 2 * 4 * hidden * (embedding_dim + hidden) + 2 * hidden * vocab
    return 3.0 * length * per_symbol


def size_section(
    embedding_dim: int, hidden: int, seed: SideResult, kit: SideResult, peak: float
) -> str:
    """The table and notes for one model size."""
    rows = [
        f"#### embedding {embedding_dim}, hidden {hidden}",
        "",
        "| side | messages/s | time to 99% | final acc |",
        "|---|---:|---|---:|",
    ]
    for result in (seed, kit):
        rows.append(
            f"| {result.side} | {result.throughput.per_second:,.0f} "
            f"| {format_target(result.target)} | {result.target.accuracy:.4f} |"
        )
    ratio = (
        kit.throughput.per_second / seed.throughput.per_second
        if seed.throughput.per_second
        else float("nan")
    )
    flops = flops_per_message(embedding_dim, hidden)
    seed_gflops = seed.throughput.per_second * flops / 1e9
    kit_gflops = kit.throughput.per_second * flops / 1e9
    rows += [
        "",
        f"- throughput ratio rnnkit/seed: **{ratio:.1f}x**",
        f"- compute: {flops / 1e6:.2f} MFLOP per training message; seed {seed_gflops:.2f} GFLOP/s, "
        f"rnnkit {kit_gflops:.2f} GFLOP/s, of a {peak:.0f} GFLOP/s matmul peak "
        f"(the ratio can never exceed peak / seed = {peak / seed_gflops:.0f}x on this machine)",
        f"- seed: time to target includes validation ({seed.target.detail})",
        f"- rnnkit: {kit.target.detail}",
        f"- training alone to the target, at the measured rates: seed "
        f"{training_seconds(seed):.2f} s, rnnkit {training_seconds(kit):.2f} s",
        f"- throughput samples: seed {seed.throughput.items:,} msgs in "
        f"{seed.throughput.seconds:.1f} s, rnnkit {kit.throughput.items:,} msgs in "
        f"{kit.throughput.seconds:.1f} s",
        "",
    ]
    return "\n".join(rows)


def header(args: argparse.Namespace, config: CipherConfig, others: float | None) -> str:
    t, machine = config.train, f"device cpu, {bench.threads(args)}"
    return "\n".join(
        [
            *bench.header("Cipher benchmark: seed loop vs rnnkit", args, others, machine),
            f"- seed side: batch 1, Adam lr {SEED_LR}, no clipping; validates every "
            f"{args.seed_eval_every} messages on {args.eval_messages} held-out messages, "
            f"gives up after {args.seed_budget:g} s",
            f"- rnnkit side: its defaults (batch {t.batch_size}"
            f"{' from --rnnkit-batch' if args.rnnkit_batch else ''}), {t.optimizer} lr {t.lr}, "
            f"clip_norm {t.clip_norm}; epochs of {config.data.train_messages} messages, "
            f"validated on {config.data.eval_messages} dev messages, at most {t.epochs} epochs",
            f"- throughput: {args.throughput_seconds:g} s of training per side, no validation "
            f"(rnnkit's loop keeps its default epochs of {CipherConfig().data.train_messages:,} "
            "messages)",
            "",
        ]
    )


# ------------------------------------------------------------------- cracking unknown keys
CRACK_LENGTHS = {"vigenere": [64, 128, 256], "substitution": [64, 128, 256, 512, 1024]}


def crack_messages(text: str, length: int, count: int, seed: int) -> list[str]:
    """``count`` windows of ``length`` characters of ``text``, each starting at a word."""
    rng = random.Random(f"{seed}-{length}")
    spaced = " ".join(text.split())
    out = []
    while len(out) < count:
        start = spaced.find(" ", rng.randrange(len(spaced) - 2 * length)) + 1
        out.append(spaced[start : start + length])
    return out


@dataclass
class CrackTally(bench.Rate):
    """One way on one set of messages: messages (items), letters seen (tokens), letters right
    and seconds."""

    right: int = 0

    def add(self, guess: str, truth: str, seconds: float) -> None:
        """``guess`` is aligned with ``truth`` character for character."""
        from rnnkit.data.ciphers import Letters

        places = Letters(truth).positions.tolist()
        self.right += sum(guess[p].lower() == truth[p].lower() for p in places)
        self.tokens += len(places)
        self.items += 1
        self.seconds += seconds

    @property
    def accuracy(self) -> float:
        return self.right / max(1, self.tokens)


def crack_ways(args: argparse.Namespace, cipher: str):
    """The ways to break ``cipher``: name → function(ciphertexts) → plaintexts."""
    from rnnkit.crack import CharScorer, crack
    from rnnkit.data.ciphers import SEED_ALPHABET, Letters, normalise
    from rnnkit.tasks import load_task

    scorer = CharScorer(load_task(args.crack))
    ways = {
        "LM search": lambda texts: [crack(t, cipher, scorer).plaintext for t in texts],
        "classical": lambda texts: [crack(t, cipher, None, "classical").plaintext for t in texts],
    }
    model_dir = args.vigenere_model if cipher == "vigenere" else args.substitution_model
    if model_dir:
        model = load_task(model_dir)

        def end_to_end(texts: list[str]) -> list[str]:
            # The model's alphabet is upper-case letters and one separator; separators pass
            # through a classical cipher, so the letters it reads are the message's letters,
            # in order. Its answer at those places goes back into the message.
            clean = [normalise(t, SEED_ALPHABET, "-", collapse=True) for t in texts]
            out = []
            for text, seen, result in zip(texts, clean, model.predict(clean), strict=True):
                places = Letters(text).positions.tolist()
                read = [g for g, c in zip(result["plaintext"], seen, strict=True) if c != "-"]
                if len(read) != len(places):  # a letter whose upper case is two ("ß")
                    read = ["?"] * len(places)
                chars = list(text)
                for place, letter in zip(places, read, strict=True):
                    chars[place] = letter
                out.append("".join(chars))
            return out

        ways["end-to-end"] = end_to_end
    return ways


def crack_cells(args, cipher: str, lengths, key_lengths) -> dict:
    """Tallies per (way, message length, key length) on the same enciphered messages."""
    from rnnkit.data.ciphers import encipher, key_text, random_key

    text = Path(args.crack_text).read_text(encoding="utf-8")
    ways = crack_ways(args, cipher)
    tallies: dict = {}
    generator = torch.Generator().manual_seed(args.seed)
    for length in lengths:
        for key_length in key_lengths:
            plain = crack_messages(text, length, args.crack_messages, args.seed + key_length)
            keys = [key_text(cipher, random_key(cipher, generator, key_length)) for _ in plain]
            secret = [encipher(m, cipher, key) for m, key in zip(plain, keys, strict=True)]
            for name, way in ways.items():
                started = time.perf_counter()
                guesses = way(secret)
                seconds = (time.perf_counter() - started) / len(secret)
                tally = tallies.setdefault((name, length, key_length), CrackTally())
                for guess, truth in zip(guesses, plain, strict=True):
                    tally.add(guess, truth, seconds)
            progress(
                f"{cipher} {length} chars, key {key_length}: "
                + ", ".join(f"{n} {tallies[(n, length, key_length)].accuracy:.3f}" for n in ways)
            )
    return tallies


def plot_crack_curve(tallies: dict, ways: list[str], lengths, path: Path) -> None:
    """Substitution symbol error against message length, one line per way."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for way in ways:
        errors = [100 * (1 - tallies[(way, n, 26)].accuracy) for n in lengths]
        ax.plot(lengths, errors, marker="o", label=way)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(lengths), [str(n) for n in lengths])
    ax.set_xlabel("message length (characters)")
    ax.set_ylabel("symbol error (%)")
    ax.set_title("simple substitution, unknown key")
    ax.axhline(5, color="grey", ls=":", lw=1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def crack_report(args: argparse.Namespace) -> str:
    """Vigenère by key length x message length; substitution by message length; speed."""
    ways_v = ["LM search", "classical"] + (["end-to-end"] if args.vigenere_model else [])
    ways_s = ["LM search", "classical"] + (["end-to-end"] if args.substitution_model else [])
    before = bench.cpu_ticks()
    vig = crack_cells(args, "vigenere", args.vigenere_lengths, range(1, 9))
    sub = crack_cells(args, "substitution", args.substitution_lengths, [26])
    if args.crack_plot:
        plot_crack_curve(sub, ways_s, args.substitution_lengths, args.crack_plot)
    machine = f"device cpu, {bench.threads(args)}"
    lines = [
        *bench.header("Cracking unknown keys", args, bench.others_share(before), machine),
        f"- messages: {args.crack_messages} windows of `{args.crack_text}` per cell, a fresh"
        f" random key each. LM: `{args.crack}`."
        + (f" End-to-end Vigenère: `{args.vigenere_model}`." if args.vigenere_model else "")
        + (f" End-to-end substitution: `{args.substitution_model}`." if args.substitution_model
           else "")
        + " Accuracy counts letters only (everything else passes through).",
        ""
    ]  # fmt: skip
    vl = args.vigenere_lengths
    keys = {str(k): [k] for k in range(1, 9)} | {"**all**": range(1, 9)}
    vig_rows = [
        [label, *(f"{merged(vig, w, [n], ks).accuracy:.2%}" for n in vl for w in ways_v)]
        for label, ks in keys.items()
    ]
    sub_rows = [
        [n, *(f"{1 - sub[(w, n, 26)].accuracy:.2%}" for w in ways_s)]
        for n in args.substitution_lengths
    ]
    speeds = {
        "Vigenère (all lengths)": (vig, ways_v, vl, range(1, 9)),
        "substitution (all lengths)": (sub, ways_s, args.substitution_lengths, [26]),
    }
    speed_rows = [
        [name, *(f"{merged(t, w, ns, ks).per_second:.2f}" if w in ways else "–" for w in ways_s)]
        for name, (t, ways, ns, ks) in speeds.items()
    ]
    lines += [
        "#### Vigenère, key length 1-8: letter accuracy",
        "",
        *bench.table(["key length", *(f"{w} {n}" for n in vl for w in ways_v)], vig_rows),
        "",
        "#### Simple substitution (26 letters): symbol error",
        "",
        *bench.table(["message length", *ways_s], sub_rows, left=0),
        "",
        "#### Messages cracked per second",
        "",
        *bench.table(["cipher", *ways_s], speed_rows),
    ]
    return "\n".join(lines) + "\n"


def merged(tallies: dict, way: str, lengths, key_lengths) -> CrackTally:
    """One way's tallies over some message and key lengths, summed."""
    parts = [tallies[(way, n, k)] for n in lengths for k in key_lengths]
    total = CrackTally(sum(t.items for t in parts), sum(t.tokens for t in parts))
    total.seconds, total.right = sum(t.seconds for t in parts), sum(t.right for t in parts)
    return total


# ------------------------------------------------------------------------------------ main
def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        try:
            embedding_dim, hidden = (int(n) for n in part.lower().split("x"))
        except ValueError:
            raise SystemExit(f"bad size {part!r} in --sizes (expected EMBEDDINGxHIDDEN)") from None
        sizes.append((embedding_dim, hidden))
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = CipherConfig().model
    parser = bench.parser(__doc__, "tiny budgets, ~15 s", tuned=TUNED)
    parser.add_argument("--embedding-dim", type=int, help=f"default {defaults.embedding_dim}")
    parser.add_argument("--hidden", type=int, help=f"default {defaults.hidden_size}")
    parser.add_argument("--sizes", help="several EMBEDDINGxHIDDEN pairs, e.g. 32x64,5x10")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rnnkit-batch", type=int, help="rnnkit: batch size (default: its own)")
    crack = parser.add_argument_group("cracking unknown keys (instead of the ROT13 race)")
    crack.add_argument("--crack", metavar="LM_DIR", help="the character LM that guides the search")
    crack.add_argument("--crack-text", help="held-out English text the messages come from")
    crack.add_argument("--crack-messages", type=int, default=10, help="messages per cell (10)")
    crack.add_argument("--crack-plot", type=Path, help="draw the substitution curve here (PNG)")
    crack.add_argument("--vigenere-model", help="an end-to-end Vigenère cipher model")
    crack.add_argument("--substitution-model", help="an end-to-end substitution cipher model")
    for cipher, lengths in CRACK_LENGTHS.items():
        shown = ",".join(map(str, lengths))
        text = f"message lengths of {cipher} ({shown})"
        crack.add_argument(f"--{cipher}-lengths", default=lengths, type=bench.int_list, help=text)
    args = bench.finish(parser, parser.parse_args(argv))
    if args.crack and not args.crack_text:
        parser.error("--crack needs --crack-text (e.g. DATA/wikitext-2/test.txt)")
    if args.sizes and (args.embedding_dim or args.hidden):
        parser.error("give either --sizes or --embedding-dim/--hidden, not both")
    if args.sizes:
        args.size_list = parse_sizes(args.sizes)
    else:
        args.size_list = [
            (args.embedding_dim or defaults.embedding_dim, args.hidden or defaults.hidden_size)
        ]
    return args


def bench_size(embedding_dim: int, hidden: int, args: argparse.Namespace) -> str:
    progress(f"== embedding {embedding_dim}, hidden {hidden}")
    progress("seed: throughput")
    seed_speed = seed_throughput(embedding_dim, hidden, args.throughput_seconds, args.seed)
    progress(f"  {seed_speed.per_second:.0f} msg/s")
    progress("seed: time to target")
    seed_run = seed_time_to_target(embedding_dim, hidden, args)
    config = rnnkit_config(embedding_dim, hidden, args)
    speed_config = rnnkit_config(embedding_dim, hidden, args, short_epochs=False)
    with tempfile.TemporaryDirectory(prefix="bench-cipher-") as tmp:
        progress("rnnkit: throughput")
        kit_speed = rnnkit_throughput(speed_config, args.throughput_seconds, Path(tmp) / "speed")
        progress(f"  {kit_speed.per_second:.0f} msg/s")
        progress("rnnkit: time to target (Trainer.fit)")
        kit_run = rnnkit_time_to_target(config, Path(tmp) / "fit")
    return size_section(
        embedding_dim,
        hidden,
        SideResult("seed (batch 1)", seed_speed, seed_run),
        SideResult(f"rnnkit (batch {config.train.batch_size})", kit_speed, kit_run),
        args.peak,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.crack:
        bench.publish(crack_report(args), args.target)
        return 0
    args.peak = bench.matmul_rate(2048, 2048, 2048, 0.5 if args.quick else 2.0, torch.device("cpu"))
    progress(f"matmul peak {args.peak:.0f} GFLOP/s")
    before = bench.cpu_ticks()
    sections = [bench_size(embedding_dim, hidden, args) for embedding_dim, hidden in args.size_list]
    others = bench.others_share(before)
    config = rnnkit_config(*args.size_list[0], args)
    bench.publish(header(args, config, others) + "\n" + "\n".join(sections), args.target)
    return 0


if __name__ == "__main__":
    bench.run(main)
