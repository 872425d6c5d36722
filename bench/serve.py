"""Benchmark: ``rnnkit serve`` under load on loopback, micro-batching on vs off.

What it measures: for each mode (batching on, the server's default; batching off,
``--no-batching``: one predict call per request) a real server is started as a subprocess::

    python -m rnnkit serve --model tagger=DIR --model cipher=DIR --model translator=DIR \\
        --host 127.0.0.1 --port FREE --log-level warning [--no-batching]

and, once ``GET /health`` answers, each model is loaded in turn: ``--requests`` requests
(5,000) at ``--concurrency`` (32) for the tagger and for the cipher, ``--translator-requests``
(1,000) for the translator. Every request is ``POST /v1/models/NAME/predict`` with
``{"inputs": [one sentence]}``, the sentences taken in turn from a fixed list of realistic
inputs (tagger: short English sentences with names and places; cipher: ROT13 ciphertexts of
16-32 symbols from A-Z and '-'; translator: short French sentences). The load comes from one
``httpx.AsyncClient`` in this process, with as many connections as the concurrency and as many
workers, each sending its next request as soon as its last was answered. Before each timed run,
``--warmup`` untimed requests go to the same model. A run stops by itself after its request
count or ``--max-seconds`` (300), whichever comes first.

Per run: requests/s (answered requests over the run's wall time), p50 and p99 latency (from
sending a request to having its whole answer), failed requests (any status but 200, a 200
without exactly one output, or an exception; there must be none, and the script says so loudly
and exits 1 when there are), the server's resident memory (VmRSS of ``/proc/PID/status``)
before the model's warm-up and after its timed load, and the CPU time the server and this
load generator used during the timed load (they share the machine's cores). The number of
predict calls the server made is not reported: the server does not expose it.

Models: by default the tiny models of the tests (``tests/tiny.py``), trained in a few seconds
into a temporary directory. ``--models-from DIR`` keeps them: each of ``DIR/tagger``,
``DIR/cipher`` and ``DIR/translator`` that is a model directory is used as it is, else
``DIR/tag/model`` (and ``cipher/model``, ``translate/model``), else a tiny model is trained
there. ``--tagger DIR``, ``--cipher DIR`` and ``--translator DIR`` bench real trained models.

Run::

    .venv/bin/python bench/serve.py                      # 2 modes x 3 models, a couple of minutes
    .venv/bin/python bench/serve.py --tagger runs/uner-ner --translator runs/fra-eng
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
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
TICK = os.sysconf("SC_CLK_TCK")


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


# ---------------------------------------------------------------------------------- models
def model_dirs(args: argparse.Namespace, scratch: Path) -> dict[str, Path]:
    """Served name → model directory: given, found under --models-from, or trained."""
    root = Path(args.models_from).expanduser().resolve() if args.models_from else scratch
    return bench.model_dirs({n: getattr(args, n) for n in MODELS}, MODELS, root)


def describe_models(dirs: dict[str, Path], args: argparse.Namespace) -> str:
    given = {"tagger": args.tagger, "cipher": args.cipher, "translator": args.translator}
    if not any(given.values()) and not args.models_from:
        return "the tiny models of `tests/tiny.py`, trained for this run"
    return "; ".join(f"{name} `{path}`" for name, path in dirs.items())


# ---------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int | None:
    """Resident memory of ``pid`` in KiB (VmRSS), or None when it cannot be read."""
    return _status_kib(pid, "VmRSS:")


def peak_rss_kib(pid: int) -> int | None:
    """Peak resident memory of ``pid`` in KiB (VmHWM), or None."""
    return _status_kib(pid, "VmHWM:")


def _status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def process_cpu_s(pid: int | str = "self") -> float | None:
    """User + system CPU seconds of a process so far, from ``/proc/PID/stat``, or None."""
    try:
        after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(after_name[11]) + int(after_name[12])) / TICK
    except (OSError, ValueError, IndexError):
        return None


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


def percentile_ms(latencies: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) in milliseconds; nan without latencies."""
    if not latencies:
        return float("nan")
    ordered = sorted(latencies)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1e3


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
            rss_before = rss_kib(server.pid)
            if args.warmup:
                warm = load(server, name, texts, args.warmup, args.concurrency, 60.0)
                if warm.failures:
                    raise RuntimeError(
                        f"warm-up of {name} failed: {warm.failures[0]}\n{server.log_tail()}"
                    )
            server_before, client_before = process_cpu_s(server.pid), process_cpu_s()
            progress(f"{name}: {count:,} requests at concurrency {args.concurrency}")
            done = load(server, name, texts, count, args.concurrency, args.max_seconds)
            run = Run(
                name, mode, count, args.concurrency, done, rss_before, rss_kib(server.pid),
                delta(process_cpu_s(server.pid), server_before),
                delta(process_cpu_s(), client_before),
            )  # fmt: skip
            runs.append(run)
            progress(
                f"{name}: {run.answered:,} answered in {done.seconds:.1f} s, "
                f"{run.per_second:,.0f} req/s, p50 {percentile_ms(done.latencies, 0.5):.1f} ms, "
                f"p99 {percentile_ms(done.latencies, 0.99):.1f} ms, {run.failed} failed"
                + (f" (stopped at --max-seconds {args.max_seconds:g})" if done.stopped else "")
            )
            if done.failures:
                shout_failures(run)
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"the server died (status {server.process.returncode}) during the {name} "
                    f"run; its log:\n{server.log_tail()}"
                )
        totals = {"cpu_s": process_cpu_s(server.pid), "peak_kib": peak_rss_kib(server.pid)}
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


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b > 0 and not math.isnan(a) and not math.isnan(b) else "n/a"


