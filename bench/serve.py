"""Benchmark: ``rnnkit serve`` under load on loopback, PyTorch vs onnxruntime backend and
micro-batching on vs off, side by side.

Per backend (``--backends``: torch, onnx) and mode (``--modes``: on, the default; off,
``--no-batching``) one real server runs as a subprocess (``python -m rnnkit serve --backend B
--model NAME=DIR ... --host 127.0.0.1``); each model in turn gets
``--warmup`` untimed requests, then ``--requests`` (translator: ``--translator-requests``)
``POST /v1/models/NAME/predict`` requests of one input each, ``--concurrency`` at a time from
one ``httpx.AsyncClient``, stopped early at ``--max-seconds``. Reported per run: requests/s,
p50/p99 latency, failures (any failure exits 1, nothing published), the server's VmRSS before
and after, and the CPU the server and the load generator used. Models: the tiny ones of
``bench/common.py`` (kept with ``--models-from DIR``), or ``--tagger/--cipher/--translator DIR``.

    .venv/bin/python bench/serve.py                      # 2 backends x 2 modes x 3 models
    .venv/bin/python bench/serve.py --backends onnx --modes on
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
from typing import Any

import common as bench
import httpx
from common import progress, rot13_ciphertexts, tagger_sentences, translator_inputs

# Served name → the task of its tiny model.
MODELS = {"tagger": "tag", "cipher": "cipher", "translator": "translate"}
MODES = {"on": [], "off": ["--no-batching"]}
BACKENDS = ("torch", "onnx")
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


def start_server(dirs: dict[str, Path], backend: str, mode: str, device: str, log: Path) -> Server:
    """Start a server with ``dirs`` on ``backend`` in ``mode`` ("on"/"off") and wait until
    /health answers."""
    port = free_port()
    argv = [sys.executable, "-m", "rnnkit", "serve", "--backend", backend]
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
    """One model under load on one backend in one mode."""

    model: str
    backend: str
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

    @property
    def cpu_ms(self) -> float:
        """The server's CPU milliseconds per answered request (a figure that other jobs on a
        shared machine disturb less than wall time); nan where unknown."""
        if self.server_cpu_s is None or not self.answered:
            return math.nan
        return self.server_cpu_s / self.answered * 1e3

    def ms(self, q: float) -> float:
        """The ``q`` quantile of the latencies (nearest rank) in ms; nan without any."""
        ordered = sorted(self.load.latencies)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1e3 if ordered else math.nan


def delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def bench_server(
    backend: str, mode: str, dirs: dict[str, Path], args: argparse.Namespace, scratch: Path
) -> tuple[list[Run], dict[str, float | None]]:
    """Start a server on ``backend`` in ``mode``, load each model in turn, stop it; the runs,
    and the server's total CPU seconds and peak memory."""
    progress(f"== backend {backend}, batching {mode}: starting the server")
    started = time.perf_counter()
    log = scratch / f"server-{backend}-{mode}.log"
    server = start_server(dirs, backend, mode, args.device, log)
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
                name, backend, mode, count, args.concurrency, done, rss_before,
                bench.memory_kib(server.pid),
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
    progress(
        f"!!! {run.failed:,} FAILED REQUESTS: {run.model}, backend {run.backend}, "
        f"batching {run.mode} !!!"
    )
    for message in run.load.failures[:SHOWN_FAILURES]:
        progress(f"!!!   {message}")
    if run.failed > SHOWN_FAILURES:
        progress(f"!!!   ... and {run.failed - SHOWN_FAILURES:,} more")


# ---------------------------------------------------------------------------------- report
Key = tuple[str, str, str]  # model, backend, mode


def mib(kib: int | None) -> str:
    return "?" if kib is None else f"{kib / 1024:,.0f}"


def cores(cpu_s: float | None, seconds: float) -> str:
    return "?" if cpu_s is None or seconds <= 0 else f"{cpu_s / seconds:.2f}"


def backends_table(runs: dict[Key, Run], args: argparse.Namespace) -> list[str]:
    """Backends side by side: one row per model and batching mode, one column group per
    backend (and onnx/torch where both ran)."""
    both = len(args.backends) == 2
    rows = []
    for mode in args.modes:
        for name in MODELS:
            got = [runs[name, b, mode] for b in args.backends]
            failed = " / ".join(str(r.failed) for r in got)
            if any(r.failed for r in got):
                failed = f"**{failed}**"
            cells = [
                name, mode, f"{got[0].requests:,} × {got[0].concurrency}",
                *(f"{r.per_second:,.0f}" for r in got),
            ]  # fmt: skip
            if both:
                cells.append(f"**{rate(got[1], got[0])}**")
            cells += [
                " / ".join(f"{r.ms(0.5):.1f}" for r in got),
                " / ".join(f"{r.ms(0.99):.1f}" for r in got),
                " / ".join(f"{r.cpu_ms:.2f}" for r in got),
                failed,
                " / ".join(mib(r.rss_after) for r in got),
            ]
            rows.append(cells)
    names = " / ".join(args.backends)
    head = [
        "model", "batching", "requests × concurrency", *(f"req/s {b}" for b in args.backends),
        *(["onnx/torch"] if both else []), f"p50 ms {names}", f"p99 ms {names}",
        f"server CPU ms per request {names}", f"failed {names}", f"server RSS MiB after, {names}",
    ]  # fmt: skip
    return bench.table(head, rows, left=2)


