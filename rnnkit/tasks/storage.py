"""A task's model directory: the files a task writes, and the task rebuilt from them.

Every task names its vocabularies in ``VOCABS`` (file name → attribute, ``vocab.json`` first)
and takes them back, in that order, as its constructor's ``vocabs``:
``cls(config, vocabs, data_dir)``. A directory holds ``config.json``, those vocabularies,
``contextual.json`` when the model reads character LMs (their weights are part of the model's),
and ``model.safetensors``. :class:`~rnnkit.tasks.base.TaskBase` has :func:`model_files` and
:func:`from_dir` as its methods of the same names.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rnnkit import checkpoint as ckpt
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ModelDirError
from rnnkit.nn.contextual import FILE as CONTEXTUAL_FILE
from rnnkit.nn.contextual import ContextualChars

if TYPE_CHECKING:
    from rnnkit.tasks.base import Task

T = TypeVar("T", bound="Task")


def model_files(task: Task) -> dict[str, bytes]:
    """The files of ``task``'s model directory but its weights, name → bytes."""
    from rnnkit import __version__
    from rnnkit.config import to_dict

    config = {"task": task.name, "rnnkit_version": __version__, "config": to_dict(task.config)}
    files = {"config.json": ckpt.json_bytes(config)}
    for name, attribute in task.VOCABS.items():
        files[name] = ckpt.json_bytes(getattr(task, attribute).to_dict())
    contextual = getattr(task.model, "contextual", None)
    if contextual is not None:
        files[CONTEXTUAL_FILE] = ckpt.json_bytes(contextual.describe())
    return files


def from_dir(
    cls: type[T],
    directory: str | Path,
    data_dir: Path | None = None,
    device: str = "cpu",
    **extra: Any,
) -> T:
    """Task class ``cls`` rebuilt from a directory written from :func:`model_files`, with its
    trained weights, on ``device``, in eval mode. ``extra`` goes to the constructor."""
    directory = Path(directory)
    config = ckpt.read_task_config(directory, cls.name, cls.Config)
    vocabs = tuple(Vocab.load(directory / name) for name in cls.VOCABS)
    if getattr(config.model, "contextual", None):  # the LMs travel inside this directory
        tune = config.model.contextual_tune
        extra["contextual"] = ContextualChars.from_model_dir(directory, tune)
    try:
        task = cls(config, vocabs, data_dir, **extra)
    except ModelDirError as err:  # vocabularies that do not fit the config
        raise ModelDirError(f"{directory}: {err}") from None
    return ckpt.load_trained(task, directory, device)


def run_files() -> set[str]:
    """Every file a training run of any task may leave in its directory: what
    ``rnnkit train --force`` may remove (a user's own files stay)."""
    from rnnkit.tasks import TASKS, task_class
    from rnnkit.train import Trainer

    names = {"config.json", "model.safetensors", CONTEXTUAL_FILE, ckpt.JOURNAL, *Trainer.FILES}
    for name in TASKS:
        cls = task_class(name)
        names.update(cls.VOCABS, getattr(cls, "EXTRA_FILES", ()))
    return names


__all__ = ["model_files", "from_dir", "run_files"]
