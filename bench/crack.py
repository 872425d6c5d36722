"""Benchmark: breaking unknown Vigenère and simple-substitution keys (``rnnkit.crack``): the LM
search guided by a character LM, the classical attack, and end-to-end cipher models if given.

Per message length (and Vigenère key length 1-8) ``--messages`` windows of held-out English
text, each under a fresh random key; every way answers the same ciphertexts. Reported: letter
accuracy (Vigenère), symbol error (substitution) and messages cracked per second. With
``--ewt``, the LM search alone on messy web text as well: windows of consecutive sentences of a
UD treebank's ``# text =`` lines (URLs, numbers and casing as written), each under a fresh random
substitution key, with the confidence each answer carries (calibrated on ``--dev``, the LM's
own dev text, never on the windows).
"""

from __future__ import annotations

import argparse
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import common as bench
import conllu
import torch
from common import progress

LENGTHS = {"vigenere": [64, 128, 256], "substitution": [64, 128, 256, 512, 1024]}
EWT_LENGTHS = [128, 256, 512]
FAILED = 0.20  # symbol error above which an answer counts as failed
KEYS = {"vigenere": range(1, 9), "substitution": [26]}


def windows(text: str, length: int, count: int, seed: str) -> list[str]:
    """``count`` windows of ``length`` characters of ``text``, each starting at a word."""
    rng, spaced = random.Random(seed), " ".join(text.split())
    out = []
    while len(out) < count:
        start = spaced.find(" ", rng.randrange(len(spaced) - 2 * length)) + 1
        out.append(spaced[start : start + length])
    return out


@dataclass
class Tally(bench.Rate):
    """One way on some messages: messages (items), letters seen (tokens), letters right and
    seconds."""

    right: int = 0

    def add(self, guess: str, truth: str, seconds: float) -> None:
        """``guess`` is aligned with ``truth`` character for character."""
        from rnnkit.data.ciphers import Letters

        places = Letters(truth).positions.tolist()
        self.right += sum(guess[p].lower() == truth[p].lower() for p in places)
        self.tokens, self.items = self.tokens + len(places), self.items + 1
        self.seconds += seconds

    @property
    def accuracy(self) -> float:
        """Letters right over letters seen."""
        return self.right / max(1, self.tokens)


def end_to_end(model_dir: str) -> Callable[[list[str]], list[str]]:
    """An end-to-end cipher model as a way: it reads the messages' letters in upper case with
    one separator (separators pass through a classical cipher), and its answer at those
    places goes back into the message."""
    from rnnkit.data.ciphers import SEED_ALPHABET, Letters, normalise
    from rnnkit.tasks import load_task

    model = load_task(model_dir)

    def way(texts: list[str]) -> list[str]:
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

    return way


def treebank_windows(path: Path, length: int, count: int, seed: str) -> list[str]:
    """``count`` windows of ``length`` characters of a CoNLL-U file's sentence texts (its
    ``# text =`` lines, consecutive sentences joined by a space), each starting at a sentence
    chosen at random, no two at the same one."""
    with path.open(encoding="utf-8") as lines:
        sentences = [s.metadata["text"] for s in conllu.parse_incr(lines) if "text" in s.metadata]
    joined = " ".join(sentences)
    starts = itertools.accumulate((len(s) + 1 for s in sentences[:-1]), initial=0)
    usable = [s for s in starts if s + length <= len(joined)]
    if len(usable) < count:
        raise SystemExit(f"{path}: too little text for {count} windows of {length} characters")
    return [joined[s : s + length] for s in random.Random(seed).sample(usable, count)]


@dataclass
class Answer:
    """One web-text window cracked: its symbol error and the confidence the answer carried."""

    error: float
    confidence: float
    low: bool
    plaintext: str


def web_text(args: argparse.Namespace, scorer) -> dict[int, list[Answer]]:
    """The LM search on ``--ewt`` windows of each ``--ewt-lengths`` length under fresh random
    substitution keys (seeded): every answer, by length."""
    from rnnkit.crack import crack, letter_accuracy
    from rnnkit.data.ciphers import encipher, key_text, random_key

    generator = torch.Generator().manual_seed(args.seed)
    found: dict[int, list[Answer]] = {}
    for length in args.ewt_lengths:
        for plain in treebank_windows(args.ewt, length, args.ewt_windows, f"{args.seed}-{length}"):
            key = key_text("substitution", random_key("substitution", generator, 26))
            result = crack(encipher(plain, "substitution", key), "substitution", scorer)
            assert result.confidence is not None  # the search always judges its answer
            error = 1 - letter_accuracy(result.plaintext, plain)
            confidence, low = result.confidence.value, result.confidence.low
            answer = Answer(error, confidence, low, result.plaintext)
            found.setdefault(length, []).append(answer)
            progress(f"web text {length} chars: error {error:.1%}, confidence {confidence:.2f}"
                     f"{' LOW' if low else ''}")  # fmt: skip
    return found


