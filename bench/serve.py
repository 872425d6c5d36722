"""Benchmark: ``rnnkit serve`` under load on loopback, micro-batching on vs off.

Per mode (on, the default; off, ``--no-batching``) one real server runs as a subprocess
(``python -m rnnkit serve --model NAME=DIR ... --host 127.0.0.1``); each model in turn gets
``--warmup`` untimed requests, then ``--requests`` (translator: ``--translator-requests``)
``POST /v1/models/NAME/predict`` requests of one input each, ``--concurrency`` at a time from
one ``httpx.AsyncClient``, stopped early at ``--max-seconds``. Reported per run: requests/s,
p50/p99 latency, failures (any failure exits 1, nothing published), the server's VmRSS before
and after, and the CPU the server and the load generator used. Models: the tiny ones of
``tests/tiny.py`` (kept with ``--models-from DIR``), or ``--tagger/--cipher/--translator DIR``.

    .venv/bin/python bench/serve.py                      # 2 modes x 3 models, a couple of minutes
    .venv/bin/python bench/serve.py --tagger runs/uner-ner --translator runs/fra-eng
"""

from __future__ import annotations

import argparse
import asyncio
import math
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import common as bench
import httpx
from common import progress, rot13_ciphertexts, tagger_sentences

# Served name → the task of its tiny model.
MODELS = {"tagger": "tag", "cipher": "cipher", "translator": "translate"}
MODES = {"on": [], "off": ["--no-batching"]}
STARTUP_S = 180.0  # how long a server may take to load its models and answer /health
CLIENT_TIMEOUT_S = 60.0  # per request; the server's own limit is 30 s (504)
STOP_S = 15.0  # how long a server may take to shut down after SIGTERM
SHOWN_FAILURES = 5  # failure messages printed per run
TUNED = {  # flag: (value, --quick value, help)
    "requests": (5_000, 200, "tagger and cipher requests"),
    "translator_requests": (1_000, 50, "translator requests"),
    "warmup": (64, 8, "untimed requests per model first"),
    "max_seconds": (300.0, 60.0, "time limit per run"),
}


# ---------------------------------------------------------------------------------- inputs
def translator_inputs() -> list[str]:
    """Short normalised French sentences such as ``je suis fatigue .``."""
    subjects = ["je suis", "il est", "elle est", "nous sommes", "vous etes", "ils sont"]
    words = ["fatigue", "content", "grand", "petit", "malade", "pret", "triste", "occupe"]
    return [
        f"{s} {'tres ' if (i + j) % 3 == 0 else ''}{w} ."
        for i, s in enumerate(subjects)
        for j, w in enumerate(words)
    ]


INPUTS = {"tagger": tagger_sentences, "cipher": rot13_ciphertexts, "translator": translator_inputs}


# ---------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid: int | str = "self") -> float | None:
    """User + system CPU seconds of a process so far, or None."""
    ticks = bench.process_ticks(pid)
    return None if ticks is None else ticks / bench.TICK


@dataclass
class Server:
    """A running ``rnnkit serve`` subprocess."""

    process: subprocess.Popen
    url: str
    log: Path
    argv: list[str]

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_server(dirs: dict[str, Path], mode: str, device: str, log: Path) -> Server:
    """Start a server with ``dirs`` in ``mode`` ("on"/"off") and wait until /health answers."""
    port = free_port()
    argv = [sys.executable, "-m", "rnnkit", "serve"]
    for name, path in dirs.items():
        argv += ["--model", f"{name}={path}"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--device", device]
    argv += ["--log-level", "warning", *MODES[mode]]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=bench.REPO)
    server = Server(process, f"http://127.0.0.1:{port}", log, argv)
    deadline = time.monotonic() + STARTUP_S
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with status {process.returncode} before answering "
                    f"/health; its log ({log}):\n{server.log_tail()}"
                )
            try:
                if httpx.get(f"{server.url}/health", timeout=2.0).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the server did not answer /health within {STARTUP_S:g} s; its log "
                    f"({log}):\n{server.log_tail()}"
                )
            time.sleep(0.2)
    except BaseException:
        stop_server(server)
        raise