def modes_table(runs: dict[Key, Run], backend: str) -> list[str]:
    """Batching on vs off on one backend."""
    rows = []
    for name in MODELS:
        on, off = runs[name, backend, "on"], runs[name, backend, "off"]
        failed = f"{on.failed} / {off.failed}"
        if on.failed or off.failed:
            failed = f"**{failed}**"
        rows.append(
            f"{name} | {on.requests:,} × {on.concurrency} | {on.per_second:,.0f} | "
            f"{off.per_second:,.0f} | **{rate(on, off)}** | "
            f"{on.ms(0.5):.1f} / {off.ms(0.5):.1f} | {on.ms(0.99):.1f} / {off.ms(0.99):.1f} | "
            f"{failed} | {mib(on.rss_before)} → {mib(on.rss_after)} | "
            f"{mib(off.rss_before)} → {mib(off.rss_after)}"
        )
    head = (
        "model | requests × concurrency | req/s on | req/s off | on/off | p50 ms on / off "
        "| p99 ms on / off | failed on / off | server RSS MiB on (before → after) | off"
    )
    return bench.table(head, rows)


def rate(ours: Run, theirs: Run) -> str:
    """``ours``'s requests/s over ``theirs``'s, as ``2.15×``."""
    return bench.ratio(ours.per_second, theirs.per_second)


def summary(runs: dict[Key, Run], args: argparse.Namespace) -> list[str]:
    """A sentence or two of what the tables show."""
    lines = []
    if len(args.backends) == 2:
        for mode in args.modes:
            speedups = ", ".join(
                f"{rate(runs[n, 'onnx', mode], runs[n, 'torch', mode])} ({n})" for n in MODELS
            )
            p99 = ", ".join(
                f"{runs[n, 'torch', mode].ms(0.99):.0f} → {runs[n, 'onnx', mode].ms(0.99):.0f} ms"
                f" ({n})"
                for n in MODELS
            )
            lines.append(
                f"- backends, batching {mode}: the onnx backend answered {speedups} the "
                f"requests/s of the torch backend; p99 latency went {p99} (torch → onnx)."
            )
    if len(args.modes) == 2:
        for backend in args.backends:
            speedups = ", ".join(
                f"{rate(runs[n, backend, 'on'], runs[n, backend, 'off'])} ({n})" for n in MODELS
            )
            lines.append(
                f"- batching, backend {backend}: with micro-batching on, the server answered "
                f"{speedups} the requests/s it answers with one predict call per request."
            )
    growth = [
        r.rss_after - r.rss_before
        for r in runs.values()
        if r.rss_after is not None and r.rss_before is not None
    ]
    if growth:
        lines.append(
            f"- memory: the server's resident memory grew by at most "
            f"{max(growth) / 1024:,.0f} MiB in any run."
        )
    return lines


