"""Model directories and training state, written so that a kill at any instant loses nothing.

A model directory holds ``config.json``, ``vocab.json`` and ``model.safetensors``; training adds
``trainer.json``, ``trainer.safetensors`` (the current weights and RNG states) and
``optimizer.safetensors``. Nothing is pickled: tensors go through safetensors, the rest is JSON,
so loading a stranger's model cannot run code.

Several files must change together (weights, optimizer moments, step counter), so a checkpoint is
committed through a tiny redo journal:

1. every new file is written and fsync'ed as ``NAME.next``;
2. ``commit.json`` naming them is written atomically — this is the commit point;
3. each ``NAME.next`` is renamed over ``NAME``, then ``commit.json`` is removed.

:func:`recover` (run before anything reads the directory) finishes step 3 when ``commit.json``
exists and discards stray ``.next`` files when it does not; either way the directory holds one
complete checkpoint, the old one or the new one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from rnnkit.errors import ModelDirError

JOURNAL = "commit.json"
MODEL_FILES = ("config.json", "model.safetensors")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _write_durably(tmp, data)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def commit(directory: str | Path, files: dict[str, bytes]) -> None:
    """Replace several files of ``directory`` as one unit (see the module docstring)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    recover(directory)
    for name, data in files.items():
        _write_durably(directory / f"{name}.next", data)
    _fsync_dir(directory)
    atomic_write_text(directory / JOURNAL, json.dumps(sorted(files)))
    _roll_forward(directory)


def _roll_forward(directory: Path) -> None:
    names = json.loads((directory / JOURNAL).read_text())
    for name in names:
        pending = directory / f"{name}.next"
        if pending.exists():
            os.replace(pending, directory / name)
    _fsync_dir(directory)
    (directory / JOURNAL).unlink()
    _fsync_dir(directory)


def recover(directory: str | Path) -> None:
    """Bring ``directory`` back to one complete checkpoint after an interrupted commit."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    journal = directory / JOURNAL
    if journal.exists():
        try:
            json.loads(journal.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            # The journal is written atomically, so a torn one cannot happen; if it is
            # damaged anyway, nothing can be trusted to roll forward.
            raise ModelDirError(f"{journal} is damaged; the checkpoint cannot be trusted") from None
        if not os.access(directory, os.W_OK):
            raise ModelDirError(f"{directory} holds an unfinished checkpoint and is read-only")
        _roll_forward(directory)
    for stray in directory.glob("*.next"):
        stray.unlink()


def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    """safetensors bytes of ``tensors`` (made contiguous, moved to CPU)."""
    flat, seen = {}, set()
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        # Tied weights (an embedding shared with an output layer) are one storage under two
        # names; safetensors refuses aliases, so the second name gets its own copy.
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        flat[name] = tensor.clone() if key in seen else tensor
        seen.add(key)
    return st_save(flat, metadata=metadata)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning every way it can be broken into a ModelDirError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelDirError(f"{path} is missing") from None
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError, OSError):
        raise ModelDirError(f"{path} is truncated or not a safetensors file") from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelDirError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelDirError(f"{path} is not valid JSON (truncated?)") from None


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def read_model_config(directory: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a model directory, after checking the directory is whole."""
    directory = Path(directory)
    if not directory.exists():
        raise ModelDirError(f"model directory {directory} does not exist")
    if not directory.is_dir():
        raise ModelDirError(f"{directory} is not a directory")
    recover(directory)
    if not (directory / "config.json").exists():
        raise ModelDirError(f"{directory} is not an rnnkit model directory (no config.json)")
    config = read_json(directory / "config.json")
    if not isinstance(config, dict) or "task" not in config:
        raise ModelDirError(f"{directory}/config.json does not name a task")
    return config


def read_task_config(directory: str | Path, task: str, config_class: type) -> Any:
    """Parse the config of a model directory made by ``task`` into ``config_class``."""
    from rnnkit.config import from_dict
    from rnnkit.errors import ConfigError

    directory = Path(directory)
    stored = read_model_config(directory)
    if stored["task"] != task:
        raise ModelDirError(f"{directory} holds a '{stored['task']}' model, not a {task} model")
    try:
        return from_dict(config_class, stored["config"])
    except (ConfigError, KeyError, TypeError) as err:
        raise ModelDirError(
            f"{directory}/config.json is not a valid {task} config: {err}"
        ) from None


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights into ``model``; any mismatch is a one-line ModelDirError."""
    tensors = read_tensors(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing or extra:
        what = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise ModelDirError(f"{path} does not fit the model in config.json ({what})")
    for name, tensor in tensors.items():
        if tensor.shape != own[name].shape:
            raise ModelDirError(
                f"{path}: {name} has shape {tuple(tensor.shape)}, "
                f"the config says {tuple(own[name].shape)}"
            )
    model.load_state_dict(tensors)


def task_files(task: Any) -> dict[str, bytes]:
    """``config.json`` and ``vocab.json`` of a task that has one config and one vocabulary."""
    from rnnkit import __version__
    from rnnkit.config import to_dict

    config = {"task": task.name, "rnnkit_version": __version__, "config": to_dict(task.config)}
    return {"config.json": json_bytes(config), "vocab.json": json_bytes(task.vocab.to_dict())}


def load_trained(task: Any, directory: str | Path, device: str = "cpu") -> Any:
    """Fill ``task.model`` with the weights of ``directory``, on ``device``, in eval mode."""
    from rnnkit.runtime import pick_device

    load_weights(task.model, Path(directory) / "model.safetensors")
    task.model.to(pick_device(device)).eval()
    return task


def save_model(directory: str | Path, task: Any) -> None:
    """Write ``task``'s config, vocabulary and current weights as one model directory."""
    files = dict(task.model_files())
    files["model.safetensors"] = tensors_to_bytes(task.model.state_dict())
    commit(directory, files)
