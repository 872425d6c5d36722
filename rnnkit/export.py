"""``rnnkit export --format onnx``: trained models as ONNX graphs, checked against PyTorch.

A task exports when it has ``onnx_plan()`` (:class:`rnnkit.tasks.base.Exportable`): the graphs
(the module traced, example inputs, the inputs and outputs by name with their axes) and the
check against the task's own PyTorch path. This module knows no task: it traces, declares the
shapes, checks, writes and reports. Every batch, length and count axis is dynamic; padding is
given by boolean masks, True on real tokens. One graph is written to ``OUT``; several to
``OUT.NAME.onnx`` each.

The exporter is the TorchScript-based one (``dynamo=False``): the dynamo exporter fixed the
traced length into the shapes of LSTM outputs and needed a private scan op for Viterbi (see
docs/scale.md, "Export to ONNX"). Packing does not export, so the recurrent layers of
``rnnkit.nn`` run :func:`rnnkit.nn.encoder.unpacked` while exported, the same weights over the
padded batch. Unless ``check=False``, each export runs in onnxruntime on the batches of
:data:`CHECK_LENGTHS`, shaped unlike the trace, against PyTorch: floats within
:data:`TOLERANCE`, decoded ids exactly, every array in its declared shape, or nothing is
written.
"""

from __future__ import annotations

import argparse
import inspect
import io
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rnnkit.errors import RnnkitError
from rnnkit.tasks.base import OnnxGraph, OnnxPlan, RunGraph

MIN_OPSET, MAX_OPSET, DEFAULT_OPSET = 17, 20, 17  # 20: the TorchScript exporter's newest
TOLERANCE = 1e-4  # largest absolute difference from PyTorch a float output may have
EXPORTER = "torchscript"
# Lengths of the traced batch and of the three check batches. They differ in batch size and
# length, so a graph that kept a traced size fixed fails its check; the check batches mix
# lengths (one token included), so that padding must be handled right.
TRACE_LENGTHS = (4, 2, 3)
CHECK_LENGTHS = ((7,), (9, 1, 5, 2, 8), (1,))  # the last: Viterbi's loops run zero times


class ExportError(RnnkitError):
    """A model that cannot be exported, or an export that fails its parity check."""


# ------------------------------------------------------------------- helpers for the plans
@dataclass
class Samples:
    """Token streams to cut trace and check batches from, and where they came from."""

    rows: list[list[Any]]
    source: str

    def cut(self, lengths: Sequence[int], shift: int = 0) -> list[list[Any]]:
        """Rows of exactly ``lengths`` tokens, each cut from another place of the rows joined
        end to end (so a row may span two sentences); ``shift`` moves every cut."""
        stream = [token for row in self.rows for token in row]
        while len(stream) < max(lengths, default=0):  # a short text: read it again
            stream = stream + stream
        out, at = [], 7 * shift
        for n in lengths:
            start = at % (len(stream) - n + 1)
            out.append(stream[start : start + n])
            at += n + 5
        return out


def vocab_samples(itos: Sequence[Any], first: int, extra: Sequence[str] = ()) -> Samples:
    """Random tokens of a vocabulary (ids ``first`` and up), with ``extra`` ones mixed in."""
    generator = torch.Generator().manual_seed(0)
    words = list(itos[first:]) or list(itos)
    picks = torch.randint(len(words), (200,), generator=generator).tolist()
    row = [words[i] for i in picks]
    for i, token in enumerate(extra):
        row.insert(3 + 11 * i, token)
    return Samples([row], "tokens drawn from the model's vocabulary")


def check_samples(
    read: Callable[[], list[list[Any]]], fallback: Callable[[], Samples], data: bool = True
) -> Samples:
    """Token rows from the recipe's data (``read``); ``fallback``'s when the data is not
    readable here (a model directory copied to another machine) or ``data`` is False."""
    try:
        rows = [r for r in read() if r] if data else []
    except (RnnkitError, OSError):
        rows = []
    samples = Samples(rows, "the recipe's dev data") if rows else fallback()
    if not any(samples.rows):
        raise ExportError("no tokens to check the export with (an empty vocabulary?)")
    return samples


