"""What the benchmarks share beyond the machine header: progress lines, tiny models, versions."""

from __future__ import annotations

import argparse
import contextlib
import random
import string
import sys
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def progress(message: str) -> None:
    """A progress line on stderr, so that a report stays alone on stdout."""
    print(message, file=sys.stderr, flush=True)


def train_tiny_model(task: str, root: Path) -> Path:
    """A tiny ``task`` model trained by ``tests/tiny.py`` under ``root``; its directory."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # so that ``tests`` imports when run as bench/NAME.py
    from tests.tiny import train_tiny

    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # keep the report alone on stdout
        model = train_tiny(task, root)
    progress(f"trained a tiny {task} model in {time.perf_counter() - started:.1f} s: {model}")
    return model


def version(package: str) -> str:
    """An installed package's version, or '?'."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


RESULTS = REPO / "bench" / "RESULTS.md"


def add_publish_flags(parser: argparse.ArgumentParser) -> None:
    """``--publish`` (append the report to bench/RESULTS.md) and ``--append FILE``."""
    parser.add_argument(
        "--publish", action="store_true", help="also append the report to bench/RESULTS.md"
    )
    parser.add_argument("--append", type=Path, help="also append the report to this file")


def report_target(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Path | None:
    """Where the report goes besides stdout; a smoke run (``--quick``) is never published."""
    if args.publish and args.append is not None:
        parser.error("give --publish or --append, not both")
    if getattr(args, "quick", False) and (args.publish or args.append is not None):
        parser.error("a --quick smoke run is not published")
    return RESULTS if args.publish else args.append


# ---------------------------------------------------------------------------------- inputs
def tagger_sentences() -> list[str]:
    """Short English sentences (4-12 words) with people and places, in the words of the
    tiny NER tagger of tests/tiny.py."""
    people = [("Elena", "Annason"), ("Boris", "Carlason"), ("Anna", "Faridson"), ("Dmitri", "")]
    places = ["Paris", "Lima", "Oslo", "Quito", "Hanoi"]
    frames = [
        "the man saw {p} in {l}",
        "we went to {l} and then left",
        "{p} went to {l} yesterday",
        "a man saw {p} and {l}",
        "yesterday we saw {p} in {l} and then left to {l2}",
        "then {p} left {l}",
    ]
    out = []
    for i, frame in enumerate(frames):
        for j, (first, last) in enumerate(people):
            person = f"{first} {last}".strip()
            place, place2 = places[(i + j) % len(places)], places[(i + 2 * j + 1) % len(places)]
            out.append(frame.format(p=person, l=place, l2=place2))
    return out


def rot13_ciphertexts(count: int = 48) -> list[str]:
    """``count`` ROT13 ciphertexts of plaintexts of 16-32 symbols from A-Z and '-'."""
    words = (
        "THIS IS A SECRET MESSAGE MEET ME AT THE OLD BRIDGE AFTER DARK BRING THE MAP AND "
        "TELL NO ONE THE PLAN CHANGED WAIT FOR MY SIGNAL NORTH GATE AT NOON"
    ).split()
    upper = string.ascii_uppercase
    rot13 = str.maketrans(upper, upper[13:] + upper[:13])  # '-' stays '-'
    rng = random.Random(13)
    out: list[str] = []
    while len(out) < count:
        target = rng.randint(16, 32)
        plain = rng.choice(words)
        while len(plain) < target:
            plain += "-" + rng.choice(words)
        if len(plain) <= 32:
            out.append(plain.translate(rot13))
    return out
