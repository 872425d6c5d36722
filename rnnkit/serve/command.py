"""``rnnkit serve``: load the models, check the flags, run uvicorn."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
from pathlib import Path
from typing import Any

from rnnkit.config import bounds_text, from_dict
from rnnkit.errors import ConfigError, RnnkitError

KEY_ENV = "RNNKIT_API_KEY"


def add_serve_parser(sub: Any) -> None:
    """``rnnkit serve``'s flags: models, address and backend, then one per declared setting
    of :class:`~rnnkit.serve.app.ServeConfig`."""
    from rnnkit.backends import BACKENDS
    from rnnkit.serve.app import ServeConfig

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
    for f in dataclasses.fields(ServeConfig):
        if f.metadata.get("help"):
            _add_setting_flag(p, f)
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
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info"])


def _add_setting_flag(p: argparse.ArgumentParser, f: dataclasses.Field) -> None:
    """The flag of a declared ServeConfig field, its value checked as the declaration says."""
    from rnnkit.serve.app import ServeConfig

    if f.default is True:  # a switch on by default: the flag turns it off
        help = f"do not {f.metadata['help']}"
        p.add_argument(f"--no-{f.name}", dest=f.name, action="store_false", help=help)
        return

    def checked(text: str) -> Any:
        try:
            return getattr(from_dict(ServeConfig, {f.name: text}), f.name)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    flag = "--" + f.name.removesuffix("_s").replace("_", "-")
    default = f"{f.default:,}" if isinstance(f.default, int) else f"{f.default:g}"
    help = f"{f.metadata['help']} (default {default}; {bounds_text(f.metadata)})"
    p.add_argument(flag, dest=f.name, type=checked, default=f.default, metavar="N", help=help)


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
    """The key every request must carry: the first line of ``--api-key-file`` (unreadable or
    empty is an error), else ``$RNNKIT_API_KEY``, else None."""
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
    """``rnnkit serve``: check the flags and the key, load every model, then serve."""
    from rnnkit.serve.app import ServeConfig, create_app
    from rnnkit.serve.connections import fit_file_limit, listen, uvicorn_config
    from rnnkit.tasks import load_task

    key = read_api_key(args)
    if not _is_loopback(args.host) and not key and not args.no_auth:
        raise RnnkitError(
            f"--host {args.host} is reachable from other machines: give --api-key-file FILE "
            f"(or ${KEY_ENV}), or say --no-auth"
        )
    if not 0 <= args.port <= 65_535:
        raise RnnkitError(f"--port must be from 0 to 65,535, not {args.port}")
    declared = [f.name for f in dataclasses.fields(ServeConfig) if f.metadata.get("help")]
    config = ServeConfig(
        **{name: getattr(args, name) for name in declared},
        cors_origins=args.cors_origin,
        api_key=key,
    )
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
