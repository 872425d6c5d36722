"""What every benchmark reports about the machine it ran on, and how busy that machine was."""

from __future__ import annotations

import platform
import sys
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_ticks() -> tuple[int, int, int] | None:
    """(all ticks, busy ticks of the machine, ticks of this process) from /proc, or None."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in first[1:9])
        after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        own = int(after_name[11]) + int(after_name[12])  # utime + stime
    except (OSError, ValueError, IndexError):
        return None
    busy = user + nice + system + irq + softirq + steal
    return busy + idle + iowait, busy, own


def others_share(before: tuple[int, int, int] | None) -> float | None:
    """Share of the whole CPU that other processes used since ``before``."""
    after = cpu_ticks()
    if before is None or after is None or after[0] <= before[0]:
        return None
    total, busy, own = (a - b for a, b in zip(after, before, strict=True))
    return max(0.0, busy - own) / total


def contention(others: float | None, busy_share: float) -> tuple[str, list[str]]:
    """The report's line on how busy the machine was, and a warning line when too busy."""
    if others is None:
        return "other processes' CPU use during the run: unknown", []
    line = f"other processes used {others:.0%} of the CPU during the run"
    if others <= busy_share:
        return line, []
    return line, ["- **warning**: the CPU was shared with other work; these timings are unreliable"]


def publish(report: str, append: Path | None) -> None:
    """Print a report, and append it to ``append`` (bench/RESULTS.md) when one is given."""
    print(report)
    if append is not None:
        append.parent.mkdir(parents=True, exist_ok=True)
        with append.open("a", encoding="utf-8") as handle:
            handle.write(report + "\n")
        print(f"appended to {append}", file=sys.stderr)
