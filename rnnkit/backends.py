"""Backends: what runs a loaded model's network when it predicts, PyTorch or onnxruntime.

``rnnkit.load(DIR, backend="onnx")`` and ``rnnkit serve --backend onnx`` answer through
onnxruntime; ``torch`` (the default) through PyTorch. Either way the task's one predict path
runs: text → tensors, batching, decoding back to text, and any search stay rnnkit's Python
code, shared by both. Only the call of the network itself goes through a seam: a task that can
predict through its exported graphs (its ``onnx_plan``, :class:`rnnkit.tasks.base.Exportable`)
has a ``runner`` attribute, None for PyTorch, or an :class:`OnnxRunner` whose ``run(graph,
feeds)`` the task calls instead of its model, by the graph names of its plan.

Where the graphs come from. They are exported in memory when the model is loaded, by the same
code as ``rnnkit export`` (:func:`rnnkit.export.export_task`: the same graphs, the same
exporter, the same parity check against PyTorch on batches of several lengths, drawn from the
model's vocabulary so that no data file is read), and never written anywhere: a model directory
is only ever read, and no ``.onnx`` file left beside the weights can disagree with them. Loading
takes the export's time on top (tenths of a second for small models, a few seconds for large
ones); a model whose export fails its check is refused with the export's own message.

What is the same. Decoded ids and texts are identical to PyTorch's; probabilities and scores
agree within :data:`TOLERANCE` (both backends compute in float32, in another order of
operations). ``tests/test_onnx_backend.py`` checks it for every task and model kind that has
a runner, in Python and over HTTP.

A task without a runner (one that exports graphs its predict does not use, or none) refuses
``backend="onnx"`` with one line naming the task; nothing falls back silently. The ONNX backend
runs on the CPU, with as many intra-op threads as torch uses (``torch.get_num_threads()`` at
load time), so that the two compare fairly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from rnnkit.errors import ConfigError

BACKENDS = ("torch", "onnx")
TOLERANCE = 1e-5  # largest absolute difference of a probability or a score from PyTorch's


class OnnxRunner:
    """onnxruntime sessions of a task's exported graphs, by graph name."""

    backend = "onnx"

    def __init__(self, graphs: Mapping[str, bytes], inputs: Mapping[str, list[str]], threads: int):
        """graphs: name → ONNX bytes; inputs: name → the graph's input names, in order."""
        from rnnkit.export import session

        self.sessions = {name: session(data, threads) for name, data in graphs.items()}
        self.inputs = {name: list(names) for name, names in inputs.items()}
        self.outputs = {n: [o.name for o in s.get_outputs()] for n, s in self.sessions.items()}
        self.threads = threads

    def run(self, graph: str, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Outputs of ``graph`` by name, as CPU tensors, for ``feeds`` (tensors by name; those
        the graph does not take are left out)."""
        arrays = {name: feeds[name].detach().cpu().numpy() for name in self.inputs[graph]}
        names = self.outputs[graph]
        got = self.sessions[graph].run(names, arrays)
        return {name: torch.from_numpy(array) for name, array in zip(names, got, strict=True)}


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS`; else a :class:`ConfigError`."""
    if backend not in BACKENDS:
        raise ConfigError(f"bad value {backend!r} for backend (choices: {', '.join(BACKENDS)})")
    return backend


def onnx_tasks() -> list[str]:
    """The registered tasks whose predict can run through onnxruntime."""
    from rnnkit.tasks import TASKS, task_class

    return [n for n in TASKS if _serves_onnx(task_class(n))]


def _serves_onnx(task: Any) -> bool:
    """Whether a task (class or object) exports graphs and predicts through a runner."""
    return callable(getattr(task, "onnx_plan", None)) and hasattr(task, "runner")


def use_backend(task: Any, backend: str = "torch") -> Any:
    """Make ``task`` (a loaded model) predict through ``backend``; returns it.

    ``onnx``: export its graphs in memory, check them against PyTorch, and hand its predict a
    :class:`OnnxRunner`. Raises :class:`~rnnkit.errors.ConfigError` for a task without an ONNX
    backend or a model not on the CPU, and :class:`~rnnkit.export.ExportError` for graphs
    that fail their check or a missing onnx/onnxruntime.
    """
    check_backend(backend)
    if backend == "torch":
        if hasattr(task, "runner"):
            task.runner = None
        return task
    from rnnkit.export import DEFAULT_OPSET, export_task, need

    if not _serves_onnx(task):
        raise ConfigError(
            f"the {task.name} task has no ONNX backend (backend onnx serves "
            f"{', '.join(onnx_tasks())}); load it with backend torch"
        )
    device = next(task.model.parameters()).device
    if device.type != "cpu":
        raise ConfigError(f"backend onnx runs on the CPU, not {device}; load it with device cpu")
    need("onnx", "backend onnx")
    need("onnxruntime", "backend onnx")
    task.runner = None  # the check compares the graphs with the PyTorch path
    exported, _, _ = export_task(
        task, DEFAULT_OPSET, check=True, data=False, unwritten="backend onnx refused"
    )
    task.runner = OnnxRunner(
        {e.graph.name: e.data for e in exported},
        {e.graph.name: list(e.graph.inputs) for e in exported},
        torch.get_num_threads(),
    )
    return task


__all__ = ["BACKENDS", "TOLERANCE", "OnnxRunner", "check_backend", "onnx_tasks", "use_backend"]
