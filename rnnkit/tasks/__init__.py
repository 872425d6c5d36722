"""The task registry: a task name → the module that knows how to build, train and use it."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnkit import checkpoint as ckpt
from rnnkit.datasets import data_dir as _data_dir  # --data-dir, else $RNNKIT_DATA, else the cache
from rnnkit.errors import ConfigError, ModelDirError

if TYPE_CHECKING:  # the type checker holds every built-in task to the contract
    from rnnkit.tasks import cipher, classify, embed, lm, tag, translate
    from rnnkit.tasks.base import Task

    _BUILT_IN: tuple[type[Task], ...] = (
        cipher.CipherTask, lm.LMTask, tag.TagTask, classify.ClassifyTask, embed.EmbedTask,
        translate.TranslateTask,
    )  # fmt: skip

TASKS = {
    "cipher": ("rnnkit.tasks.cipher", "CipherTask"),
    "lm": ("rnnkit.tasks.lm", "LMTask"),
    "tag": ("rnnkit.tasks.tag", "TagTask"),
    "classify": ("rnnkit.tasks.classify", "ClassifyTask"),
    "embed": ("rnnkit.tasks.embed", "EmbedTask"),
    "translate": ("rnnkit.tasks.translate", "TranslateTask"),
}


def task_class(name: str) -> type[Task]:
    """The class of the registered task ``name``; an unknown name is a one-line error."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r} (choices: {', '.join(TASKS)})")
    module, cls = TASKS[name]
    return getattr(importlib.import_module(module), cls)


def build_task(name: str, config: Any, data_dir: str | Path | None = None) -> Task:
    """Seed, then build the task for training (:meth:`Task.build`): its model's initial
    weights come from ``train.seed``."""
    from rnnkit.runtime import seed_everything

    seed_everything(config.train.seed, config.train.deterministic)
    return task_class(name).build(config, _data_dir(data_dir))


def load_task(
    directory: str | Path,
    device: str = "cpu",
    data_dir: str | Path | None = None,
    backend: str = "torch",
) -> Task:
    """Open a model directory with the task that made it; its predict runs the network in
    ``backend``, ``torch`` or ``onnx`` (see :mod:`rnnkit.backends`)."""
    from rnnkit.backends import check_backend, use_backend

    check_backend(backend)
    with ckpt.reading(directory):  # one committed snapshot, even while a trainer writes
        stored = ckpt.read_model_config(directory)
        name = stored["task"]
        if name not in TASKS:
            raise ModelDirError(f"{directory} holds a model of unknown task {name!r}")
        task = task_class(name).from_dir(directory, data_dir=_data_dir(data_dir), device=device)
    return use_backend(task, backend)