def web_text_report(found: dict[int, list[Answer]]) -> list[str]:
    """The web-text table: mean error, the worst window, failures and how many were flagged."""
    rows = []
    for length, answers in sorted(found.items()):
        worst = max(answers, key=lambda a: a.error)
        failed = [a for a in answers if a.error > FAILED]
        rows.append([
            length,
            len(answers),
            f"{sum(a.error for a in answers) / len(answers):.2%}",
            f"{worst.error:.1%} (confidence {worst.confidence:.2f}{', low' if worst.low else ''})",
            f"{sum(a.error > 0.05 for a in answers)}",
            f"{sum(a.low for a in failed)} of {len(failed)}",
            f"{sum(a.low for a in answers if a.error <= FAILED)}",
        ])  # fmt: skip
    head = ["window length", "windows", "mean symbol error", "worst window", "windows > 5%",
            f"> {FAILED:.0%} flagged low", f"≤ {FAILED:.0%} flagged low"]  # fmt: skip
    return bench.table(head, rows, left=0)


def cells(args: argparse.Namespace, cipher: str) -> tuple[list[str], dict]:
    """The ways' names, and their tallies per (way, message length, key length), every way on
    the same enciphered messages."""
    from rnnkit.crack import crack
    from rnnkit.data.ciphers import encipher, key_text, random_key

    scorer = args.scorer
    ways = {
        "LM search": lambda texts: [crack(t, cipher, scorer).plaintext for t in texts],
        "classical": lambda texts: [crack(t, cipher, None, "classical").plaintext for t in texts],
    }
    if model_dir := getattr(args, f"{cipher}_model"):
        ways["end-to-end"] = end_to_end(model_dir)
    text, tallies = Path(args.text).read_text(encoding="utf-8"), {}
    generator = torch.Generator().manual_seed(args.seed)
    for length in getattr(args, f"{cipher}_lengths"):
        for key_length in KEYS[cipher]:
            plain = windows(text, length, args.messages, f"{args.seed + key_length}-{length}")
            keys = [key_text(cipher, random_key(cipher, generator, key_length)) for _ in plain]
            secret = [encipher(m, cipher, key) for m, key in zip(plain, keys, strict=True)]
            for name, way in ways.items():
                started = time.perf_counter()  # one pass of seconds per message: no Timer
                guesses = way(secret)
                seconds = (time.perf_counter() - started) / len(secret)
                tally = tallies.setdefault((name, length, key_length), Tally())
                for guess, truth in zip(guesses, plain, strict=True):
                    tally.add(guess, truth, seconds)
            shown = ", ".join(f"{n} {tallies[(n, length, key_length)].accuracy:.3f}" for n in ways)
            progress(f"{cipher} {length} chars, key {key_length}: {shown}")
    return list(ways), tallies


def merged(tallies: dict, way: str, lengths: list[int], key_lengths: object) -> Tally:
    """One way's tallies over some message and key lengths, summed."""
    parts = [tallies[(way, n, k)] for n in lengths for k in key_lengths]
    fields = ("items", "tokens", "steps", "seconds", "right")
    return Tally(*(sum(getattr(t, f) for t in parts) for f in fields))


def plot(tallies: dict, ways: list[str], lengths: list[int], path: Path) -> None:
    """Substitution symbol error against message length, one line per way."""
    from rnnkit.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for way in ways:
        errors = [100 * (1 - tallies[(way, n, 26)].accuracy) for n in lengths]
        ax.plot(lengths, errors, marker="o", label=way)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(lengths), [str(n) for n in lengths])
    ax.set(xlabel="message length (characters)", ylabel="symbol error (%)")
    ax.set_title("simple substitution, unknown key")
    ax.axhline(5, color="grey", ls=":", lw=1)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def report(args: argparse.Namespace) -> str:
    """The web-text table with ``--ewt``; with ``--text``, Vigenère by key length x message
    length, substitution by message length, and speed."""
    from rnnkit.crack import CharScorer
    from rnnkit.tasks import load_task

    before = bench.cpu_ticks()
    args.scorer = CharScorer(load_task(args.lm))
    web = web_text_section(args) if args.ewt else []
    clean = clean_text_section(args) if args.text else []
    machine = f"device cpu, {bench.threads(args)}"
    head = bench.header("Cracking unknown keys", args, bench.others_share(before), machine)
    return "\n".join([*head, f"- LM: `{args.lm}`.", *web, *clean]) + "\n"


