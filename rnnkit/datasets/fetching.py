"""Downloading (``fetch``) or copying (``import_dataset``) a dataset into the data directory.

pooch does the work for each file: the HTTP (requests), retries, the progress bar, writing to a
temporary file and checking it against its sha256 before keeping it. What rnnkit adds on top:

- All or nothing per dataset: pooch keeps each verified file in a hidden staging folder beside
  the dataset's (``DATA_DIR/.FOLDER.part/``); only when every file has verified are they moved
  into place. A failure removes the staging folder and any folder made for it, so the data
  directory is left as it was; a run that was killed leaves only the staging folder, which the
  next run clears. pooch alone keeps each file that verified, so a dataset could be half there.
- Size limits: pooch reads whatever the server sends. Here the writer it is given stops a file
  past its registered size (or :data:`UNCHECKED_LIMIT` for one with no size), counting and
  hashing as it writes so that a mismatch is one line naming the file, both hashes and sizes
  (pooch's own message is a paragraph, and the file it describes is already deleted).
- Mirrors and ``file://`` URLs (pooch has no downloader for local files), which also serve
  ``import_dataset``: it is a fetch from ``file://`` URLs into the same staging.
- Files already present with the right sha256 are not fetched again.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from urllib.request import url2pathname

from rnnkit.datasets.registry import DataFile, Dataset, file_state, get_dataset, human_size
from rnnkit.errors import DataError

logger = logging.getLogger(__name__)

MIRROR_ENV = "RNNKIT_DATA_MIRROR"
UNCHECKED_LIMIT = 1 << 30  # bytes: the most an unchecked (hashless) file may hold
CHUNK = 1 << 16
RETRIES = 2  # more tries per file after a failed download or a hash mismatch (pooch waits 1 s, 2 s)


@dataclass
class Outcome:
    """What :func:`fetch` or :func:`import_dataset` did."""

    dataset: str
    folder: Path
    written: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)


def fetch(
    name: str,
    data_dir: str | Path,
    base_url_override: str | None = None,
    *,
    registry: Mapping[str, Dataset] | None = None,
    timeout: float = 60.0,
    retries: int = RETRIES,
    progress: bool = False,
) -> Outcome:
    """Download dataset ``name`` into ``data_dir``, all files or none (see the module docstring).

    ``base_url_override`` (else ``$RNNKIT_DATA_MIRROR``) replaces every file's address by
    ``URL/NAME/PATH``, import-only files included. Files already present with the right sha256
    are kept. Import-only files that are missing are a :class:`DataError` naming them, raised
    after the other files are in place.
    """
    dataset = get_dataset(name, registry)
    target = Path(data_dir).expanduser() / dataset.folder
    mirror = (base_url_override or os.environ.get(MIRROR_ENV) or "").rstrip("/")
    outcome = Outcome(dataset.name, target)
    urls: dict[str, str] = {}
    import_only: list[str] = []
    for f in dataset.files:
        if file_state(target / f.path, f) == "ok":
            outcome.present.append(f.path)
        elif mirror or f.url:
            urls[f.path] = f"{mirror}/{quote(dataset.name)}/{quote(f.path)}" if mirror else f.url
        else:
            import_only.append(f.path)
    if urls:
        labels = {p: f"{dataset.name}/{p}" for p in urls}
        _install(dataset, target, urls, labels, timeout, retries, progress)
        outcome.written = list(urls)
    if import_only:
        done = f"fetched {len(urls)} of {len(dataset.files)} files, but " if urls else ""
        raise DataError(
            f"{dataset.name}: {done}{', '.join(import_only)} cannot be downloaded (no public "
            f"copy); put {'it' if len(import_only) == 1 else 'them'} in a folder and run "
            f"`rnnkit data import {dataset.name} FOLDER`"
        )
    return outcome


def import_dataset(
    name: str,
    source_dir: str | Path,
    data_dir: str | Path,
    *,
    registry: Mapping[str, Dataset] | None = None,
) -> Outcome:
    """Copy dataset ``name`` from ``source_dir`` into ``data_dir``, verified, all files or none.

    ``source_dir`` holds the files at their relative paths; it may also be a folder that holds
    the dataset's folder (a whole data directory). A file already present in ``data_dir`` with
    the right sha256 is kept and need not be in ``source_dir``.
    """
    dataset = get_dataset(name, registry)
    source = Path(source_dir).expanduser()
    if not source.is_dir():
        raise DataError("not a directory", str(source))
    inner = source / dataset.folder
    if inner.is_dir() and not any((source / f.path).is_file() for f in dataset.files):
        source = inner
    target = Path(data_dir).expanduser() / dataset.folder
    outcome = Outcome(dataset.name, target)
    todo: list[str] = []
    missing: list[str] = []
    for f in dataset.files:
        if file_state(target / f.path, f) == "ok":
            outcome.present.append(f.path)
        else:
            (todo if (source / f.path).is_file() else missing).append(f.path)
    if missing:
        raise DataError(
            f"{dataset.name}: not in {source}: {', '.join(missing)}; nothing was written"
        )
    if todo:
        urls = {p: (source / p).absolute().as_uri() for p in todo}
        labels = {p: str(source / p) for p in todo}
        _install(dataset, target, urls, labels, retries=0, copying=True)
        outcome.written = todo
    return outcome


class _Writer:
    """pooch's downloader for one file: it hands pooch's HTTP downloader (or, for ``file://``,
    a plain copy) itself as the output, counting, capping and hashing what is written."""

    def __init__(self, f: DataFile, label: str, copying: bool, timeout: float, progress: bool):
        self.f, self.label, self.copying = f, label, copying
        self.timeout, self.progress = timeout, progress
        self.limit = f.size if f.size is not None else UNCHECKED_LIMIT
        self.url, self.tries, self.size = "", 0, 0

    def __call__(self, url: str, output_file: str, _pooch: Any) -> None:
        import pooch

        from rnnkit import __version__

        verb = "copying" if self.copying else "downloading"
        size = human_size(self.f.size) if self.f.size is not None else "size unknown"
        again = f" (try {self.tries + 1})" if self.tries else ""
        origin = "" if self.copying else f" from {url}"
        logger.info("%s %s (%s)%s%s", verb, self.label, size, origin, again)
        self.url, self.tries = url, self.tries + 1
        self.size, self.digest = 0, hashlib.sha256()
        with open(output_file, "wb") as self.out:
            if url.startswith("file:"):
                with open(url2pathname(urlsplit(url).path), "rb") as source:
                    shutil.copyfileobj(source, self)
            else:
                headers = {"User-Agent": f"rnnkit/{__version__}"}
                get = pooch.HTTPDownloader(
                    self.progress, chunk_size=CHUNK, timeout=self.timeout, headers=headers
                )
                get(url, self, _pooch)
            self.out.flush()
            os.fsync(self.out.fileno())

    def write(self, chunk: bytes) -> None:
        """Take the next downloaded or copied bytes: counted against the size limit, hashed,
        written to the partial file."""
        self.size += len(chunk)
        if self.size > self.limit:
            raise DataError(self.mismatch(), self.label)
        self.digest.update(chunk)
        self.out.write(chunk)

    def flush(self) -> None:
        """Flush the partial file (pooch calls it as on any file object)."""
        self.out.flush()

    def mismatch(self) -> str:
        """The one-line complaint about what was written."""
        f, done = self.f, "; nothing was written"
        origin = "" if self.copying else f" from {self.url}"
        if self.size > self.limit:
            if f.sha256 is None:
                return f"larger than {human_size(UNCHECKED_LIMIT)}{origin}{done}"
            return (
                f"more than the expected {f.size} bytes (expected sha256 {f.sha256}){origin}{done}"
            )
        return (
            f"sha256 mismatch: expected {f.sha256} ({f.size} bytes), got "
            f"{self.digest.hexdigest()} ({self.size} bytes){origin}{done}"
        )


def _install(
    dataset: Dataset,
    target: Path,
    urls: dict[str, str],
    labels: dict[str, str],
    timeout: float = 60.0,
    retries: int = RETRIES,
    progress: bool = False,
    copying: bool = False,
) -> None:
    """Have pooch fetch and verify each of ``urls`` into the staging folder, then move them all
    into ``target``; on any failure, remove the staging folder and every folder made here."""
    import pooch

    from rnnkit.checkpoint import fsync_dir  # imports torch: only here, not for `data list`

    for path, url in urls.items():
        if urlsplit(url).scheme not in ("http", "https", "file"):
            why = f"unknown url type: {url!r} (http, https or file)"
            raise DataError(f"download failed: {why}; nothing was written", labels[path])
    files = {f.path: f for f in dataset.files}
    staging = target.parent / f".{dataset.folder}.part"
    hashes = {p: f"sha256:{files[p].sha256}" if files[p].sha256 else None for p in urls}
    store = pooch.create(staging, "", registry=hashes, urls=urls, retry_if_failed=retries)
    finals = [target / p for p in urls]
    fresh = not target.exists()
    created: list[Path] = []
    try:
        shutil.rmtree(staging, ignore_errors=True)  # what a killed run left
        try:
            _make_dirs({target.parent}, created)
        except OSError as err:
            why = err.strerror or str(err)
            raise DataError(
                f"cannot create the data directory ({why})", str(target.parent)
            ) from None
        for path in urls:
            writer = _Writer(files[path], labels[path], copying, timeout, progress)
            with _failures(writer), _quiet(pooch.get_logger()):
                store.fetch(path, downloader=writer)
        if fresh:  # one rename: the dataset's folder appears whole
            os.replace(staging, target)
        else:
            _make_dirs({p.parent for p in finals}, created)
            for path, final in zip(urls, finals, strict=True):
                os.replace(staging / path, final)
            shutil.rmtree(staging)  # its empty folders
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for d in reversed(created):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    for d in {target.parent, *(p.parent for p in finals)}:
        fsync_dir(d)


@contextlib.contextmanager
def _failures(writer: _Writer) -> Iterator[None]:
    """What pooch or the network raised for ``writer``'s file, as one line naming it."""
    import requests

    try:
        yield
    except ValueError:  # pooch's hash check; the writer knows the size and hash it wrote
        if not writer.tries:
            raise
        raise DataError(writer.mismatch(), writer.label) from None
    except (OSError, requests.RequestException) as err:  # requests' errors are OSErrors too
        why = _why(err)
        message = (
            f"cannot copy ({why})" if writer.copying else f"download failed: {why} ({writer.url})"
        )
        raise DataError(f"{message}; nothing was written", writer.label) from None