def one_graph_plan(
    module: nn.Module,
    forward: Callable[[dict[str, torch.Tensor]], Any],
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    samples: Samples,
    batch: Callable[[list[list[Any]]], dict[str, torch.Tensor]],
    ids: tuple[str, ...] = (),
    reference: Callable[[dict[str, torch.Tensor]], Any] | None = None,
) -> OnnxPlan:
    """The plan of a model of one graph, ``model`` (``forward`` with ``module``'s weights), that
    reads a batch: traced on rows cut from ``samples`` by :data:`TRACE_LENGTHS`, checked on each
    of :data:`CHECK_LENGTHS` against ``reference(batch)``, the task's PyTorch outputs in the
    same order; by default ``forward`` itself run by PyTorch, where recurrent layers pack."""
    example = batch(samples.cut(TRACE_LENGTHS))
    graph = OnnxGraph("model", module, forward, inputs, outputs, example, ids)

    def expected(b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """PyTorch's outputs for batch ``b``, by output name."""
        found = (reference or forward)(b)
        return dict(zip(outputs, found if isinstance(found, tuple) else (found,), strict=True))

    def check(run: RunGraph) -> list[str]:
        """Run the graph on batches of :data:`CHECK_LENGTHS` against PyTorch; their shapes."""
        shown = []
        for shift, lengths in enumerate(CHECK_LENGTHS, 1):
            b = batch(samples.cut(lengths, shift))
            run("model", b, expected(b))
            shown.append(batch_shape(lengths))
        return shown

    return OnnxPlan([graph], check, samples.source)


def batch_shape(lengths: Sequence[int]) -> str:
    """How the report shows a check batch: ``"5 of length 9/1/5/2/8"``."""
    return f"{len(lengths)} of length {'/'.join(str(n) for n in lengths)}"


# ------------------------------------------------------------------------------ checking
@dataclass
class Exported:
    """One graph exported: its plan, ONNX bytes, and how it compared with PyTorch."""

    graph: OnnxGraph
    data: bytes
    path: Path | None = None
    diffs: dict[str, float] = field(default_factory=dict)
    ids_equal: bool | None = None
    greedy_equal: bool | None = None
    shape_errors: list[str] = field(default_factory=list)

    def failure(self) -> str:
        """Why this graph fails its check, or ``""``. Decoded ids must match exactly; greedy
        choices are reported but not enforced: their scores are checked within the tolerance,
        and two within it of each other may swap places on another runtime."""
        over = {n: d for n, d in self.diffs.items() if not d <= TOLERANCE}
        reasons = [f"{n} by {d:.3g} > {TOLERANCE:g}" for n, d in over.items()]
        reasons += self.shape_errors[:1]
        if self.ids_equal is False:
            reasons.append(f"decoded {', '.join(self.graph.ids)} differ")
        return f"{self.graph.name}: {', '.join(reasons)}" if reasons else ""


def _run(
    session: Any, graph: OnnxGraph, feeds: Mapping[str, torch.Tensor], errors: list[str]
) -> dict[str, np.ndarray]:
    """Outputs of ``graph``'s onnxruntime session by name for the torch tensors of ``feeds``
    that it takes; each array whose shape breaks the declared axes (a fixed size, or one axis
    name with two sizes) is noted in ``errors`` (onnxruntime itself only logs a warning)."""
    arrays = {k: feeds[k].detach().cpu().numpy() for k in graph.inputs}
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(names, arrays), strict=True))
    declared: dict[str, Any] = {**graph.inputs, **graph.outputs}
    sizes: dict[str, int] = {}
    for name, array in [*arrays.items(), *got.items()]:
        axes = declared[name]
        fits = len(axes) == array.ndim
        for axis, size in zip(axes, array.shape, strict=False):
            fixed = isinstance(axis, int)
            fits = fits and size == (axis if fixed else sizes.setdefault(axis, size))
        if not fits:
            errors.append(f"{name} is {tuple(array.shape)}, declared {axes}")
    return got


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """The largest absolute difference of two arrays; equal infinities (banned tokens' -inf)
    count as equal, a shape mismatch as infinite."""
    if a.shape != b.shape:
        return math.inf
    if a.size == 0:
        return 0.0
    a, b = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(a - b)
    diff[(a == b) | (np.isnan(a) & np.isnan(b))] = 0.0
    diff[np.isnan(diff)] = math.inf
    return float(diff.max())


def _compare(done: Exported, got: dict[str, Any], expected: Mapping[str, torch.Tensor]) -> None:
    """Fold one batch's differences into ``done``'s diffs, ids_equal and greedy_equal."""
    for name, want in expected.items():
        want_np = want.detach().cpu().numpy()
        if name in done.graph.ids:
            same = got[name].shape == want_np.shape and bool((got[name] == want_np).all())
            done.ids_equal = same and done.ids_equal is not False
            continue
        done.diffs[name] = max(done.diffs.get(name, 0.0), max_abs_diff(got[name], want_np))
        if name in done.graph.greedy:  # the choice a greedy search would make
            same = bool((got[name].argmax(-1) == want_np.argmax(-1)).all())
            done.greedy_equal = same and done.greedy_equal is not False


