"""Benchmark: the ONNX export in onnxruntime against the PyTorch model it came from.

The tagger and the cipher model are exported by ``rnnkit.export.export_onnx`` and answer the
same prebuilt batches (``--batches``; tensorising not timed) in ``onnxruntime`` (CPU provider)
and in PyTorch (``Tagger.decode``, ``CipherNet.decode`` under ``no_grad``); both must return
the same ids. Calls are timed interleaved; reported: median ms per batch and the speed-up.
``--threads`` sets torch's and onnxruntime's intra-op threads alike. Models: the tiny ones of
``bench/common.py``, or ``--tagger DIR`` / ``--cipher DIR``.

    .venv/bin/python bench/export.py                    # tiny models, under a minute
    .venv/bin/python bench/export.py --tagger runs/uner-ner --cipher runs/rot13

Needs onnx and onnxruntime.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import common as bench
import numpy as np
import torch
from common import progress, rot13_ciphertexts, tagger_sentences

MODELS = {"tagger": "tag", "cipher": "cipher"}  # report name → task
SPEEDUP = "speed-up (PyTorch / onnxruntime)"
TUNED = {"seconds": (2.0, 0.1, "timed seconds per case and side")}  # (value, --quick, help)


# ---------------------------------------------------------------------------------- timing
@dataclass
class Case:
    """One model at one batch size: both sides' calls and their timings."""

    model: str
    batch: int
    tokens: int  # real tokens (words or symbols) in the batch
    torch: Callable[[], Any]
    ort: Callable[[], Any]
    torch_ms: float = float("nan")  # median
    ort_ms: float = float("nan")


