"""Benchmark: training on a corpus larger than memory against training in memory.

A corpus of ``--gigabytes`` (2 by default) is made on the fly from WikiText-2's training lines,
shuffled afresh for each copy, in a scratch folder under ``TMPDIR``, deleted afterwards
(never committed). For the character LM (``configs/english-char-lm.yaml``), the word LM
(``configs/wikitext2-word.yaml``) and skip-gram (``configs/wikitext2-skipgram.yaml``), each
in a process of its own so that each peak resident memory is its own:

- **prepare**: the big text into token ids on disk (:mod:`rnnkit.data.corpus`): seconds, MB/s;
- **train, big**: ``--steps`` of the Trainer's own step on batches read from that cache;
- **train, in memory**: the same steps on WikiText-2 held in memory (the language models'
  streams as one tensor, as before prepared corpora; skip-gram's one-segment plan kept);
  the two trainings alternate ``--repeats`` times, since skip-gram's step rate here varies by a
  quarter from run to run.

Reported: peak RSS of every process (``ru_maxrss``), loss terms (tokens, or skip-gram pairs)
per second after ``--warmup`` steps, and the ratio big/in memory (1.00× = no cost for the
disk). The cores are the training's alone: run nothing beside it.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common as bench
import torch
from common import progress, resolve

from rnnkit.tasks import task_class
from rnnkit.train import Trainer

WORKLOADS = {  # name: (recipe, its task, what a loss term is)
    "char LM": ("configs/english-char-lm.yaml", "lm", "tokens"),
    "word LM": ("configs/wikitext2-word.yaml", "lm", "tokens"),
    "skip-gram": ("configs/wikitext2-skipgram.yaml", "embed", "pairs"),
}
TUNED = {  # flag: (value, --quick value, help)
    "gigabytes": (2.0, 0.02, "size of the generated corpus, GB"),
    "lm_steps": (100, 4, "timed steps of each language model"),
    "embed_steps": (2500, 10, "timed skip-gram steps"),
    "repeats": (2, 1, "runs of each path, alternating (the table shows their mean)"),
    "warmup": (10, 1, "untimed steps first"),
}


# ------------------------------------------------------------------------ the child
def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this process: prepare, or train from the cache or in memory."""
    torch.manual_seed(0)
    config = bench.load_recipe(spec["recipe"], spec["task"], spec["overrides"])
    data_dir, kind = Path(spec["data_dir"]), task_class(spec["task"])
    if spec["mode"] == "prepare":
        start = time.perf_counter()
        prepared = kind.prepare_training_file(config, data_dir)  # type: ignore[attr-defined]
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "tokens": prepared.tokens, "rss_kib": peak_kib()}
    task = kind.build(config, data_dir)
    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as out:
        trainer = Trainer(task, config.train, out, log=lambda _: None)
        read = in_memory if spec["mode"] == "memory" else lambda batches: batches
        batches = bench.endless(lambda epoch: read(task.train_batches(epoch)))
        step = bench.training_step(trainer, batches, lambda b: (b["target"].numel(), 0))
        rate = bench.timed(step, warmup=spec["warmup"], steps=spec["steps"])  # Timer.timeit
    return {"terms_per_s": rate.per_second, "rss_kib": peak_kib()}


def in_memory(batches: Any) -> Any:
    """An epoch's batches from memory: a language model's streams read whole into one tensor
    first (its windows then cut from it); skip-gram's single segment is planned in memory
    already."""
    rows = getattr(batches, "rows", None)
    if rows is not None:
        whole = rows.window(0, rows.shape[1])
        rows.window = lambda start, stop: whole[:, start:stop]
    return batches