def cores(cpu_s: float | None, seconds: float) -> str:
    return "?" if cpu_s is None or seconds <= 0 else f"{cpu_s / seconds:.2f}"


def table(runs: dict[tuple[str, str], Run]) -> list[str]:
    lines = [
        "| model | requests × concurrency | req/s on | req/s off | on/off | p50 ms on / off "
        "| p99 ms on / off | failed on / off | server RSS MiB on (before → after) | off |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in MODELS:
        on, off = runs[name, "on"], runs[name, "off"]
        failed = f"{on.failed} / {off.failed}"
        if on.failed or off.failed:
            failed = f"**{failed}**"
        lines.append(
            f"| {name} | {on.requests:,} × {on.concurrency} | {on.per_second:,.0f} | "
            f"{off.per_second:,.0f} | **{ratio(on.per_second, off.per_second)}** | "
            f"{percentile_ms(on.load.latencies, 0.5):.1f} / "
            f"{percentile_ms(off.load.latencies, 0.5):.1f} | "
            f"{percentile_ms(on.load.latencies, 0.99):.1f} / "
            f"{percentile_ms(off.load.latencies, 0.99):.1f} | {failed} | "
            f"{mib(on.rss_before)} → {mib(on.rss_after)} | "
            f"{mib(off.rss_before)} → {mib(off.rss_after)} |"
        )
    return lines


def summary(runs: dict[tuple[str, str], Run]) -> str:
    """One or two sentences of what the table shows."""
    speedups = ", ".join(
        f"{ratio(runs[n, 'on'].per_second, runs[n, 'off'].per_second)} ({n})" for n in MODELS
    )
    p99 = ", ".join(
        f"{percentile_ms(runs[n, 'off'].load.latencies, 0.99):.0f} → "
        f"{percentile_ms(runs[n, 'on'].load.latencies, 0.99):.0f} ms ({n})"
        for n in MODELS
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
        f"Python {platform.python_version()}, torch {bench.version('torch')}, uvicorn "
        f"{bench.version('uvicorn')}, fastapi {bench.version('fastapi')}, httpx "
        f"{bench.version('httpx')}; server device {args.device}, torch threads its default"
    )
    lines = bench.header("Serve benchmark: `rnnkit serve`, micro-batching on vs off", args, others,
                         machine, "a few hundred requests; not a measurement")  # fmt: skip
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
    example = [
        "python -m rnnkit serve",
        *(f"--model {n}=DIR" for n in MODELS),
        "--host 127.0.0.1 --port PORT --log-level warning [--no-batching]",
    ]
    lines += [
        f"- server: `{' '.join(example)}`, its other limits at their defaults (batching on: "
        "at most 64 inputs per predict call, 2 ms wait for stragglers); one server per mode, "
        "the models loaded in turn",
        f"- models: {describe_models(dirs, args)}",
        f"- load: one `httpx.AsyncClient` in the benchmark's process on the same machine, "
        f"{args.concurrency} connections and workers; each request `POST "
        "/v1/models/NAME/predict` with one input from a fixed list (tagger: English sentences "
        "with names and places; cipher: ROT13 ciphertexts of 16–32 symbols; translator: short "
        f"French sentences); {args.warmup} untimed warm-up requests per model first; at most "
        f"{args.max_seconds:g} s per run",
        "- req/s: answered requests over the run's wall time; latency: from sending to the "
        "whole answer; RSS: the server's VmRSS before the model's warm-up and after its load",
        "",
        *table(runs),
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
    parser = bench.parser(__doc__, "under a minute", threads=False, tuned=TUNED)
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
        dirs = model_dirs(args, scratch)
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
    others = bench.others_share(before, servers_s * TICK)  # the servers' ticks are ours
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
    sys.exit(main())