def web_text_section(args: argparse.Namespace) -> list[str]:
    """Calibrate on ``--dev`` (if given), crack the ``--ewt`` windows, and report them."""
    calibrated = "the defaults of `rnnkit.crack.Calibration`"
    if args.dev:
        c = args.scorer.calibrate(Path(args.dev).read_text(encoding="utf-8"))
        calibrated = (
            f"`{args.dev}` (32 windows of 256 characters): excess {c.excess:.3f} nats/char, "
            f"spread {c.spread:.2f}, tolerance {c.tolerance:g}"
        )
        progress(f"calibrated: {c}")
    table = web_text_report(web_text(args, args.scorer))
    return [
        *bench.section(f"Web text: UD EWT windows, simple substitution, LM search (`{args.ewt}`)"),
        f"- {args.ewt_windows} windows per length, consecutive sentences as written (URLs, "
        f"numbers, casing), a fresh random key each (seed {args.seed}). Symbol error counts "
        f"letters. Confidence calibrated on {calibrated}.",
        "",
        *table,
    ]


def clean_text_section(args: argparse.Namespace) -> list[str]:
    """Every way on ``--text`` windows: Vigenère, substitution, speed."""
    ways_v, vig = cells(args, "vigenere")
    ways_s, sub = cells(args, "substitution")
    if args.plot:
        plot(sub, ways_s, args.substitution_lengths, args.plot)
    vl, keys = args.vigenere_lengths, KEYS["vigenere"]
    given = {"Vigenère": args.vigenere_model, "substitution": args.substitution_model}
    models = "".join(f" End-to-end {name}: `{path}`." for name, path in given.items() if path)
    by_key = {str(k): [k] for k in keys} | {"**all**": keys}
    speeds = {
        "Vigenère (all lengths)": (vig, ways_v, vl, keys),
        "substitution (all lengths)": (sub, ways_s, args.substitution_lengths, [26]),
    }
    return [
        "",
        f"- messages: {args.messages} windows of `{args.text}` per cell, a fresh random key "
        f"each.{models} Accuracy counts letters only (everything else passes through).",
        *bench.section("Vigenère, key length 1-8: letter accuracy"),
        *bench.table(["key length", *(f"{w} {n}" for n in vl for w in ways_v)], (
            [label, *(f"{merged(vig, w, [n], ks).accuracy:.2%}" for n in vl for w in ways_v)]
            for label, ks in by_key.items())),
        *bench.section("Simple substitution (26 letters): symbol error"),
        *bench.table(["message length", *ways_s], (
            [n, *(f"{1 - sub[(w, n, 26)].accuracy:.2%}" for w in ways_s)]
            for n in args.substitution_lengths), left=0),
        *bench.section("Messages cracked per second"),
        *bench.table(["cipher", *ways_s], (
            [name, *(f"{merged(t, w, ns, ks).per_second:.2f}" if w in ws else "–" for w in ways_s)]
            for name, (t, ws, ns, ks) in speeds.items())),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit status."""
    p = bench.parser(__doc__, "as given: shrink --messages and the lengths yourself")
    p.add_argument("lm", metavar="LM_DIR", help="the character LM that guides the search")
    p.add_argument("--text", help="held-out English text the messages come from")
    p.add_argument("--ewt", type=Path, help="a CoNLL-U file whose sentence texts give web text")
    p.add_argument("--ewt-lengths", default=EWT_LENGTHS, type=bench.int_list, help="128,256,512")
    p.add_argument("--ewt-windows", type=int, default=20, help="windows per length (20)")
    p.add_argument("--dev", help="the LM's dev text, to calibrate the confidence on")
    p.add_argument("--messages", type=int, default=10, help="messages per cell (10)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--plot", type=Path, help="draw the substitution curve here (PNG)")
    p.add_argument("--vigenere-model", help="an end-to-end Vigenère cipher model")
    p.add_argument("--substitution-model", help="an end-to-end substitution cipher model")
    for cipher, lengths in LENGTHS.items():
        shown = ",".join(map(str, lengths))
        p.add_argument(f"--{cipher}-lengths", default=lengths, type=bench.int_list, help=shown)
    args = bench.finish(p, p.parse_args(argv))
    if not args.text and not args.ewt:
        p.error("give --text, --ewt or both")
    bench.publish(report(args), args.target)
    return 0


if __name__ == "__main__":
    bench.run(main)
