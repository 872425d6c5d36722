"""The dataset registry (``registry.toml``, shipped with the package) and what a data directory
holds of it."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

from rnnkit.errors import DataError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CHUNK = 1 << 20


def data_dir(explicit: str | Path | None = None) -> Path:
    """Where datasets live: ``--data-dir``, else ``$RNNKIT_DATA``, else the user's cache."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("RNNKIT_DATA"):
        return Path(os.environ["RNNKIT_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "rnnkit" / "data"


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset: where it goes, what it must be, and where it can be downloaded."""

    path: str  # relative to the dataset's folder, '/'-separated
    size: int | None  # bytes; None: unknown (a licensed file nobody may publish a hash of)
    sha256: str | None  # None with the size: imported as it is, checked by its reader
    url: str | None  # None: no public copy, import only


@dataclass(frozen=True)
class Dataset:
    """A registered dataset: its folder in the data directory, its license and source, and its
    files."""

    name: str
    folder: str  # inside the data directory
    license: str
    source: str  # where the files come from: repository @ commit, and how
    files: tuple[DataFile, ...]

    @property
    def size(self) -> int:
        """Bytes of all its files (those of unknown size count as 0)."""
        return sum(f.size or 0 for f in self.files)


_DATASET_FIELDS = {"license": str, "source": str, "folder": str, "files": list}
_FILE_FIELDS = {"path": str, "size": int, "sha256": str, "url": str}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _fields(table: object, kinds: dict[str, type], required: tuple[str, ...], where: str) -> dict:
    """``table`` if it is a table of ``kinds`` holding ``required``; else a complaint naming
    the field."""
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected a table, got {table!r}")
    for key, value in table.items():
        kind = kinds.get(key)
        if kind is None:
            raise ValueError(f"{where}.{key}: unknown field (known: {', '.join(kinds)})")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    for key in required:
        if key not in table:
            raise ValueError(f"{where}.{key}: missing")
    return table


def _plain_path(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return bool(parts) and not path.startswith("/") and not {"", ".", ".."} & set(parts)


def _dataset(name: str, entry: object) -> Dataset:
    table = _fields(entry, _DATASET_FIELDS, ("license", "source", "files"), name)
    folder = table.get("folder", name)
    if "/" in folder or folder.startswith(".") or not folder:
        raise ValueError(f"{name}.folder: {folder!r} is not a plain folder name")
    if not table["files"]:
        raise ValueError(f"{name}.files: empty")
    files = []
    for i, raw in enumerate(table["files"]):
        where = f"{name}.files[{i}]"
        f = _fields(raw, _FILE_FIELDS, ("path",), where)
        if not _plain_path(f["path"]) or f["path"] in {g.path for g in files}:
            raise ValueError(f"{where}.path: {f['path']!r} is not a new relative path")
        if ("size" in f) != ("sha256" in f):
            raise ValueError(f"{where}: size and sha256 come together (or neither)")
        if "sha256" in f and not _SHA256.fullmatch(f["sha256"]):
            raise ValueError(f"{where}.sha256: expected 64 lowercase hex digits")
        if f.get("size", 0) < 0:
            raise ValueError(f"{where}.size: negative")
        files.append(DataFile(f["path"], f.get("size"), f.get("sha256"), f.get("url")))
    return Dataset(name, folder, table["license"], table["source"], tuple(files))


def parse_registry(text: str, origin: str = "registry.toml") -> dict[str, Dataset]:
    """The datasets a registry file describes; a malformed one is a one-line :class:`DataError`
    naming the entry and field."""
    try:
        return {name: _dataset(name, entry) for name, entry in tomllib.loads(text).items()}
    except (tomllib.TOMLDecodeError, ValueError) as err:
        raise DataError(str(err), origin) from None


@functools.cache
def default_registry() -> dict[str, Dataset]:
    """The registered datasets, from the package's ``registry.toml`` (read once)."""
    text = resources.files(__package__).joinpath("registry.toml").read_text(encoding="utf-8")
    return parse_registry(text, "rnnkit/datasets/registry.toml")


def get_dataset(name: str, registry: Mapping[str, Dataset] | None = None) -> Dataset:
    """The dataset ``name`` of ``registry`` (default: the package's); an unknown name is a
    DataError listing the choices."""
    registry = default_registry() if registry is None else registry
    if name not in registry:
        raise DataError(f"unknown dataset {name!r} (choices: {', '.join(registry)})")
    return registry[name]


def human_size(n: int) -> str:
    """Bytes in decimal units: ``17.8 MB``."""
    if n < 1000:
        return f"{n} B"
    value = n / 1000
    for unit in ("kB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def sha256_of(path: Path) -> str:
    """The SHA-256 hex digest of the file at ``path``, read a chunk at a time (files may be
    large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_state(path: Path, f: DataFile) -> str:
    """``ok``, ``missing`` or ``bad`` for the file at ``path`` against its record."""
    try:
        if not path.is_file():
            return "missing"
        if f.sha256 is None:  # nothing to check it against
            return "ok"
        if path.stat().st_size != f.size:
            return "bad"
        return "ok" if sha256_of(path) == f.sha256 else "bad"
    except OSError:
        return "bad"


@dataclass(frozen=True)
class Row:
    """One line of ``rnnkit data list``."""

    name: str
    files: int
    import_only: int
    size: int
    license: str
    source: str
    status: str  # verified, missing, partial (k/n files), damaged (FILE, ...), or "" (not checked)


def list_datasets(
    data_dir: str | Path | None = None, registry: Mapping[str, Dataset] | None = None
) -> list[Row]:
    """One row per registered dataset; with ``data_dir``, whether it is there and verifies."""
    registry = default_registry() if registry is None else registry
    rows = []
    for d in registry.values():
        status = ""
        if data_dir is not None:
            folder = Path(data_dir).expanduser() / d.folder
            states = {f.path: file_state(folder / f.path, f) for f in d.files}
            bad = [p for p, s in states.items() if s == "bad"]
            ok = sum(s == "ok" for s in states.values())
            if bad:
                status = f"damaged ({', '.join(bad)})"
            elif ok == len(d.files):
                checked = all(f.sha256 for f in d.files)
                status = "verified" if checked else "present (no checksums to verify)"
            elif ok == 0:
                status = "missing"
            else:
                status = f"partial ({ok}/{len(d.files)} files)"
        import_only = sum(f.url is None for f in d.files)
        rows.append(Row(d.name, len(d.files), import_only, d.size, d.license, d.source, status))
    return rows