def stop_server(server: Server) -> None:
    """SIGTERM, then SIGKILL if it has not gone after ``STOP_S``."""
    if server.process.poll() is not None:
        return
    server.process.terminate()
    try:
        server.process.wait(STOP_S)
    except subprocess.TimeoutExpired:
        progress(f"server {server.pid} ignored SIGTERM for {STOP_S:g} s; killing it")
        server.process.kill()
        server.process.wait()


# ------------------------------------------------------------------------------------ load
@dataclass
class Load:
    """What one burst of requests gave."""

    latencies: list[float] = field(default_factory=list)  # seconds, answered requests
    failures: list[str] = field(default_factory=list)
    sent: int = 0
    seconds: float = 0.0
    stopped: bool = False  # by the time limit, before the count
    died: bool = False  # the server exited during the run; the rest was not sent


async def _load(
    server: Server, name: str, texts: list[str], count: int, concurrency: int, max_seconds: float
) -> Load:
    result = Load()
    path = f"/v1/models/{name}/predict"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=server.url, limits=limits, timeout=CLIENT_TIMEOUT_S
    ) as client:
        start = time.perf_counter()
        deadline = start + max_seconds

        async def worker() -> None:
            while result.sent < count and not result.died:
                if time.perf_counter() >= deadline:
                    result.stopped = True
                    return
                text = texts[result.sent % len(texts)]
                result.sent += 1
                sent_at = time.perf_counter()
                try:
                    reply = await client.post(path, json={"inputs": [text]})
                    elapsed = time.perf_counter() - sent_at
                    if reply.status_code != 200:
                        result.failures.append(f"HTTP {reply.status_code}: {reply.text[:200]}")
                    elif len(reply.json().get("outputs", [])) != 1:
                        result.failures.append(f"200 without one output: {reply.text[:200]}")
                    else:
                        result.latencies.append(elapsed)
                except Exception as err:  # every exception is a failed request
                    result.failures.append(f"{type(err).__name__}: {err}")
                    if server.process.poll() is not None:
                        result.died = True

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start
    return result


def load(
    server: Server, name: str, texts: list[str], count: int, concurrency: int, max_seconds: float
) -> Load:
    """Send ``count`` predict requests of one input each to model ``name``, ``concurrency``
    at a time, stopping early after ``max_seconds`` or when the server has exited."""
    return asyncio.run(_load(server, name, texts, count, concurrency, max_seconds))


@dataclass
class Run:
    """One model under load in one mode."""

    model: str
    mode: str
    requests: int
    concurrency: int
    load: Load
    rss_before: int | None  # KiB, before the warm-up
    rss_after: int | None  # KiB, after the timed load
    server_cpu_s: float | None  # during the timed load
    client_cpu_s: float | None

    @property
    def answered(self) -> int:
        return len(self.load.latencies)

    @property
    def per_second(self) -> float:
        return self.answered / self.load.seconds if self.load.seconds > 0 else float("nan")

    @property
    def failed(self) -> int:
        return len(self.load.failures)

    def ms(self, q: float) -> float:
        """The ``q`` quantile of the latencies (nearest rank) in ms; nan without any."""
        ordered = sorted(self.load.latencies)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1e3 if ordered else math.nan


def delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def bench_mode(
    mode: str, dirs: dict[str, Path], args: argparse.Namespace, scratch: Path
) -> tuple[list[Run], dict[str, float | None]]:
    """Start a server in ``mode``, load each model in turn, stop it; the runs, and the
    server's total CPU seconds and peak memory."""
    progress(f"== batching {mode}: starting the server")
    started = time.perf_counter()
    server = start_server(dirs, mode, args.device, scratch / f"server-{mode}.log")
    runs = []
    try:
        progress(f"server {server.pid} up in {time.perf_counter() - started:.1f} s: {server.url}")
        for name in MODELS:
            count = args.translator_requests if name == "translator" else args.requests
            texts = INPUTS[name]()
            rss_before = bench.memory_kib(server.pid)
            if args.warmup:
                warm = load(server, name, texts, args.warmup, args.concurrency, 60.0)
                if warm.failures:
                    raise RuntimeError(
                        f"warm-up of {name} failed: {warm.failures[0]}\n{server.log_tail()}"
                    )
            server_before, client_before = cpu_s(server.pid), cpu_s()
            progress(f"{name}: {count:,} requests at concurrency {args.concurrency}")
            done = load(server, name, texts, count, args.concurrency, args.max_seconds)
            run = Run(
                name, mode, count, args.concurrency, done, rss_before, bench.memory_kib(server.pid),
                delta(cpu_s(server.pid), server_before),
                delta(cpu_s(), client_before)
            )  # fmt: skip
            runs.append(run)
            progress(
                f"{name}: {run.answered:,} answered in {done.seconds:.1f} s, {run.per_second:,.0f} "
                f"req/s, p50 {run.ms(0.5):.1f} ms, p99 {run.ms(0.99):.1f} ms, {run.failed} failed"
                + (f" (stopped at --max-seconds {args.max_seconds:g})" if done.stopped else "")
            )
            if done.failures:
                shout_failures(run)
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"the server died (status {server.process.returncode}) during the {name} "
                    f"run; its log:\n{server.log_tail()}"
                )
        totals = {"cpu_s": cpu_s(server.pid), "peak_kib": bench.memory_kib(server.pid, "VmHWM")}
    finally:
        stop_server(server)
    return runs, totals