def _checker(exported: list[Exported]) -> RunGraph:
    """The ``run(graph, feeds, expected)`` a plan's check calls (see :data:`RunGraph`)."""
    sessions = {e.graph.name: (session(e.data), e) for e in exported}

    def run(name: str, feeds: Mapping, expected: Mapping) -> dict[str, torch.Tensor]:
        """Graph ``name``'s onnxruntime outputs for ``feeds``, compared with ``expected``."""
        sess, done = sessions[name]
        got = _run(sess, done.graph, feeds, done.shape_errors)
        _compare(done, got, expected)
        return {k: torch.from_numpy(v) for k, v in got.items()}

    return run


def session(data: bytes, threads: int = 1) -> Any:
    """An onnxruntime CPU session of ONNX bytes: ``threads`` intra-op threads (1 for the
    check's small batches: the machine may be shared), one inter-op thread, errors only.

    The intra-op threads sleep between calls instead of spinning (onnxruntime's default): a
    server calls its graphs many times a second for small batches, and spinning threads took
    the CPU from its event loop (on a shared 2-core machine, ``rnnkit serve --backend onnx``
    answered 1.6-1.8x the requests/s of the tiny test models without spinning as with it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------ exporting
class _Traced(nn.Module):
    """What the exporter traces: ``graph.forward`` called with the inputs positionally."""

    def __init__(self, graph: OnnxGraph):
        super().__init__()
        self.module, self.graph = graph.module, graph  # the module: its weights are the graph's

    def forward(self, *inputs: torch.Tensor) -> Any:
        """The graph's inputs in order → its outputs."""
        return self.graph.forward(dict(zip(self.graph.inputs, inputs, strict=True)))


def _export_graph(graph: OnnxGraph, opset: int) -> bytes:
    """ONNX bytes of one graph, by the TorchScript-based exporter (see the module docstring)."""
    buffer = io.BytesIO()
    kwargs: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the default from torch 2.9 on
    dynamic_axes = {
        name: {i: a for i, a in enumerate(axes) if isinstance(a, str)}
        for name, axes in {**graph.inputs, **graph.outputs}.items()
    }
    # in eval mode: the exporter leaves every module in the mode the root had
    traced = _Traced(graph).eval()
    with warnings.catch_warnings(), torch.no_grad():
        # the exporter warns about its deprecation and about LSTMs without initial states
        # (which get zeros of the dynamic batch size; the parity check covers it)
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                traced, tuple(graph.example[n] for n in graph.inputs), buffer,
                input_names=list(graph.inputs), output_names=list(graph.outputs),
                dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True,
                **kwargs,
            )  # fmt: skip
        except torch.onnx.errors.OnnxExporterError as err:  # an operator it cannot write
            what = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise ExportError(f"{graph.name}: torch.onnx cannot export it ({what})") from None
    return _declare_shapes(buffer.getvalue(), graph)


def _declare_shapes(data: bytes, graph: OnnxGraph) -> bytes:
    """The model with its inputs and outputs declared as ``graph`` specifies them, checked.

    The exporter's own shape inference can name a fixed size as a dynamic axis, or one axis
    as another (it declared a translation encoder's ``feed`` ``(batch, source)``): the
    declared shapes are replaced by the plan's, the intermediate shape hints it wrote are
    dropped (onnxruntime infers its own), and ONNX's checker then runs full shape inference,
    which refuses a plan that the graph contradicts.
    """
    import onnx

    model = onnx.load_from_string(data)
    spec = {**graph.inputs, **graph.outputs}
    for value in [*model.graph.input, *model.graph.output]:
        axes = spec.get(value.name)
        dims = value.type.tensor_type.shape.dim
        if axes is None or len(dims) != len(axes):
            raise ExportError(f"{graph.name}: {value.name} is not the tensor its plan says")
        for dim, axis in zip(dims, axes, strict=True):
            dim.Clear()
            if isinstance(axis, str):
                dim.dim_param = axis
            else:
                dim.dim_value = axis
    del model.graph.value_info[:]
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"{graph.name}: the exported graph is not valid ONNX: {first}") from None
    return model.SerializeToString()


