"""Model directories and training state, written so that a kill at any instant loses nothing.

Nothing is pickled (tensors go through safetensors with the sha256 of their data in the
header, the rest is JSON), so loading a stranger's model cannot run code. Files that change
together are committed through a redo journal: each new file is written and fsync'ed as
``NAME.next``; ``commit.json`` naming them is written atomically (the commit point); each
``NAME.next`` is renamed over ``NAME``, then the journal removed. :func:`recover` (the writer
only) finishes or discards an interrupted commit. ``.writer.lock`` (exclusive, for as long as a
process writes) keeps writers apart; ``.commit.lock`` (exclusive while a commit's renames run,
shared while a reader reads, :func:`reading`) keeps readers from a half-made commit, and a
reader that meets a dead writer's journal reads its ``NAME.next`` files, changing nothing.
docs/reliability.md says what this promises and how it is tested.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import json
import os
import random
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from rnnkit.errors import ModelDirError
from rnnkit.parsing import MAX_JSON_BYTES, TooDeep, loads_json

if TYPE_CHECKING:
    from rnnkit.tasks.base import Task

T = TypeVar("T", bound="Task")

JOURNAL = "commit.json"
WRITER_LOCK = ".writer.lock"
COMMIT_LOCK = ".commit.lock"
CHECKSUM_KEY = "rnnkit_sha256"

# Directories this process holds the writer lock of: resolved path → open lock file.
_WRITING: dict[Path, int] = {}
# Directories being read in this context: resolved path → names the journal redirects.
_VIEWS: contextvars.ContextVar[dict[Path, set[str]] | None] = contextvars.ContextVar(
    "views", default=None
)


# ------------------------------------------------------------------------ locks
def _holder(lock: Path) -> str:
    try:
        info = loads_json(lock.read_text(encoding="utf-8")[:4096])
        return f"process {info['pid']} on {info['host']} (since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def acquire_writer(directory: str | Path) -> None:
    """Become the one writer of ``directory`` until :func:`release_writer` (or exit).

    Raises :class:`ModelDirError` naming the holder when another process writes it.
    """
    directory = Path(directory)
    key = directory.resolve()
    if key in _WRITING:
        return
    lock = directory / WRITER_LOCK
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise ModelDirError(f"cannot write to {directory} ({err.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ModelDirError(
            f"{directory} is being written by {_holder(lock)}; one writer at a time"
        ) from None
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since})
    os.ftruncate(fd, 0)
    os.pwrite(fd, info.encode(), 0)
    _WRITING[key] = fd


def release_writer(directory: str | Path) -> None:
    """Stop being the writer of ``directory`` (a no-op where this process is not)."""
    fd = _WRITING.pop(Path(directory).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the file releases the lock


@contextlib.contextmanager
def writing(directory: str | Path) -> Iterator[None]:
    """Hold the writer lock for the block (kept if this process already held it)."""
    held = Path(directory).resolve() in _WRITING
    acquire_writer(directory)
    try:
        yield
    finally:
        if not held:
            release_writer(directory)


@contextlib.contextmanager
def _commit_lock(directory: Path, shared: bool) -> Iterator[None]:
    path = directory / COMMIT_LOCK
    try:
        fd = os.open(path, os.O_RDONLY if shared else os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        if not shared:
            raise
        # No lock file: no writer has committed here since locks came in (or the directory
        # is read-only); a reader does not create one, since readers never write.
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def reading(directory: str | Path) -> Iterator[None]:
    """Read ``directory`` as one committed snapshot: the files a writer is committing change
    only before or after the block, and an unfinished commit left by a dead writer is read as
    committed. Nothing in the directory is written."""
    directory = Path(directory)
    key = directory.resolve()
    views = _VIEWS.get() or {}
    if key in views or not directory.is_dir():
        yield
        return
    with _commit_lock(directory, shared=True):
        journal = directory / JOURNAL  # a dead writer's commit: its new files are read
        names = _read_journal(journal) if journal.exists() else []
        pending = {n for n in names if (directory / f"{n}.next").exists()}
        token = _VIEWS.set({**views, key: pending})
        try:
            yield
        finally:
            _VIEWS.reset(token)


def _read_journal(journal: Path) -> list[str]:
    try:
        names = loads_json(journal.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        # The journal is written atomically, so a torn one cannot happen; if it is
        # damaged anyway, nothing can be trusted to roll forward.
        raise ModelDirError(f"{journal} is damaged; the checkpoint cannot be trusted") from None
    if not isinstance(names, list) or not all(_plain_name(n) for n in names):
        raise ModelDirError(f"{journal} names files outside its directory; refusing it")
    return names


def _plain_name(name: Any) -> bool:
    """A file name inside the directory: no separators, no '.' or '..', not hidden."""
    return (
        isinstance(name, str)
        and name == os.path.basename(name)
        and "\\" not in name
        and name not in ("", ".", "..")
        and not name.startswith(".")
    )


def resolve(path: str | Path) -> Path:
    """Where to read ``path`` from: its committed ``.next`` twin when a reader's snapshot says
    so (see :func:`reading`), else the path itself."""
    path = Path(path)
    names = (_VIEWS.get() or {}).get(path.parent.resolve())
    if names and path.name in names:
        return path.with_name(f"{path.name}.next")
    return path


def fsync_dir(path: Path) -> None:
    """Make the entries of ``path`` (renames into it) durable; a no-op where that is refused."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_durably(path: Path, data: bytes, shown: Path | None = None) -> None:
    """Write and fsync ``path``. A failed write (a full disk) removes the partial file and
    raises an OSError that names ``shown`` (the file the user knows), else ``path``: the OS's
    own names no file for a write."""
    try:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        path.unlink(missing_ok=True)
        if err.filename is None or shown is not None:
            raise OSError(err.errno, err.strerror or str(err), str(shown or path)) from None
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _write_durably(tmp, data, shown=path)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def commit(directory: str | Path, files: dict[str, bytes]) -> None:
    """Replace several files of ``directory`` as one unit (see the module docstring).

    Takes the writer lock for the call unless this process holds it already.
    """
    directory = Path(directory)
    bad = [name for name in files if not _plain_name(name)]
    if bad:
        raise ValueError(f"not a plain file name for a model directory: {bad[0]!r}")
    with writing(directory):
        recover(directory)
        try:
            for name, data in files.items():
                _write_durably(directory / f"{name}.next", data)
        except OSError:  # a full disk: before the commit point, so take the halves back
            for name in files:
                (directory / f"{name}.next").unlink(missing_ok=True)
            raise
        fsync_dir(directory)
        with _commit_lock(directory, shared=False):
            atomic_write_text(directory / JOURNAL, json.dumps(sorted(files)))
            _roll_forward(directory)