def ort_session(path: str, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def build_cases(
    model: str, inputs: list, prepare: Callable, output: str, session: Any, args: argparse.Namespace
) -> list[Case]:
    """One case per ``--batches`` size: ``prepare(rows)`` gives PyTorch's call, onnxruntime's
    feeds and the real tokens; batch 1 is one mid-length input, larger ones cycle through."""
    middle, cases = sorted(inputs, key=len)[len(inputs) // 2], []
    for size in args.batches:
        rows = [middle] if size == 1 else [inputs[i % len(inputs)] for i in range(size)]
        run_torch, feeds, tokens = prepare(rows)

        def run_ort(feeds: dict = feeds) -> Any:
            return session.run([output], feeds)[0]

        _same(model, size, run_torch().numpy(), run_ort())
        cases.append(Case(model, size, tokens, run_torch, run_ort))
    return cases


def tagger_cases(task: Any, path: str, args: argparse.Namespace, threads: int) -> list[Case]:
    session = ort_session(path, threads)
    names = [i.name for i in session.get_inputs()]

    def prepare(rows: list) -> tuple[Callable, dict, int]:
        batch = task.make_batch(rows, with_tags=False)
        feeds = {n: batch[n].numpy() for n in names}
        return partial(torch.no_grad()(task.model.decode), batch), feeds, int(batch["mask"].sum())

    sentences = [s.split() for s in tagger_sentences()]
    return build_cases("tagger", sentences, prepare, "tags", session, args)


def cipher_cases(task: Any, path: str, args: argparse.Namespace, threads: int) -> list[Case]:
    from rnnkit.data.batching import pad
    from rnnkit.data.ciphers import normalise

    unknown = "-" if "-" in task.alphabet else task.alphabet[-1]  # as rnnkit reads foreign text
    texts = [normalise(t, task.alphabet, unknown) for t in rot13_ciphertexts(64)]

    def prepare(rows: list) -> tuple[Callable, dict, int]:
        ids, mask = pad([task.vocab.encode(t) for t in rows])
        feeds = {"ids": ids.numpy(), "mask": mask.numpy()}
        return partial(torch.no_grad()(task.model.decode), ids, mask), feeds, int(mask.sum())

    return build_cases("cipher", texts, prepare, "decoded", ort_session(path, threads), args)


def _same(model: str, size: int, ours: np.ndarray, theirs: np.ndarray) -> None:
    if ours.shape != theirs.shape or not (ours == theirs).all():
        raise SystemExit(f"{model}, batch {size}: onnxruntime's ids differ from PyTorch's")


def run_cases(cases: list[Case], seconds: float) -> None:
    """Time both sides of every case, interleaved (``bench.medians``)."""
    for c in cases:
        times = bench.medians({"torch": c.torch, "ort": c.ort}, seconds)
        c.torch_ms, c.ort_ms = times["torch"].median * 1e3, times["ort"].median * 1e3
        progress(
            f"  {c.model:<7} batch {c.batch:>3}: PyTorch {c.torch_ms:8.3f} ms, "
            f"onnxruntime {c.ort_ms:8.3f} ms, speed-up {c.torch_ms / c.ort_ms:.2f}x"
        )


# ---------------------------------------------------------------------------------- report
def report(
    cases: list[Case],
    exports: dict[str, dict],
    dirs: dict[str, Path],
    others: float | None,
    args: argparse.Namespace,
) -> str:
    threads = "set by --threads" if args.threads is not None else "torch's default"
    models = bench.models_line(dirs, bool(args.tagger or args.cipher))
    exported = "; ".join(
        f"{name} {r['graphs'][0]['bytes'] / 1024:,.0f} KiB, largest |ONNX - PyTorch| "
        f"{r['graphs'][0]['max_abs_diff']:.1g}"
        for name, r in exports.items()
    )
    machine = (
        f"Python {platform.python_version()}, onnxruntime "
        f"{bench.version('onnxruntime')}, onnx {bench.version('onnx')}; device cpu, float32; "
        f"torch threads {torch.get_num_threads()} ({threads}), onnxruntime intra-op threads "
        f"{args.ort_threads}, inter-op 1"
    )
    lines = [
        *bench.header("ONNX export benchmark: onnxruntime vs PyTorch", args, others, machine),
        f"- models: {models}; exported by `rnnkit.export.export_onnx` (TorchScript exporter, "
        f"opset {next(iter(exports.values()))['opset']}, parity check on): {exported}",
        "- PyTorch: `Tagger.decode(batch)` / `CipherNet.decode(ids, mask)` under `torch.no_grad()`"
        "; onnxruntime: `session.run` of the exported graph (CPU provider, default optimisations)"
        " on the same tensors; both return the same ids (checked)",
        "- inputs: tagger, English sentences of 4-12 words with people and places; cipher, ROT13 "
        "ciphertexts of 16-32 symbols; batch 1 is one mid-length input; tensorising the text is "
        "not timed",
        f"- timing: median ms per batch, `Timer.blocked_autorange` for {args.seconds:g} s per "
        "case and side in 3 interleaved rounds; speed-up = PyTorch ms / onnxruntime ms",
        "",
        *bench.table(
            ["model", "batch", "tokens", "PyTorch ms", "onnxruntime ms", SPEEDUP],
            (
                [
                    c.model,
                    c.batch,
                    f"{c.tokens:,}",
                    f"{c.torch_ms:.3f}",
                    f"{c.ort_ms:.3f}",
                    f"**{c.torch_ms / c.ort_ms:.2f}×**",
                ]
                for c in cases
            ),  # fmt: skip
        ),
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = bench.parser(
        __doc__, "a few calls per case, a few seconds", threads=False, tuned=TUNED
    )
    parser.add_argument("--batches", default=[1, 64], type=bench.int_list, help="sizes (1,64)")
    parser.add_argument(
        "--threads", type=int, help="torch and onnxruntime intra-op threads (torch's default)"
    )
    parser.add_argument("--tagger", metavar="DIR", help="a trained tag model")
    parser.add_argument("--cipher", metavar="DIR", help="a trained cipher model")
    return bench.finish(parser, parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not bench.needs("onnx", "onnxruntime"):
        return 2
    import rnnkit
    from rnnkit.export import export_onnx

    threads = args.threads if args.threads is not None else torch.get_num_threads()
    args.ort_threads = threads
    progress(f"torch and onnxruntime threads {threads}")
    builders = {"tagger": tagger_cases, "cipher": cipher_cases}
    with tempfile.TemporaryDirectory(prefix="rnnkit-bench-export-") as tmp:
        scratch = Path(tmp)
        dirs = bench.model_dirs({n: getattr(args, n) for n in MODELS}, MODELS, scratch)
        exports, cases = {}, []
        for name, directory in dirs.items():
            started = time.perf_counter()
            exports[name] = export_onnx(directory, scratch / f"{name}.onnx")
            progress(f"exported and checked {name} in {time.perf_counter() - started:.1f} s")
            task = rnnkit.load(directory)
            path = exports[name]["graphs"][0]["path"]
            cases += builders[name](task, path, args, threads)
        torch.set_num_threads(threads)
        before = bench.cpu_ticks()
        run_cases(cases, args.seconds)
        others = bench.others_share(before)
    bench.publish(report(cases, exports, dirs, others, args), args.target)
    return 0


if __name__ == "__main__":
    bench.run(main)