def report(
    runs: dict[Key, Run],
    totals: dict[tuple[str, str], dict[str, float | None]],
    dirs: dict[str, Path],
    others: float | None,
    args: argparse.Namespace,
) -> str:
    omp = os.environ.get("OMP_NUM_THREADS")
    machine = (
        f"Python {platform.python_version()}, uvicorn "
        f"{bench.version('uvicorn')}, fastapi {bench.version('fastapi')}, httpx "
        f"{bench.version('httpx')}, onnxruntime {bench.version('onnxruntime')}; server device "
        f"{args.device}, server torch threads "
        + (f"{omp} (OMP_NUM_THREADS={omp}, inherited)" if omp else "its default")
        + ", onnxruntime intra-op threads the same"
    )
    title = "Serve benchmark: `rnnkit serve`, backends " + " vs ".join(args.backends)
    title += ", micro-batching " + " vs ".join(args.modes)
    lines = bench.header(title, args, others, machine)
    failed = sum(r.failed for r in runs.values())
    if failed:
        lines.append(f"- **{failed:,} requests FAILED**: the figures below do not count them")
    stopped = [
        f"{r.model} (backend {r.backend}, batching {r.mode})"
        for r in runs.values()
        if r.load.stopped
    ]
    if stopped:
        lines.append(
            f"- **stopped at --max-seconds {args.max_seconds:g}** before the request count: "
            + ", ".join(stopped)
        )
    per_run = []
    for (backend, mode), total in totals.items():
        parts = [
            f"{r.model} {r.answered:,} in {r.load.seconds:.1f} s (server "
            f"{cores(r.server_cpu_s, r.load.seconds)}, "
            f"client {cores(r.client_cpu_s, r.load.seconds)})"
            for r in (runs[n, backend, mode] for n in MODELS)
        ]
        per_run.append(
            f"- backend {backend}, batching {mode}: {'; '.join(parts)}; server peak RSS "
            f"{mib(total['peak_kib'])} MiB"
        )
    given = args.models_from or any(getattr(args, n) for n in MODELS)
    example = [
        "python -m rnnkit serve --backend torch|onnx",
        *(f"--model {n}=DIR" for n in MODELS),
        "--host 127.0.0.1 --port PORT --log-level warning [--no-batching]",
    ]
    lines += [
        f"- server: `{' '.join(example)}`, its other limits at their defaults (batching on: "
        "at most 64 inputs per predict call, 2 ms wait for stragglers); one server per backend "
        "and mode, the models loaded in turn; the onnx backend exports each model's graphs at "
        "load and answers through onnxruntime (CPU provider), the same answers as torch "
        "(tests/test_onnx_backend.py)",
        f"- models: {bench.models_line(dirs, given)}",
        f"- load: one `httpx.AsyncClient` in the benchmark's process on the same machine, "
        f"{args.concurrency} connections and workers; each request `POST "
        "/v1/models/NAME/predict` with one input from a fixed list (tagger: English sentences "
        "with names and places; cipher: ROT13 ciphertexts of 16–32 symbols; translator: short "
        f"French sentences); {args.warmup} untimed warm-up requests per model first; at most "
        f"{args.max_seconds:g} s per run",
        "- req/s: answered requests over the run's wall time; latency: from sending to the "
        "whole answer; server CPU ms per request: the server process's CPU time during the "
        "timed load over the requests answered; RSS: the server's VmRSS after the model's load "
        "(before → after: before its warm-up and after its load)",
        "",
        *backends_table(runs, args),
        "",
    ]
    if len(args.modes) == 2:
        for backend in args.backends:
            lines += [
                f"Batching on vs off, backend {backend}:",
                "",
                *modes_table(runs, backend),
                "",
            ]
    lines += [
        "- CPU during each timed load, in cores (CPU seconds per wall second), server and this "
        "load generator:",
        *(f"  {line}" for line in per_run),
        *summary(runs, args),
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def choices(allowed: tuple[str, ...] | list[str]) -> Any:
    """An argparse type: a comma-separated list of distinct names out of ``allowed``, in the
    order of ``allowed``."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        bad = [n for n in names if n not in allowed]
        if bad or not names or len(set(names)) != len(names):
            raise argparse.ArgumentTypeError(
                f"distinct names out of {', '.join(allowed)}, comma-separated, not {text!r}"
            )
        return [n for n in allowed if n in names]

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = bench.parser(
        __doc__, "a few hundred requests, under a minute", threads=False, tuned=TUNED
    )
    parser.add_argument(
        "--backends", type=choices(BACKENDS), default=list(BACKENDS),
        help="the server backends to compare (torch,onnx)",
    )  # fmt: skip
    parser.add_argument(
        "--modes", type=choices(list(MODES)), default=list(MODES),
        help="micro-batching on, off or both (on,off)",
    )  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (32)")
    parser.add_argument("--models-from", metavar="DIR", help="take (or train) tiny models here")
    parser.add_argument("--tagger", metavar="DIR", help="a trained tag model to serve")
    parser.add_argument("--cipher", metavar="DIR", help="a trained cipher model to serve")
    parser.add_argument("--translator", metavar="DIR", help="a trained translate model to serve")
    parser.add_argument("--device", default="cpu", help="the server's device (cpu)")
    args = bench.finish(parser, parser.parse_args(argv))
    if args.concurrency < 1:
        parser.error("--concurrency must be ≥ 1")
    if "onnx" in args.backends and args.device != "cpu":
        parser.error("--backends onnx runs on the CPU: give --device cpu")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "onnx" in args.backends and not bench.needs("onnx", "onnxruntime"):
        return 2
    with tempfile.TemporaryDirectory(prefix="rnnkit-bench-serve-") as tmp:
        scratch = Path(tmp)
        root = Path(args.models_from).expanduser().resolve() if args.models_from else scratch
        dirs = bench.model_dirs({n: getattr(args, n) for n in MODELS}, MODELS, root)
        before = bench.cpu_ticks()
        runs: dict[Key, Run] = {}
        totals: dict[tuple[str, str], dict[str, float | None]] = {}
        try:
            for mode in args.modes:
                for backend in args.backends:
                    found, totals[backend, mode] = bench_server(backend, mode, dirs, args, scratch)
                    runs.update(((r.model, backend, mode), r) for r in found)
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
