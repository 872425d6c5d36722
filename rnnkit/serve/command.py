"""``rnnkit serve``: load the models, check the flags, run uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from pathlib import Path
from typing import Any

from rnnkit.errors import RnnkitError

KEY_ENV = "RNNKIT_API_KEY"


def add_serve_parser(sub: Any) -> None:
    from rnnkit.backends import BACKENDS
    from rnnkit.serve.app import ServeConfig

    d = ServeConfig()
    p = sub.add_parser("serve", help="serve models over HTTP, with a web page at /")
    p.add_argument(
        "--model", action="append", required=True, metavar="[NAME=]DIR",
        help="a model directory, optionally named (default name: the directory's); repeatable",
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    p.add_argument(
        "--backend", choices=BACKENDS, default="torch",
        help="what runs the networks: PyTorch, or onnxruntime (graphs exported at load)",
    )  # fmt: skip
    p.add_argument("--max-inputs", type=int, default=d.max_inputs, help="inputs per request")
    p.add_argument("--max-chars", type=int, default=d.max_chars, help="characters per input")
    p.add_argument("--max-body", type=int, default=d.max_body, help="bytes per request body")
    p.add_argument("--timeout", type=float, default=d.timeout_s, help="seconds per request")
    p.add_argument("--no-batching", action="store_true", help="one predict call per request")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="inputs per predict call")
    p.add_argument(
        "--batch-wait-ms", type=float, default=d.batch_wait_ms,
        help="how long a free model waits for more requests to batch with",
    )  # fmt: skip
    p.add_argument("--max-queue", type=int, default=d.max_queue, help="waiting requests per model")
    p.add_argument(
        "--max-generated", type=int, default=d.max_generated,
        help="tokens one request may ask a language model for (inputs × length)",
    )  # fmt: skip
    p.add_argument(
        "--cors-origin", action="append", default=[], metavar="ORIGIN",
        help="allow browser pages from this origin (repeatable; default: CORS off)",
    )  # fmt: skip
    p.add_argument(
        "--api-key-file", metavar="FILE",
        help=f"require this key (first line of FILE; else ${KEY_ENV}) on every request",
    )  # fmt: skip
    p.add_argument(
        "--no-auth", action="store_true", help="allow a non-loopback --host without an API key"
    )
    p.add_argument(
        "--header-timeout", type=float, default=d.header_timeout_s,
        help="seconds a connection has to send a request's headers, from connecting or from "
        "its last answer; then it is closed",
    )  # fmt: skip
    p.add_argument(
        "--read-timeout", type=float, default=d.read_timeout_s,
        help="seconds a connection has to send a whole request (headers and body); then 408",
    )  # fmt: skip
    p.add_argument(
        "--keep-alive", type=float, default=d.keep_alive_s,
        help="seconds of silence after an answer that close the connection",
    )  # fmt: skip
    p.add_argument(
        "--max-connections", type=int, default=d.max_connections,
        help="open connections; past it, the one idle longest is closed",
    )  # fmt: skip
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info"])


def parse_models(specs: list[str]) -> dict[str, Path]:
    """``[NAME=]DIR`` specs → name → directory; names must be unique URL-safe words."""
    models: dict[str, Path] = {}
    for spec in specs:
        name, sep, where = spec.partition("=")
        if not sep or "/" in name:  # no name, or a path with an '=' in it (runs/lr=0.1)
            # The directory's own name, made URL-safe.
            name = re.sub(r"[^A-Za-z0-9._-]", "-", Path(spec).resolve().name)
            where = spec
        if not where:
            raise RnnkitError(f"--model {spec}: no directory after the name")
        if not name or not all(c.isalnum() or c in "-_." for c in name):
            raise RnnkitError(f"--model {spec}: a name is letters, digits, '-', '_' or '.'")
        if name in models:
            raise RnnkitError(f"--model {spec}: two models named {name!r} (use NAME=DIR)")
        models[name] = Path(where)
    return models


def read_api_key(args: argparse.Namespace) -> str | None:
    if args.api_key_file:
        try:
            lines = Path(args.api_key_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise RnnkitError(f"cannot read --api-key-file {args.api_key_file}: {err}") from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise RnnkitError(f"--api-key-file {args.api_key_file} holds no key")
        return key
    return os.environ.get(KEY_ENV) or None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    from rnnkit.serve.app import ServeConfig, create_app
    from rnnkit.serve.connections import fit_file_limit, listen, uvicorn_config
    from rnnkit.tasks import load_task
    from rnnkit.tasks.base import DEFAULT_LIMITS

    key = read_api_key(args)
    if not _is_loopback(args.host) and not key and not args.no_auth:
        raise RnnkitError(
            f"--host {args.host} is reachable from other machines: give --api-key-file FILE "
            f"(or ${KEY_ENV}), or say --no-auth"
        )
    # The tasks' own predict checks bound a call at DEFAULT_LIMITS; the server's are tighter.
    ceiling = {"max_inputs": DEFAULT_LIMITS.max_inputs, "max_chars": DEFAULT_LIMITS.max_chars,
               "max_batch": DEFAULT_LIMITS.max_inputs, "max_body": 2**30, "max_queue": 10**6,
               "max_generated": 10**7, "max_connections": 10**6,
               "port": 65_535}  # fmt: skip
    for flag, high in ceiling.items():
        low = 0 if flag == "port" else 1
        if not low <= getattr(args, flag) <= high:
            raise RnnkitError(f"--{flag.replace('_', '-')} must be from {low} to {high:,}")
    for flag in ("timeout", "header_timeout", "read_timeout", "keep_alive"):
        if not 0 < getattr(args, flag) <= 3600:
            raise RnnkitError(f"--{flag.replace('_', '-')} must be in (0, 3600] seconds")
    if not 0 <= args.batch_wait_ms <= 1000:
        raise RnnkitError("--batch-wait-ms must be in [0, 1000]")
    config = ServeConfig(
        max_inputs=args.max_inputs, max_chars=args.max_chars, max_body=args.max_body,
        timeout_s=args.timeout, batching=not args.no_batching, max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms, max_queue=args.max_queue,
        max_generated=args.max_generated,
        cors_origins=args.cors_origin, api_key=key,
        header_timeout_s=args.header_timeout, read_timeout_s=args.read_timeout,
        keep_alive_s=args.keep_alive, max_connections=args.max_connections,
    )  # fmt: skip
    # Every model is loaded before the server starts: a bad directory is one line, not a 500.
    models = {
        name: load_task(d, device=args.device, backend=args.backend)
        for name, d in parse_models(args.model).items()
    }
    # Room for every connection allowed: idle sockets must not use up the file descriptors.
    config.max_connections = fit_file_limit(config.max_connections)
    import uvicorn

    app = create_app(models, config)
    # Bound here, not by uvicorn: a busy port is one line and exit 2, before "serving".
    sockets = listen(args.host, args.port)
    listed = ", ".join(f"{n} ({t.name})" for n, t in models.items())
    host, port = sockets[0].getsockname()[:2]  # the port that --port 0 picked, too
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    # uvicorn does not say where it listens on sockets it is handed: this line does.
    print(f"rnnkit: serving {listed} at {url}; auth {'on' if key else 'off'}", flush=True)
    server = uvicorn.Server(uvicorn_config(app, config, log_level=args.log_level))
    server.run(sockets=sockets)
    return 0