def _describe(data: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The inputs and outputs an ONNX model declares: name, element type, shape (axis names
    for dynamic dimensions)."""
    import onnx

    model = onnx.load_from_string(data)

    def one(value: Any) -> dict[str, Any]:
        """One input or output: its name, NumPy dtype name and shape (axis names or sizes)."""
        t = value.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        return {"name": value.name, "dtype": dtype, "shape": dims}

    initializers = {i.name for i in model.graph.initializer}
    inputs = [one(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [one(v) for v in model.graph.output]


def output_paths(out: str | Path, graphs: Sequence[str]) -> dict[str, Path]:
    """Where each of the named ``graphs`` goes: ``OUT`` itself for one graph; for several,
    ``OUT.NAME.onnx`` each (``OUT`` without a ``.onnx`` suffix)."""
    out = Path(out)
    if len(graphs) == 1:
        return {graphs[0]: out}
    stem = out.with_suffix("") if out.suffix == ".onnx" else out
    return {name: stem.with_name(f"{stem.name}.{name}.onnx") for name in graphs}


def need(package: str, what: str) -> None:
    """Raise :class:`ExportError` naming ``package`` if it is not installed."""
    import importlib

    try:
        importlib.import_module(package)
    except ImportError:
        raise ExportError(f"{what} needs the {package} package (pip install {package})") from None


def export_onnx(
    directory: str | Path, out: str | Path, check: bool = True, opset: int = DEFAULT_OPSET
) -> dict[str, Any]:
    """Export the model in ``directory`` to ONNX at ``out`` (see the module docstring for the
    files), check it against PyTorch unless ``check`` is False, and write it atomically.

    Returns a report: ``task``, ``exporter``, ``opset``, ``checked``, ``tolerance``,
    ``check_data`` and ``check_batches`` (what the check ran on), and ``graphs``: per graph
    its ``name``, ``path``, ``bytes``, ``inputs`` and ``outputs`` (name, dtype, shape),
    ``max_abs_diff`` (the largest absolute difference of its float outputs from PyTorch's,
    None unchecked), ``diffs`` (the same per output), ``ids_equal`` (its decoded ids equal
    PyTorch's; None where it outputs none) and ``greedy_equal`` (its greedy choices equal
    PyTorch's at every checked step; None where it has none).
    Raises :class:`ExportError` (an :class:`~rnnkit.errors.RnnkitError`) for a task without a
    graph, a bad ``opset`` or ``out``, or a failed check; nothing is written then.
    """
    import rnnkit
    from rnnkit.checkpoint import atomic_write_bytes

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"--opset {opset}: from {MIN_OPSET} to {MAX_OPSET}")
    need("onnx", "ONNX export")
    if check:
        need("onnxruntime", "the parity check (skipped by --no-check)")
    task = rnnkit.load(directory, device="cpu")
    exported, shown, source = export_task(task, opset, check)
    paths = output_paths(out, [e.graph.name for e in exported])
    for path in paths.values():
        if path.is_dir():
            raise ExportError(f"--out {path} is a directory; give a file name")
    for done in exported:
        done.path = paths[done.graph.name]
        atomic_write_bytes(done.path, done.data)
    return _report(task.name, opset, check, exported, shown, source)


def export_task(
    task: Any,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    data: bool = True,
    unwritten: str = "nothing written (--no-check writes it anyway)",
) -> tuple[list[Exported], list[str], str]:
    """A loaded ``task``'s graphs exported to ONNX in memory and, unless ``check`` is False,
    compared in onnxruntime with its PyTorch path (see the module docstring); ``data`` False
    checks on tokens drawn from the vocabulary, reading no file. Returns the graphs, the
    shapes of the check batches and where their tokens came from. Raises
    :class:`ExportError` for a task without graphs or a failed check (``unwritten`` says what
    follows from a failure). Export (:func:`export_onnx`) and the ONNX backend
    (:mod:`rnnkit.backends`) both export here."""
    if not callable(getattr(task, "onnx_plan", None)):
        raise ExportError(f"the {task.name} task has no ONNX export (it has no onnx_plan)")
    task.model.eval()
    with torch.no_grad():
        plan = task.onnx_plan(data=data)
    exported = [Exported(g, _export_graph(g, opset)) for g in plan.graphs]
    if not check:
        return exported, [], plan.data
    try:
        with torch.no_grad():
            shown = plan.check(_checker(exported))
    except Exception as err:  # onnxruntime's own exception types
        if not type(err).__module__.startswith("onnxruntime"):
            raise
        what = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ExportError(
            f"onnxruntime cannot run the exported graph ({what}); {unwritten}"
        ) from None
    failed = [e.failure() for e in exported if e.failure()]
    if failed:
        joined = "; ".join(failed)
        raise ExportError(f"the ONNX export differs from PyTorch ({joined}); {unwritten}")
    return exported, shown, plan.data


def _report(
    task: str, opset: int, checked: bool, exported: list[Exported], shown: list[str], source: str
) -> dict[str, Any]:
    """The report :func:`export_onnx` returns (see there)."""
    entries = []
    for e in exported:
        inputs, outputs = _describe(e.data)
        entries.append({
            "name": e.graph.name, "path": str(e.path), "bytes": len(e.data),
            "inputs": inputs, "outputs": outputs,
            "max_abs_diff": max(e.diffs.values(), default=0.0) if checked else None,
            "diffs": dict(e.diffs), "ids_equal": e.ids_equal if checked else None,
            "greedy_equal": e.greedy_equal if checked else None,
        })  # fmt: skip
    return {
        "task": task, "exporter": EXPORTER, "opset": opset, "checked": checked,
        "tolerance": TOLERANCE, "check_data": source if checked else "",
        "check_batches": shown, "graphs": entries,
    }  # fmt: skip


# ------------------------------------------------------------------------------------ CLI
def add_export_parser(sub: Any) -> None:
    """Add ``export`` to the ``rnnkit`` command's subparsers."""
    p = sub.add_parser(
        "export",
        help="export a model to ONNX, checked against PyTorch",
        description="Export a trained model to ONNX (cipher, tag, classify, lm: one step, "
        "translate: OUT.encoder.onnx and OUT.decoder.onnx, or any task with an onnx_plan) and "
        "check it in onnxruntime against PyTorch on batches of several lengths before writing.",
    )
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="output format (onnx)")
    p.add_argument(
        "--out", required=True,
        help="the .onnx file to write; a model of several graphs (translate) writes "
        "OUT.NAME.onnx for each, e.g. OUT.encoder.onnx and OUT.decoder.onnx (OUT without .onnx)",
    )  # fmt: skip
    p.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET,
        help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})",
    )  # fmt: skip
    p.add_argument(
        "--no-check", action="store_true",
        help="write without the onnxruntime-vs-PyTorch parity check (and without onnxruntime)",
    )  # fmt: skip


