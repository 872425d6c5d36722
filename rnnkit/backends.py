"""Backends: what runs a loaded model's network when it predicts, PyTorch or onnxruntime.

The task's one predict path runs either way (text → tensors, batching, search, decoding stay
rnnkit's Python); only the call of the network goes through a seam: a task with an
``onnx_plan`` (:class:`rnnkit.tasks.base.Exportable`) has a ``runner`` attribute, None for
PyTorch, or an :class:`OnnxRunner` whose ``run(graph, feeds)`` it calls instead of its model.
The graphs are exported in memory at load time by :func:`rnnkit.export.export_task` (its parity
check included) and never written, so no ``.onnx`` file can disagree with the weights. A task
without a runner refuses ``backend="onnx"``; nothing falls back silently. docs/serve.md
("Backends") says what is the same, the threads and the costs.
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
