"""The server's own bounds, against real uvicorn servers on loopback: idle and slow connections
are closed, open connections are capped, a strict request schema, a busy port in one line."""

from __future__ import annotations

import asyncio
import resource
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from rnnkit.serve.app import ServeConfig, create_app
from rnnkit.tasks import load_task
from tests.conftest import run_cli
from tests.serving import free_port, running, wait_until_up

SLOW_HEAD = (
    b"POST /v1/models/cipher/predict HTTP/1.1\r\nhost: test\r\n"
    b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n"
)


@pytest.fixture(scope="module")
def cipher(tiny_models):
    return load_task(tiny_models["cipher"])


def connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def closed_within(sock: socket.socket, seconds: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes ``sock`` (or ``seconds`` pass), and when."""
    start, got = time.monotonic(), b""
    sock.settimeout(0.2)
    while time.monotonic() - start < seconds:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    else:
        raise AssertionError(f"still open after {seconds:g} s (got {got[:80]!r})")
    return got, time.monotonic() - start


def answer(sock: socket.socket) -> bytes:
    """One whole HTTP response from ``sock`` (its body by content-length)."""
    sock.settimeout(5)
    got = b""
    for _ in range(100):
        head, sep, body = got.partition(b"\r\n\r\n")
        if sep:
            length = next(
                int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            )  # fmt: skip
            if len(body) >= length:
                return got
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-response: {got!r}"
        got += chunk
    raise AssertionError(f"no whole response: {got[:200]!r}")


def quiet(sock: socket.socket) -> bool:
    """Whether the server has neither answered on ``sock`` nor closed it (it reads nothing)."""
    sock.settimeout(0.3)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        return True
    except ConnectionResetError:
        pass
    return False


def test_idle_and_slow_connections_are_closed_after_their_timeouts(cipher):
    config = ServeConfig(header_timeout_s=1, read_timeout_s=2, keep_alive_s=1)
    with running(create_app({"cipher": cipher}, config)) as base:
        silent = connect(base)  # connects and never sends a byte
        half = connect(base)  # starts its headers and stops
        half.sendall(b"GET /health HTTP/1.1\r\nhost: test\r\n")
        got, took = closed_within(silent, 5)
        assert got == b"" and 0.5 < took < 3
        got, took = closed_within(half, 5)
        assert got.startswith(b"HTTP/1.1 408 ") or got == b"", got
        assert took < 3

        slow = connect(base)  # complete headers, then a body trickled far too slowly
        slow.sendall(SLOW_HEAD)
        start, sent = time.monotonic(), 0
        while quiet(slow) and time.monotonic() - start < 6:
            try:
                slow.sendall(b" ")
            except OSError:
                break
            sent += 1
        got, _ = closed_within(slow, 2)
        assert time.monotonic() - start < 5 and sent < 1000
        assert got == b"" or got.startswith(b"HTTP/1.1 408 "), got

        kept = connect(base)  # one answered request, then silence: keep-alive's timeout
        kept.sendall(b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n")
        assert answer(kept).startswith(b"HTTP/1.1 200 ")
        got, took = closed_within(kept, 5)
        assert got == b"" and took < 3

        again = connect(base)  # answered, then one byte of a next request: the header timeout
        again.sendall(b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n")
        assert answer(again).startswith(b"HTTP/1.1 200 ")
        again.sendall(b"G")
        got, took = closed_within(again, 5)
        assert took < 3
        for sock in (silent, half, slow, kept, again):
            sock.close()
        assert httpx.get(base + "/health").status_code == 200


def test_past_max_connections_the_longest_idle_connection_makes_room(cipher):
    config = ServeConfig(max_connections=8, header_timeout_s=60)
    with running(create_app({"cipher": cipher}, config)) as base:
        idle = []
        for _ in range(12):
            idle.append(connect(base))
            time.sleep(0.05)  # in order of age
        reply = httpx.post(base + "/v1/models/cipher/predict", json={"inputs": ["URYYB"]})
        assert reply.status_code == 200
        # 12 idle + 1 request on a cap of 8: the 5 oldest went, the newest are still open.
        for sock in idle[:5]:
            assert closed_within(sock, 3)[0] == b""
        assert all(quiet(sock) for sock in idle[-6:])
        for sock in idle:
            sock.close()
    config = ServeConfig(max_connections=2)
    with running(create_app({"cipher": cipher}, config)) as base:
        busy = [connect(base), connect(base)]  # each with a request in progress
        for sock in busy:
            sock.sendall(SLOW_HEAD)
        time.sleep(0.2)
        got, _ = closed_within(connect(base), 3)  # nothing idle to close: the newcomer goes
        assert got.startswith(b"HTTP/1.1 503 ") and b"too many open connections" in got
        assert all(quiet(sock) for sock in busy)
        for sock in busy:
            sock.close()


def test_options_of_the_wrong_json_type_are_refused_by_name(tiny_models):
    models = {name: load_task(tiny_models[name]) for name in ("lm", "translate")}
    with running(create_app(models)) as base:

        def predict(name: str, options: dict) -> httpx.Response:
            body = {"inputs": ["the c"], "options": options}
            return httpx.post(f"{base}/v1/models/{name}/predict", json=body, timeout=30)

        for name, options, field in [
            ("lm", {"length": "5"}, "options.length"),
            ("lm", {"temperature": "0.5"}, "options.temperature"),
            ("lm", {"seed": "3"}, "options.seed"),
            ("translate", {"attention": "no"}, "options.attention"),
            ("translate", {"attention": 0}, "options.attention"),
            ("translate", {"beam": "2"}, "options.beam"),
        ]:
            reply = predict(name, options)
            assert reply.status_code == 422, (options, reply.text)
            assert field in reply.json()["error"]["message"]
        for name, options in [
            ("lm", {"length": 5, "temperature": 1, "seed": 3}),  # an int where a float goes
            ("translate", {"attention": False, "beam": 2}),
        ]:
            assert predict(name, options).status_code == 200, options
    with pytest.raises(Exception, match="options.length"):
        models["lm"].predict(["the c"], {"length": "5"})  # Python's mapping: as strict


def test_the_command_line_still_reads_option_flags_from_text(tiny_models):
    run = run_cli("generate", "--model", str(tiny_models["lm"]), "--prompt", "the c",
                  "--length", "5", "--seed", "3", "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr


def test_a_busy_port_is_one_line_and_exit_2_before_serving(tiny_models):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        run = run_cli("serve", "--model", str(tiny_models["cipher"]), "--port", str(port))
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr.splitlines() == [
        f"rnnkit: error: cannot listen on 127.0.0.1:{port} (address already in use)"
    ]


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2_000:
        pytest.skip(f"the open-file limit ({hard}) cannot hold this test's sockets")
    if soft != resource.RLIM_INFINITY and soft < 4_000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4_000, hard), hard))


def _low_file_limit() -> None:
    """In the server's process: the soft limit many systems start with."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


@pytest.mark.slow
def test_the_server_answers_under_idle_and_slow_connections(tiny_models, tmp_path):
    """1,000 connections that never send, 50 bodies trickled at a byte a second, and 500
    predict requests at concurrency 16 that must all succeed: on a server started with a
    soft open-file limit of 256, which it raises for itself."""
    _raise_file_limit()
    port = free_port()
    cmd = [sys.executable, "-m", "rnnkit", "serve", "--model", f"cipher={tiny_models['cipher']}",
           "--port", str(port), "--header-timeout", "120", "--read-timeout", "120",
           "--log-level", "warning"]  # fmt: skip
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(cmd, stdout=log, stderr=log, preexec_fn=_low_file_limit)
    base = f"http://127.0.0.1:{port}"
    sockets: list[socket.socket] = []
    stop = threading.Event()
    try:
        wait_until_up(base)
        sockets = [connect(base) for _ in range(1_000)]
        slow = [connect(base) for _ in range(50)]
        for sock in slow:
            sock.sendall(SLOW_HEAD)
        sockets += slow

        def trickle() -> None:
            for _ in range(120):  # a byte a second each, for at most two minutes
                for sock in slow:
                    try:
                        sock.sendall(b" ")
                    except OSError:
                        pass
                if stop.wait(1.0):
                    return

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()

        async def load() -> list[int]:
            limits = httpx.Limits(max_connections=16)
            async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
                gate = asyncio.Semaphore(16)

                async def one(i: int) -> int:
                    async with gate:
                        body = {"inputs": [f"URYYB-{i}"]}
                        reply = await client.post("/v1/models/cipher/predict", json=body)
                        return reply.status_code

                calls = asyncio.gather(*(one(i) for i in range(500)))
                return await asyncio.wait_for(calls, timeout=120)

        codes = asyncio.run(load())
        assert codes.count(200) == 500, sorted(set(codes))
        # The idle and slow connections were held open all along (their timeouts are long).
        assert sum(quiet(s) for s in sockets[:: len(sockets) // 20]) >= 18
        stop.set()
        trickler.join(timeout=5)
    finally:
        stop.set()
        for sock in sockets:
            sock.close()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()
    assert "Traceback" not in (tmp_path / "server.log").read_text()
