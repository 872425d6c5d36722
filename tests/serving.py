"""A real uvicorn server on loopback for tests: started in a thread, called over HTTP, stopped."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from rnnkit.serve.connections import uvicorn_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 until the block ends, with the connection
    bounds of its ServeConfig as ``rnnkit serve`` sets them; yields its base URL."""
    port = free_port()
    config = uvicorn_config(app, app.state.config, host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    wait_until_up(base)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_until_up(base: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no server at {base} after {seconds:g} s")
        time.sleep(0.05)