def cmd_export(args: argparse.Namespace) -> int:
    """``rnnkit export``: export, print what was written and how it compared; 0 on success.
    Errors are raised as :class:`~rnnkit.errors.RnnkitError` for the CLI to print."""
    report = export_onnx(args.model, args.out, check=not args.no_check, opset=args.opset)
    print(format_report(report))
    return 0


def format_report(report: dict[str, Any]) -> str:
    """The report of :func:`export_onnx` as lines for a person."""
    lines = []
    for g in report["graphs"]:
        lines.append(
            f"wrote {g['path']} ({report['task']} {g['name']}, {g['bytes'] / 1024:,.0f} KiB, "
            f"opset {report['opset']}, {report['exporter']} exporter)"
        )
        for kind in ("inputs", "outputs"):
            shown = ", ".join(
                f"{v['name']} {v['dtype']} [{', '.join(str(d) for d in v['shape'])}]"
                for v in g[kind]
            )
            lines.append(f"  {kind}: {shown}")
        if report["checked"]:
            ids = {True: "; ids identical", False: "; ids DIFFER", None: ""}[g["ids_equal"]]
            if g["greedy_equal"] is not None:
                ids += "; greedy choices " + ("identical" if g["greedy_equal"] else "differ")
            lines.append(
                f"  parity with PyTorch: largest |difference| {g['max_abs_diff']:.2g} "
                f"(limit {report['tolerance']:g}){ids}"
            )
    if report["checked"]:
        lines.append(
            f"checked in onnxruntime on {report['check_data']}: batches of "
            + ", ".join(report["check_batches"])
        )
    else:
        lines.append("not checked against PyTorch (--no-check)")
    return "\n".join(lines)


__all__ = [
    "OnnxGraph",
    "OnnxPlan",
    "RunGraph",
    "CHECK_LENGTHS",
    "TRACE_LENGTHS",
    "ExportError",
    "Exported",
    "Samples",
    "add_export_parser",
    "batch_shape",
    "check_samples",
    "cmd_export",
    "export_onnx",
    "export_task",
    "format_report",
    "max_abs_diff",
    "need",
    "one_graph_plan",
    "output_paths",
    "session",
    "vocab_samples",
]
