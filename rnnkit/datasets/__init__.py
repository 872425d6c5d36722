"""The datasets the recipes use: where each comes from, what it must hash to, and how to get it.

``rnnkit data list`` shows them and whether the data directory (``--data-dir``, ``$RNNKIT_DATA``,
else the cache) holds them; ``rnnkit data fetch NAME`` downloads one; ``rnnkit data import NAME
DIR`` copies one from a folder you already have. A dataset lives in ``DATA_DIR/FOLDER/``, each
file at its relative path there, which is where the recipes look for it.

``registry.toml`` lists the datasets, their files, sizes, sha256 and addresses; files with no
public copy (``url`` left out) are *import only*: ``fetch`` downloads the rest, then names them.

Mirrors: ``$RNNKIT_DATA_MIRROR`` (or ``fetch(..., base_url_override=URL)``, or ``rnnkit data
fetch --mirror URL``) replaces every file's address by ``URL/NAME/PATH``; for example with
``RNNKIT_DATA_MIRROR=http://127.0.0.1:8000/``, ``ud-english-ewt``'s dev file comes from
``http://127.0.0.1:8000/ud-english-ewt/en_ewt-ud-dev.conllu``. A mirror is thus any copy of a
data directory served over HTTP (``python -m http.server -d DATA_DIR``), or a ``file://`` URL;
it serves import-only files too, and the hashes still decide what is kept. The tests use it to
point downloads at a loopback server.
"""

from rnnkit.datasets.fetching import MIRROR_ENV, Outcome, fetch, import_dataset
from rnnkit.datasets.registry import (
    DataFile,
    Dataset,
    Row,
    data_dir,
    default_registry,
    get_dataset,
    list_datasets,
    parse_registry,
)

__all__ = [
    "MIRROR_ENV",
    "DataFile",
    "Dataset",
    "Outcome",
    "Row",
    "data_dir",
    "default_registry",
    "fetch",
    "get_dataset",
    "import_dataset",
    "list_datasets",
    "parse_registry",
]
