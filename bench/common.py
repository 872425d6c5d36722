"""What the benchmarks share beyond the machine header: progress lines, tiny models, versions."""

from __future__ import annotations

import argparse
import contextlib
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