def shout_failures(run: Run) -> None:
    progress(f"!!! {run.failed:,} FAILED REQUESTS: {run.model}, batching {run.mode} !!!")
    for message in run.load.failures[:SHOWN_FAILURES]:
        progress(f"!!!   {message}")
    if run.failed > SHOWN_FAILURES:
        progress(f"!!!   ... and {run.failed - SHOWN_FAILURES:,} more")


# ---------------------------------------------------------------------------------- report
def mib(kib: int | None) -> str:
    return "?" if kib is None else f"{kib / 1024:,.0f}"


def cores(cpu_s: float | None, seconds: float) -> str:
    return "?" if cpu_s is None or seconds <= 0 else f"{cpu_s / seconds:.2f}"


def runs_table(runs: dict[tuple[str, str], Run]) -> list[str]:
    rows = []
    for name in MODELS:
        on, off = runs[name, "on"], runs[name, "off"]
        failed = f"{on.failed} / {off.failed}"
        if on.failed or off.failed:
            failed = f"**{failed}**"
        rows.append(
            f"{name} | {on.requests:,} × {on.concurrency} | {on.per_second:,.0f} | "
            f"{off.per_second:,.0f} | **{bench.ratio(on.per_second, off.per_second)}** | "
            f"{on.ms(0.5):.1f} / {off.ms(0.5):.1f} | {on.ms(0.99):.1f} / {off.ms(0.99):.1f} | "
            f"{failed} | {mib(on.rss_before)} → {mib(on.rss_after)} | "
            f"{mib(off.rss_before)} → {mib(off.rss_after)}"
        )
    head = (
        "model | requests × concurrency | req/s on | req/s off | on/off | p50 ms on / off "
        "| p99 ms on / off | failed on / off | server RSS MiB on (before → after) | off"
    )
    return bench.table(head, rows)


def summary(runs: dict[tuple[str, str], Run]) -> str:
    """One or two sentences of what the table shows."""
    speedups = ", ".join(
        f"{bench.ratio(runs[n, 'on'].per_second, runs[n, 'off'].per_second)} ({n})" for n in MODELS
    )
    p99 = ", ".join(
        f"{runs[n, 'off'].ms(0.99):.0f} → {runs[n, 'on'].ms(0.99):.0f} ms ({n})" for n in MODELS
    )
    growth = [
        r.rss_after - r.rss_before
        for r in runs.values()
        if r.rss_after is not None and r.rss_before is not None
    ]
    memory = (
        f" The server's resident memory grew by at most {max(growth) / 1024:,.0f} MiB in any run."
        if growth
        else ""
    )
    return (
        f"- what it shows: with micro-batching on, the server answered {speedups} the "
        f"requests/s it answers with one predict call per request, and p99 latency went "
        f"{p99} (off → on).{memory}"
    )