def _roll_forward(directory: Path) -> None:
    names = _read_journal(directory / JOURNAL)
    for name in names:
        pending = directory / f"{name}.next"
        if pending.exists():
            os.replace(pending, directory / name)
    fsync_dir(directory)
    (directory / JOURNAL).unlink()
    fsync_dir(directory)


def recover(directory: str | Path) -> None:
    """Bring ``directory`` back to one complete checkpoint after an interrupted commit.

    Only the writer may: the caller must hold the writer lock (see :func:`writing`).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return
    if directory.resolve() not in _WRITING:
        raise RuntimeError(f"recover({directory}) without the writer lock")
    with _commit_lock(directory, shared=False):
        if (directory / JOURNAL).exists():
            _roll_forward(directory)
        for stray in directory.glob("*.next"):
            stray.unlink()


def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    """safetensors bytes of ``tensors`` (made contiguous, moved to CPU), with the sha256 of the
    tensor data in the header's metadata."""
    flat, seen = {}, set()
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        # Tied weights (an embedding shared with an output layer) are one storage under two
        # names; safetensors refuses aliases, so the second name gets its own copy.
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        flat[name] = tensor.clone() if key in seen else tensor
        seen.add(key)
    # The data section does not depend on the metadata (offsets count from its start), so the
    # checksum of a first serialisation is the checksum of the second.
    digest = hashlib.sha256(_data_section(st_save(flat))).hexdigest()
    return st_save(flat, metadata={**(metadata or {}), CHECKSUM_KEY: digest})


def _data_section(data: bytes) -> memoryview:
    header = int.from_bytes(data[:8], "little")
    return memoryview(data)[8 + header :]