def _why(err: BaseException) -> str:
    """The cause of a failed download in a few words (requests nests urllib3's errors)."""
    import requests

    seen: list[BaseException] = []
    todo = [err]
    while todo:  # err and every exception inside it, outermost first
        e = todo.pop(0)
        if e not in seen:
            seen.append(e)
            todo += [a for a in (*e.args, e.__cause__, e.__context__) if isinstance(a, Exception)]
    for e in seen:
        if isinstance(e, http.client.IncompleteRead) and e.expected is not None:
            got = e.partial if isinstance(e.partial, int) else len(e.partial)  # urllib3: int
            return (
                f"the connection closed after {got} bytes, {e.expected} short of its Content-Length"
            )
        if isinstance(e, requests.HTTPError) and e.response is not None:
            return f"HTTP {e.response.status_code} {e.response.reason}"
    causes = [e.strerror for e in seen if isinstance(e, OSError) and e.strerror]
    return causes[-1] if causes else str(err) or type(err).__name__


@contextlib.contextmanager
def _quiet(pooch_logger: logging.Logger) -> Iterator[None]:
    """pooch logs to stderr through a handler of its own; rnnkit's logger says the same."""
    level = pooch_logger.level
    pooch_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        pooch_logger.setLevel(level)


def _make_dirs(dirs: set[Path], created: list[Path]) -> None:
    """Create ``dirs`` and their missing parents, appending each one made to ``created``."""
    for wanted in sorted(dirs, key=lambda p: len(p.parts)):
        missing = []
        d = wanted
        while not d.exists():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            d.mkdir()
            created.append(d)