def report(
    runs: dict[tuple[str, str], Run],
    totals: dict[str, dict[str, float | None]],
    dirs: dict[str, Path],
    others: float | None,
    args: argparse.Namespace,
) -> str:
    machine = (
        f"Python {platform.python_version()}, uvicorn "
        f"{bench.version('uvicorn')}, fastapi {bench.version('fastapi')}, httpx "
        f"{bench.version('httpx')}; server device {args.device}, torch threads its default"
    )
    title = "Serve benchmark: `rnnkit serve`, micro-batching on vs off"
    lines = bench.header(title, args, others, machine)
    failed = sum(r.failed for r in runs.values())
    if failed:
        lines.append(f"- **{failed:,} requests FAILED**: the figures below do not count them")
    stopped = [f"{r.model} (batching {r.mode})" for r in runs.values() if r.load.stopped]
    if stopped:
        lines.append(
            f"- **stopped at --max-seconds {args.max_seconds:g}** before the request count: "
            + ", ".join(stopped)
        )
    per_run = []
    for mode in MODES:
        parts = [
            f"{r.model} {r.answered:,} in {r.load.seconds:.1f} s (server "
            f"{cores(r.server_cpu_s, r.load.seconds)}, "
            f"client {cores(r.client_cpu_s, r.load.seconds)})"
            for r in (runs[n, mode] for n in MODELS)
        ]
        total = totals[mode]
        per_run.append(
            f"- batching {mode}: {'; '.join(parts)}; server peak RSS {mib(total['peak_kib'])} MiB"
        )
    given = args.models_from or any(getattr(args, n) for n in MODELS)
    example = [
        "python -m rnnkit serve",
        *(f"--model {n}=DIR" for n in MODELS),
        "--host 127.0.0.1 --port PORT --log-level warning [--no-batching]",
    ]
    lines += [
        f"- server: `{' '.join(example)}`, its other limits at their defaults (batching on: "
        "at most 64 inputs per predict call, 2 ms wait for stragglers); one server per mode, "
        "the models loaded in turn",
        f"- models: {bench.models_line(dirs, given)}",
        f"- load: one `httpx.AsyncClient` in the benchmark's process on the same machine, "
        f"{args.concurrency} connections and workers; each request `POST "
        "/v1/models/NAME/predict` with one input from a fixed list (tagger: English sentences "
        "with names and places; cipher: ROT13 ciphertexts of 16–32 symbols; translator: short "
        f"French sentences); {args.warmup} untimed warm-up requests per model first; at most "
        f"{args.max_seconds:g} s per run",
        "- req/s: answered requests over the run's wall time; latency: from sending to the "
        "whole answer; RSS: the server's VmRSS before the model's warm-up and after its load",
        "",
        *runs_table(runs),
        "",
        "- CPU during each timed load, in cores (CPU seconds per wall second), server and this "
        "load generator:",
        *(f"  {line}" for line in per_run),
        summary(runs),
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = bench.parser(
        __doc__, "a few hundred requests, under a minute", threads=False, tuned=TUNED
    )
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (32)")
    parser.add_argument("--models-from", metavar="DIR", help="take (or train) tiny models here")
    parser.add_argument("--tagger", metavar="DIR", help="a trained tag model to serve")
    parser.add_argument("--cipher", metavar="DIR", help="a trained cipher model to serve")
    parser.add_argument("--translator", metavar="DIR", help="a trained translate model to serve")
    parser.add_argument("--device", default="cpu", help="the server's device (cpu)")
    args = bench.finish(parser, parser.parse_args(argv))
    if args.concurrency < 1:
        parser.error("--concurrency must be ≥ 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rnnkit-bench-serve-") as tmp:
        scratch = Path(tmp)
        root = Path(args.models_from).expanduser().resolve() if args.models_from else scratch
        dirs = bench.model_dirs({n: getattr(args, n) for n in MODELS}, MODELS, root)
        before = bench.cpu_ticks()
        runs: dict[tuple[str, str], Run] = {}
        totals: dict[str, dict[str, float | None]] = {}
        try:
            for mode in MODES:
                mode_runs, totals[mode] = bench_mode(mode, dirs, args, scratch)
                runs.update(((r.model, mode), r) for r in mode_runs)
        except RuntimeError as err:
            progress(f"error: {err}")
            return 2
    servers_s = sum(t["cpu_s"] or 0.0 for t in totals.values())
    others = bench.others_share(before, servers_s * bench.TICK)  # the servers' ticks are ours
    failed = sum(r.failed for r in runs.values())
    text = report(runs, totals, dirs, others, args)
    if failed:
        for run in runs.values():
            if run.failed:
                shout_failures(run)
        bench.publish(text, None)
        progress(f"!!! {failed:,} requests failed; nothing published !!!")
        return 1
    bench.publish(text, args.target)
    return 0


if __name__ == "__main__":
    bench.run(main)
