"""Benchmark: the ONNX export in onnxruntime against the PyTorch model it came from.

The tagger and the cipher model are exported by ``rnnkit.export.export_onnx`` and answer the
same prebuilt batches (``--batches``; tensorising not timed) in ``onnxruntime`` (CPU provider)
and in PyTorch (``Tagger.decode``, ``CipherNet.decode`` under ``no_grad``); both must return the
same ids. ``--threads`` sets torch's and onnxruntime's intra-op threads alike. Models: the tiny
ones of ``bench/common.py``, or ``--tagger DIR`` / ``--cipher DIR``. Needs onnx, onnxruntime.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import common as bench
import torch
from common import progress, rot13_ciphertexts, tagger_sentences

MODELS = {"tagger": "tag", "cipher": "cipher"}  # report name → task
OUTPUTS = {"tagger": "tags", "cipher": "decoded"}  # the graph output compared
HEAD = "model | batch | tokens | PyTorch ms | onnxruntime ms | speed-up (PyTorch / onnxruntime)"
TUNED = {"seconds": (2.0, 0.1, "timed seconds per case and side")}  # (value, --quick, help)


@dataclass
class Case:
    """One model at one batch size: both sides' calls and their median times."""

    model: str
    batch: int
    tokens: int  # real tokens (words or symbols) in the batch
    torch: Callable[[], Any]
    ort: Callable[[], Any]
    torch_ms: float = float("nan")
    ort_ms: float = float("nan")


def feeders(task: Any, model: str) -> tuple[list, Callable]:
    """A model's inputs, and ``prepare(rows)`` → (PyTorch's call, the batch's tensors by name,
    real tokens) for a batch of them."""
    if model == "tagger":

        def prepare(rows: list) -> tuple[Callable, dict, int]:
            batch = task.make_batch(rows, with_tags=False)
            return partial(task.model.decode, batch), batch, int(batch["mask"].sum())

        return [s.split() for s in tagger_sentences()], prepare
    from rnnkit.data.batching import pad
    from rnnkit.data.ciphers import normalise

    unknown = "-" if "-" in task.alphabet else task.alphabet[-1]  # as rnnkit reads foreign text

    def prepare(rows: list) -> tuple[Callable, dict, int]:
        ids, mask = pad([task.vocab.encode(t) for t in rows])
        return partial(task.model.decode, ids, mask), {"ids": ids, "mask": mask}, int(mask.sum())

    return [normalise(t, task.alphabet, unknown) for t in rot13_ciphertexts(64)], prepare


def build_cases(model: str, task: Any, path: str, args: argparse.Namespace) -> list[Case]:
    """One case per ``--batches`` size; batch 1 is one mid-length input, larger ones cycle
    through the inputs. Both sides must return the same ids."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    output, names = OUTPUTS[model], [i.name for i in session.get_inputs()]
    inputs, prepare = feeders(task, model)
    middle, cases = sorted(inputs, key=len)[len(inputs) // 2], []
    for size in args.batches:
        rows = [middle] if size == 1 else [inputs[i % len(inputs)] for i in range(size)]
        run_torch, tensors, tokens = prepare(rows)
        feeds = {n: tensors[n].numpy() for n in names}
        run_torch = torch.no_grad()(run_torch)
        run_ort = partial(lambda f: session.run([output], f)[0], feeds)
        ours, theirs = run_torch().numpy(), run_ort()
        if ours.shape != theirs.shape or not (ours == theirs).all():
            raise SystemExit(f"{model}, batch {size}: onnxruntime's ids differ from PyTorch's")
        cases.append(Case(model, size, tokens, run_torch, run_ort))
    return cases


def report(cases: list[Case], exports: dict, dirs: dict[str, Path], others, args) -> str:
    """The markdown report."""
    threads = "set by --threads" if args.threads is not None else "torch's default"
    exported = "; ".join(
        f"{name} {r['graphs'][0]['bytes'] / 1024:,.0f} KiB, largest |ONNX - PyTorch| "
        f"{r['graphs'][0]['max_abs_diff']:.1g}"
        for name, r in exports.items()
    )
    machine = (
        f"Python {platform.python_version()}, onnxruntime {bench.version('onnxruntime')}, onnx "
        f"{bench.version('onnx')}; device cpu, float32; torch threads {torch.get_num_threads()} "
        f"({threads}), onnxruntime intra-op threads {torch.get_num_threads()}, inter-op 1"
    )
    rows = [
        [c.model, c.batch, f"{c.tokens:,}", f"{c.torch_ms:.3f}", f"{c.ort_ms:.3f}",
         f"**{c.torch_ms / c.ort_ms:.2f}×**"]
        for c in cases
    ]  # fmt: skip
    title = "ONNX export benchmark: onnxruntime vs PyTorch"
    lines = [
        *bench.header(title, args, others, machine, __doc__),
        f"- models: {bench.models_line(dirs, bool(args.tagger or args.cipher))}; exported by "
        f"`rnnkit.export.export_onnx` (TorchScript exporter, opset "
        f"{next(iter(exports.values()))['opset']}, parity check on): {exported}",
        f"- timing: median ms per batch, `Timer.blocked_autorange` for {args.seconds:g} s per "
        "case and side in 3 interleaved rounds; speed-up = PyTorch ms / onnxruntime ms",
        "",
        *bench.table(HEAD, rows),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit status."""
    parser = bench.parser(__doc__, "a few calls per case, a few seconds", tuned=TUNED)
    parser.add_argument("--batches", default=[1, 64], type=bench.int_list, help="sizes (1,64)")
    parser.add_argument("--tagger", metavar="DIR", help="a trained tag model")
    parser.add_argument("--cipher", metavar="DIR", help="a trained cipher model")
    args = bench.finish(parser, parser.parse_args(argv))
    if not bench.needs("onnx", "onnxruntime"):
        return 2
    import rnnkit
    from rnnkit.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="rnnkit-bench-export-") as tmp:
        dirs = bench.model_dirs({n: getattr(args, n) for n in MODELS}, MODELS, Path(tmp))
        exports, cases = {}, []
        for name, directory in dirs.items():
            exports[name] = export_onnx(directory, Path(tmp) / f"{name}.onnx")
            progress(f"exported and checked {name}")
            path = exports[name]["graphs"][0]["path"]
            cases += build_cases(name, rnnkit.load(directory), path, args)
        before = bench.cpu_ticks()
        for c in cases:
            times = bench.medians({"torch": c.torch, "ort": c.ort}, args.seconds)
            c.torch_ms, c.ort_ms = times["torch"].median * 1e3, times["ort"].median * 1e3
            progress(f"  {c.model} batch {c.batch}: {c.torch_ms:.3f} ms vs {c.ort_ms:.3f} ms")
        others = bench.others_share(before)
    bench.publish(report(cases, exports, dirs, others, args), args.target)
    return 0


if __name__ == "__main__":
    bench.run(main)
