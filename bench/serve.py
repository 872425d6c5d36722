"""Benchmark: ``rnnkit serve`` under load on loopback, backends torch vs onnx and
micro-batching on vs off.

One server subprocess per backend and mode, each model in turn ``--warmup`` untimed then
``--requests`` one-input predict requests, ``--concurrency`` at a time from one
``httpx.AsyncClient``; requests/s, p50/p99 latency, failures (any exits 1, nothing published),
server memory and CPU. Models: the tiny ones of ``bench/common.py`` (kept with ``--models-from
DIR``) or ``--tagger/--cipher/--translator DIR``; the server's torch threads are its default unless
``OMP_NUM_THREADS`` is set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

MODELS = {"tagger": "tag", "cipher": "cipher", "translator": "translate"}  # name → task
INPUTS = {"tagger": tagger_sentences, "cipher": rot13_ciphertexts, "translator": translator_inputs}
MODES = {"on": [], "off": ["--no-batching"]}
BACKENDS = ("torch", "onnx")
STARTUP_S = 180.0  # how long a server may take to load its models and answer /health
CLIENT_TIMEOUT_S = 60.0  # per request; the server's own limit is 30 s (504)
SHOWN_FAILURES = 5  # failure messages printed per run
TUNED = {  # flag: (value, --quick value, help)
    "requests": (5_000, 200, "tagger and cipher requests"),
    "translator_requests": (1_000, 50, "translator requests"),
    "warmup": (64, 8, "untimed requests per model first"),
    "max_seconds": (300.0, 60.0, "time limit per run"),
    "concurrency": (32, 32, "requests in flight"),
}


def spent(after: tuple, before: tuple) -> tuple[float | None, ...]:
    """``after - before`` item by item, None where either is unknown."""
    return tuple(
        None if a is None or b is None else a - b for a, b in zip(after, before, strict=True)
    )


def start_server(dirs: dict[str, Path], backend: str, mode: str, device: str, log: Path) -> tuple:
    """A server subprocess with ``dirs`` on ``backend``, batching ``mode``, and its URL, once
    /health answers; its output goes to ``log``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    argv = [sys.executable, "-m", "rnnkit", "serve", "--backend", backend, "--device", device]
    argv += [f"--model={name}={path}" for name, path in dirs.items()]
    argv += ["--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1], "--log-level", "warning"]
    with log.open("wb") as out:
        server = subprocess.Popen([*argv, *MODES[mode]], stdout=out, stderr=out, cwd=bench.REPO)
    deadline = time.monotonic() + STARTUP_S
    while server.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return server, url
        time.sleep(0.2)
    stop(server)
    raise RuntimeError(f"the server did not answer /health; its log:\n{tail(log)}")


def stop(server: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not gone after 15 s."""
    server.terminate()
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def tail(log: Path) -> str:
    """The last lines of a server's log, for an error message."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""


# ------------------------------------------------------------------------------------ load
@dataclass
class Run:
    """One model under load on one backend in one mode (or a warm-up)."""

    model: str
    backend: str = ""
    mode: str = ""
    requests: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stopped: bool = False  # by the time limit, before the count
    rss: tuple[int | None, int | None] = (None, None)  # KiB, before the warm-up, after the load
    cpu: tuple[float | None, float | None] = (None, None)  # s during the load: server, client

    @property
    def answered(self) -> int:
        """Requests answered with one output."""
        return len(self.latencies)

    @property
    def per_second(self) -> float:
        """Answered requests per second of the run."""
        return self.answered / self.seconds if self.seconds > 0 else math.nan

    @property
    def failed(self) -> int:
        """Requests that failed."""
        return len(self.failures)

    @property
    def cpu_ms(self) -> float:
        """The server's CPU milliseconds per answered request (which other jobs on a shared
        machine disturb less than wall time); nan where unknown."""
        server = self.cpu[0]
        return math.nan if server is None or not self.answered else server / self.answered * 1e3

    def ms(self, q: float) -> float:
        """The ``q`` quantile of the latencies (nearest rank) in ms; nan without any."""
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1e3 if ordered else math.nan

    def cores(self, cpu: float | None) -> str:
        """CPU seconds per wall second of the run."""
        return "?" if cpu is None or self.seconds <= 0 else f"{cpu / self.seconds:.2f}"

    def shout(self) -> None:
        """Its failures, loudly, on stderr."""
        progress(f"!!! {self.failed:,} FAILED: {self.model}, {self.backend}, batching {self.mode}")
        for message in self.failures[:SHOWN_FAILURES]:
            progress(f"!!!   {message}")

    async def load(
        self, url: str, server: subprocess.Popen, concurrency: int, limit_s: float
    ) -> Run:
        """Send ``self.requests`` one-input predict requests, ``concurrency`` at a time, until
        they are sent, ``limit_s`` has passed or the server has exited."""
        texts, sent, start = INPUTS[self.model](), 0, time.perf_counter()
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(
            base_url=url, limits=limits, timeout=CLIENT_TIMEOUT_S
        ) as client:

            async def worker() -> None:
                nonlocal sent
                while sent < self.requests and server.poll() is None:
                    if time.perf_counter() - start >= limit_s:
                        self.stopped = True
                        return
                    text, sent, sent_at = texts[sent % len(texts)], sent + 1, time.perf_counter()
                    try:  # every exception is a failed request
                        path = f"/v1/models/{self.model}/predict"
                        reply = await client.post(path, json={"inputs": [text]})
                        if reply.status_code != 200 or len(reply.json().get("outputs", [])) != 1:
                            self.failures.append(f"HTTP {reply.status_code}: {reply.text[:200]}")
                        else:
                            self.latencies.append(time.perf_counter() - sent_at)
                    except Exception as err:
                        self.failures.append(f"{type(err).__name__}: {err}")

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        self.seconds = time.perf_counter() - start
        return self


def bench_server(
    backend: str, mode: str, dirs: dict[str, Path], args: argparse.Namespace, scratch: Path
) -> tuple[list[Run], int | None]:
    """Start a server on ``backend`` in ``mode``, load each model in turn, stop it; the runs,
    and the server's peak memory (KiB)."""
    progress(f"== backend {backend}, batching {mode}: starting the server")
    log = scratch / f"{backend}-{mode}.log"
    server, url = start_server(dirs, backend, mode, args.device, log)
    runs = []

    def cpu() -> tuple[float | None, float | None]:
        return bench.cpu_seconds(server.pid), bench.cpu_seconds()

    try:
        for name in MODELS:
            count = args.translator_requests if name == "translator" else args.requests
            rss_before = bench.memory_kib(server.pid)
            warm = Run(name, requests=args.warmup).load(url, server, args.concurrency, 60)
            if (warm := asyncio.run(warm)).failures:
                raise RuntimeError(f"warm-up of {name} failed: {warm.failures[0]}")
            before, run = cpu(), Run(name, backend, mode, count)
            asyncio.run(run.load(url, server, args.concurrency, args.max_seconds))
            run.rss = (rss_before, bench.memory_kib(server.pid))
            run.cpu = spent(cpu(), before)
            runs.append(run)
            progress(f"{name}: {run.per_second:,.0f} req/s, p99 {run.ms(0.99):.1f} ms, "
                     f"{run.failed} failed")  # fmt: skip
            if run.failures:
                run.shout()
            if server.poll() is not None:
                raise RuntimeError(f"the server died during the {name} run:\n{tail(log)}")
        peak = bench.memory_kib(server.pid, "VmHWM")
    finally:
        stop(server)
    return runs, peak


# ---------------------------------------------------------------------------------- report
Key = tuple[str, str, str]  # model, backend, mode


def mib(kib: int | None) -> str:
    """KiB as whole MiB, or '?'."""
    return "?" if kib is None else f"{kib / 1024:,.0f}"


def rate(ours: Run, theirs: Run) -> str:
    """``ours``'s requests/s over ``theirs``'s, as ``2.15×``."""
    return bench.ratio(ours.per_second, theirs.per_second)


def failed_cell(got: list[Run]) -> str:
    """Failure counts, bold when any."""
    cell = " / ".join(str(r.failed) for r in got)
    return f"**{cell}**" if any(r.failed for r in got) else cell


def backends_table(runs: dict[Key, Run], args: argparse.Namespace) -> list[str]:
    """One row per model and batching mode, one column group per backend (and onnx/torch)."""
    both, names, rows = len(args.backends) == 2, " / ".join(args.backends), []
    for mode in args.modes:
        for name in MODELS:
            got = [runs[name, b, mode] for b in args.backends]
            rows.append(
                [name, mode, f"{got[0].requests:,} × {args.concurrency}"]
                + [f"{r.per_second:,.0f}" for r in got]
                + ([f"**{rate(got[1], got[0])}**"] if both else [])
                + [" / ".join(f"{r.ms(0.5):.1f}" for r in got),
                   " / ".join(f"{r.ms(0.99):.1f}" for r in got),
                   " / ".join(f"{r.cpu_ms:.2f}" for r in got),
                   failed_cell(got), " / ".join(mib(r.rss[1]) for r in got)]
            )  # fmt: skip
    head = ["model", "batching", "requests × concurrency", *(f"req/s {b}" for b in args.backends)]
    head += ["onnx/torch"] * both + [
        f"p50 ms {names}", f"p99 ms {names}", f"server CPU ms per request {names}",
        f"failed {names}", f"server RSS MiB after, {names}",
    ]  # fmt: skip
    return bench.table(head, rows, left=2)


def modes_table(runs: dict[Key, Run], backend: str, concurrency: int) -> list[str]:
    """Batching on vs off on one backend."""
    rows = []
    for name in MODELS:
        on, off = runs[name, backend, "on"], runs[name, backend, "off"]
        rows.append(
            f"{name} | {on.requests:,} × {concurrency} | {on.per_second:,.0f} | "
            f"{off.per_second:,.0f} | **{rate(on, off)}** | {on.ms(0.5):.1f} / {off.ms(0.5):.1f}"
            f" | {on.ms(0.99):.1f} / {off.ms(0.99):.1f} | {failed_cell([on, off])} | "
            f"{mib(on.rss[0])} → {mib(on.rss[1])} | {mib(off.rss[0])} → {mib(off.rss[1])}"
        )
    head = (
        "model | requests × concurrency | req/s on | req/s off | on/off | p50 ms on / off "
        "| p99 ms on / off | failed on / off | server RSS MiB on (before → after) | off"
    )
    return bench.table(head, rows)


def report(
    runs: dict[Key, Run], peaks: dict, dirs: dict[str, Path], others: float | None, args: Any
) -> str:
    """The markdown report."""
    omp = os.environ.get("OMP_NUM_THREADS")
    machine = (
        f"Python {platform.python_version()}, uvicorn {bench.version('uvicorn')}, fastapi "
        f"{bench.version('fastapi')}, httpx {bench.version('httpx')}, onnxruntime "
        f"{bench.version('onnxruntime')}; server device {args.device}, server torch threads "
        + (f"{omp} (OMP_NUM_THREADS)" if omp else "its default")
        + ", onnxruntime intra-op threads the same"
    )
    title = f"Serve benchmark: `rnnkit serve`, backends {' vs '.join(args.backends)}, "
    title += f"micro-batching {' vs '.join(args.modes)}"
    lines = bench.header(title, args, others, machine, __doc__)
    if failed := sum(r.failed for r in runs.values()):
        lines.append(f"- **{failed:,} requests FAILED**: the figures below do not count them")
    if stopped := [f"{k[0]} ({k[1]}, {k[2]})" for k, r in runs.items() if r.stopped]:
        lines.append(f"- **stopped at --max-seconds {args.max_seconds:g}**: {', '.join(stopped)}")
    given = args.models_from or any(getattr(args, n) for n in MODELS)
    lines += [
        f"- models: {bench.models_line(dirs, given)}; server limits at their defaults (batching "
        "on: at most 64 inputs per predict call, 2 ms wait for stragglers)",
        f"- load: {args.concurrency} connections, {args.warmup} untimed requests per model "
        f"first, at most {args.max_seconds:g} s per run; req/s over the run's wall time; server "
        "CPU ms per request: its CPU time during the timed load over the requests answered; "
        "RSS: the server's VmRSS (before its warm-up → after)",
        "",
        *backends_table(runs, args),
        "",
    ]
    for backend in args.backends if len(args.modes) == 2 else []:
        lines += [f"Batching on vs off, backend {backend}:", ""]
        lines += [*modes_table(runs, backend, args.concurrency), ""]
    lines.append("- CPU during each timed load, in cores, server and this load generator:")
    for (backend, mode), peak in peaks.items():
        parts = "; ".join(
            f"{r.model} {r.answered:,} in {r.seconds:.1f} s (server "
            f"{r.cores(r.cpu[0])}, client {r.cores(r.cpu[1])})"
            for r in (runs[n, backend, mode] for n in MODELS)
        )
        lines.append(
            f"  - backend {backend}, batching {mode}: {parts}; server peak {mib(peak)} MiB"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked."""
    smoke = "a few hundred requests"
    parser = bench.parser(__doc__, smoke, threads=False, tuned=TUNED, device="cpu")
    parser.add_argument("--backends", type=bench.choices(BACKENDS), default=list(BACKENDS),
                        help="server backends to compare (torch,onnx)")  # fmt: skip
    parser.add_argument("--modes", type=bench.choices(tuple(MODES)), default=list(MODES),
                        help="micro-batching on, off or both (on,off)")  # fmt: skip
    parser.add_argument("--models-from", metavar="DIR", help="take (or train) tiny models here")
    for name, task in MODELS.items():
        parser.add_argument(f"--{name}", metavar="DIR", help=f"a trained {task} model to serve")
    args = bench.finish(parser, parser.parse_args(argv))
    if "onnx" in args.backends and args.device != "cpu":
        parser.error("--backends onnx runs on the CPU: give --device cpu")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit status."""
    args = parse_args(argv)
    if "onnx" in args.backends and not bench.needs("onnx", "onnxruntime"):
        return 2
    runs: dict[Key, Run] = {}
    peaks: dict[tuple[str, str], int | None] = {}
    with tempfile.TemporaryDirectory(prefix="rnnkit-bench-serve-") as tmp:
        root = Path(args.models_from).expanduser().resolve() if args.models_from else Path(tmp)
        dirs = bench.model_dirs({n: getattr(args, n) for n in MODELS}, MODELS, root)
        before = bench.cpu_ticks()
        try:
            for mode in args.modes:
                for backend in args.backends:
                    found, peaks[backend, mode] = bench_server(backend, mode, dirs, args, Path(tmp))
                    runs.update(((r.model, backend, mode), r) for r in found)
        except RuntimeError as err:
            progress(f"error: {err}")
            return 2
    others = bench.others_share(before)  # the servers, stopped and waited for, are not others
    text = report(runs, peaks, dirs, others, args)
    if failed := [r for r in runs.values() if r.failed]:
        for run in failed:
            run.shout()
        bench.publish(text, None)
        progress("!!! requests failed; nothing published !!!")
        return 1
    bench.publish(text, args.target)
    return 0


if __name__ == "__main__":
    bench.run(main)