def _stored_checksum(data: bytes) -> str | None:
    try:
        header_len = int.from_bytes(data[:8], "little")
        header = loads_json(bytes(data[8 : 8 + header_len]))
        return header.get("__metadata__", {}).get(CHECKSUM_KEY)
    except (ValueError, AttributeError):
        return None  # safetensors' own parser reports what is wrong


def _regular(path: Path) -> Path:
    """``path`` (resolved for a reader's snapshot) if it is a plain file: a FIFO or a device
    in a model directory would block a reader forever, a directory cannot be read."""
    real = resolve(path)
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        raise ModelDirError(f"{path} is missing") from None
    except OSError as err:
        raise ModelDirError(f"cannot read {path} ({err.strerror})") from None
    if stat.S_ISDIR(mode):
        raise ModelDirError(f"{path} is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise ModelDirError(f"{path} is not a regular file")
    return real


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning every way it can be broken into a ModelDirError."""
    real = _regular(path)  # missing, a directory, a FIFO: said there
    try:
        data = real.read_bytes()
    except OSError as err:
        raise ModelDirError(f"cannot read {path} ({err.strerror})") from None
    return read_tensors_from(data, str(path))


def read_tensors_from(data: bytes, where: str = "tensor data") -> dict[str, torch.Tensor]:
    """Tensors of safetensors ``data``, checked against the checksum in its header."""
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError, OSError):
        raise ModelDirError(f"{where} is truncated or not a safetensors file") from None
    stored = _stored_checksum(data)
    if stored is not None and hashlib.sha256(_data_section(data)).hexdigest() != stored:
        raise ModelDirError(f"{where} is damaged (its tensor data fails its sha256 checksum)")
    return tensors


def read_json(path: Path) -> Any:
    """A JSON file of a model directory, bounded in size and nesting; every way it can be
    wrong is a ModelDirError naming it."""
    real = _regular(path)
    try:
        if real.stat().st_size > MAX_JSON_BYTES:
            raise ModelDirError(f"{path} is larger than {MAX_JSON_BYTES // 2**20} MiB")
        return loads_json(real.read_text(encoding="utf-8"))
    except TooDeep as err:
        raise ModelDirError(f"{path} is {err}") from None
    except OSError as err:
        raise ModelDirError(f"cannot read {path} ({err.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelDirError(f"{path} is not valid JSON (truncated?)") from None


def json_bytes(obj: Any) -> bytes:
    """``obj`` as the UTF-8 JSON rnnkit writes into model directories (indented, unescaped)."""
    return (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def read_model_config(directory: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a model directory, after checking the directory is whole."""
    directory = Path(directory)
    if not directory.exists():
        raise ModelDirError(f"model directory {directory} does not exist")
    if not directory.is_dir():
        raise ModelDirError(f"{directory} is not a directory")
    with reading(directory):
        if not resolve(directory / "config.json").exists():
            raise ModelDirError(f"{directory} is not an rnnkit model directory (no config.json)")
        config = read_json(directory / "config.json")
    if not isinstance(config, dict) or not isinstance(config.get("task"), str):
        raise ModelDirError(f"{directory}/config.json does not name a task")
    if not isinstance(config.get("config"), dict):
        raise ModelDirError(f"{directory}/config.json holds no config mapping")
    return config


def read_task_config(directory: str | Path, task: str, config_class: type) -> Any:
    """Parse the config of a model directory made by ``task`` into ``config_class``."""
    from rnnkit.config import from_dict, upgrade
    from rnnkit.errors import ConfigError

    directory = Path(directory)
    stored = read_model_config(directory)
    if stored["task"] != task:
        raise ModelDirError(f"{directory} holds a '{stored['task']}' model, not a {task} model")
    try:
        return from_dict(config_class, upgrade(stored["config"]))
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


def load_trained(task: T, directory: str | Path, device: str = "cpu") -> T:
    """Fill ``task.model`` with the weights of ``directory``, on ``device``, in eval mode."""
    from rnnkit.runtime import pick_device

    load_weights(task.model, Path(directory) / "model.safetensors")
    task.model.to(pick_device(device)).eval()
    return task


def save_model(directory: str | Path, task: Task) -> None:
    """Write ``task``'s config, vocabulary and current weights as one model directory."""
    files = dict(task.model_files())
    files["model.safetensors"] = tensors_to_bytes(task.model.state_dict())
    commit(directory, files)


# --------------------------------------------------------------- training state
@dataclass
class TrainingState:
    """What ``--resume`` restores besides the task's own files: the current weights, the
    optimizer's and the schedule's state dicts, the loop's counters (``trainer.json``'s
    ``state``), the state each process's model carries between batches, and the RNG states."""

    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    schedule: dict[str, Any] | None  # None in files written before schedules were torch's
    counters: dict[str, Any]
    carried: list[dict[str, torch.Tensor]]  # one per process, or none; read: this process's
    rng: dict[str, torch.Tensor] = field(default_factory=dict)  # torch's and each GPU's
    python_rng: Any = None
    averaged: dict[str, torch.Tensor] = field(default_factory=dict)  # train.average's state


def training_files(state: TrainingState, train_config: dict[str, Any]) -> dict[str, bytes]:
    """``trainer.safetensors``, ``optimizer.safetensors`` and ``trainer.json`` of ``state``,
    with this process's RNG states as they are now (``state.rng`` is not read)."""
    tensors = {f"model.{k}": v for k, v in state.weights.items()}
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda{i}"] = s
    tensors.update({f"average.{k}": v for k, v in state.averaged.items()})
    for r, carried in enumerate(state.carried):  # the language model's recurrent state
        prefix = "carried." if len(state.carried) == 1 else f"carried.rank{r}."
        tensors.update({prefix + k: v for k, v in carried.items()})
    moments, optimizer = _split_optimizer(state.optimizer)
    version, internal, gauss = random.getstate()
    meta: dict[str, Any] = {"state": state.counters, "python_rng": [version, list(internal), gauss]}
    meta.update(optimizer=optimizer, schedule=state.schedule, train_config=train_config)
    return {
        "trainer.safetensors": tensors_to_bytes(tensors),
        "optimizer.safetensors": tensors_to_bytes(moments),
        "trainer.json": json_bytes(meta),
    }


def read_training_state(directory: str | Path, rank: int = 0, world: int = 1) -> TrainingState:
    """The training state of ``directory`` for process ``rank`` of ``world``; a run saved by
    another number of processes is refused when its models carried state."""
    directory = Path(directory)
    if not (directory / "trainer.json").exists():
        raise ModelDirError(f"{directory} holds no training state to resume (no trainer.json)")
    meta = read_json(directory / "trainer.json")
    tensors = read_tensors(directory / "trainer.safetensors")
    moments = read_tensors(directory / "optimizer.safetensors")
    own = "carried." if world == 1 else f"carried.rank{rank}."
    carried = {k[len(own) :]: v for k, v in tensors.items() if k.startswith(own)}
    if any(k.startswith("rank") for k in carried):  # saved by several processes
        raise ModelDirError(f"{directory} was trained on several processes; resume it on as many")
    try:
        version, internal, gauss = meta["python_rng"]
        return TrainingState(
            weights={k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
            optimizer=_join_optimizer(moments, meta["optimizer"]),
            schedule=meta.get("schedule"),
            counters=meta["state"],
            carried=[carried],
            rng={k[4:]: v for k, v in tensors.items() if k.startswith("rng.")},
            python_rng=(version, tuple(internal), gauss),
            averaged={k[8:]: v for k, v in tensors.items() if k.startswith("average.")},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ModelDirError(f"{directory}: training state does not fit ({err})") from None


def restore_rng(state: TrainingState) -> None:
    """Put the RNG states of ``state`` back: torch's, each GPU's (when as many), Python's."""
    torch.set_rng_state(state.rng["torch"])
    cuda = [state.rng[k] for k in sorted(state.rng) if k.startswith("cuda")]
    if torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    random.setstate(state.python_rng)


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state dict as tensors (for safetensors) and its JSON-ready rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The optimizer state dict that :func:`_split_optimizer` split."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


__all__ = [
    "acquire_writer", "release_writer", "writing", "reading", "resolve", "commit", "recover",
    "read_json", "read_tensors", "read_model_config", "read_task_config", "save_model",
    "TrainingState", "training_files", "read_training_state", "restore_rng",
]  # fmt: skip