def peak_kib() -> int:
    """This process's peak resident memory so far, KiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """``child(spec)`` in a fresh process (its own peak memory), with the cache of ``spec``;
    ``others``: the share of the CPU other processes took meanwhile."""
    env = {**os.environ, "RNNKIT_CACHE": spec["cache"], "PYTHONPATH": str(bench.REPO)}
    before = bench.cpu_ticks()
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{spec['mode']} {spec['recipe']} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["others"] = bench.others_share(before)
    return result


# ----------------------------------------------------------------------- the corpus
def make_corpus(source: Path, target: Path, gigabytes: float) -> int:
    """``source``'s lines, shuffled afresh for every copy, until ``gigabytes``; its bytes."""
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    rng, size, goal = random.Random(0), 0, int(gigabytes * 1e9)
    with open(target, "w", encoding="utf-8") as f:
        while size < goal:
            rng.shuffle(lines)
            text = "".join(lines)
            f.write(text)
            size += len(text.encode("utf-8"))
    return target.stat().st_size


# ------------------------------------------------------------------------- the report
def main() -> int:
    """Make the corpus, measure every workload, print the table."""
    p = bench.parser(__doc__, "a 20 MB corpus and a few steps", data_dir=True, tuned=TUNED)
    args = bench.finish(p, p.parse_args())
    scratch = Path(tempfile.mkdtemp(prefix="rnnkit-corpus-"))
    try:
        big = scratch / "big.txt"
        progress(f"writing a {args.gigabytes:g} GB corpus into {scratch}")
        size = make_corpus(args.data_dir / "wikitext-2" / "train.txt", big, args.gigabytes)
        shares: list[float] = []
        rows = [measure_workload(name, big, size, scratch, args, shares) for name in WORKLOADS]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    machine = f"{bench.threads(args)}; each measurement in a process of its own (the busiest)"
    title = "Training on a corpus larger than memory"
    lines = bench.header(title, args, max(shares, default=None), machine, __doc__)
    lines += [f"- corpus: WikiText-2's training lines, shuffled, {size / 1e9:.2f} GB", ""]
    lines += bench.table(
        ["workload", "prepare", "MB/s", "peak RSS prepare", "peak RSS train (big)",
         "big terms/s (mean)", "in memory terms/s (mean)", "ratio of the means"],
        rows,
    )  # fmt: skip
    bench.publish("\n".join(lines) + "\n", args.target)
    return 0


def measure_workload(
    name: str, big: Path, size: int, scratch: Path, args: Any, shares: list[float]
) -> list[str]:
    """One row of the table: prepare the big text, train from it, train in memory."""
    recipe, task, unit = WORKLOADS[name]
    spec = {"recipe": str(resolve(recipe)), "task": task, "data_dir": str(args.data_dir),
            "cache": str(scratch / "cache"), "warmup": args.warmup,
            "steps": args.lm_steps if task == "lm" else args.embed_steps}  # fmt: skip
    on_big = {**spec, "overrides": [f"data.train={big}"]}
    progress(f"{name}: preparing")
    prep = measure({**on_big, "mode": "prepare"})
    disks, memories = [], []
    for turn in range(args.repeats):  # alternating, so that a slow spell hits both paths
        progress(f"{name}: training from the cache ({turn + 1}/{args.repeats})")
        disks.append(measure({**on_big, "mode": "big"}))
        progress(f"{name}: training in memory ({turn + 1}/{args.repeats})")
        memories.append(measure({**spec, "overrides": [], "mode": "memory"}))
    runs = [prep, *disks, *memories]
    shares += [m["others"] for m in runs if m["others"] is not None]
    disk, memory = (sum(m["terms_per_s"] for m in ms) / len(ms) for ms in (disks, memories))
    peak = max(m["rss_kib"] for m in disks)
    return [name, f"{prep['seconds']:.0f} s", f"{size / 1e6 / prep['seconds']:.1f}",
            f"{prep['rss_kib'] / 1024:,.0f} MiB", f"{peak / 1024:,.0f} MiB",
            rates(disks, unit), rates(memories, unit), f"**{disk / memory:.3f}×**"]  # fmt: skip


def rates(runs: list[dict[str, Any]], unit: str) -> str:
    """The mean rate of ``runs``, and each run's in brackets when there are several."""
    each = [m["terms_per_s"] for m in runs]
    shown = f"{sum(each) / len(each):,.0f} {unit}/s"
    return shown + (f" ({', '.join(f'{r:,.0f}' for r in each)})" if len(each) > 1 else "")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
    else:
        bench.run(main)
