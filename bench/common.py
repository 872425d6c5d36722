"""What the benchmarks share beyond the machine header: progress lines, tiny models, versions."""

from __future__ import annotations

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
