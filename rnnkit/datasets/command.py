"""The ``rnnkit data list | fetch | import`` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rnnkit.datasets.fetching import MIRROR_ENV, fetch, import_dataset
from rnnkit.datasets.registry import Row, data_dir, get_dataset, human_size, list_datasets


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
    """``rnnkit data``: list the known datasets, or fetch or import one and say what was
    written and whether it was verified against checksums."""
    root = data_dir(args.data_dir)
    if args.data_command == "list":
        _print_rows(list_datasets(root), root)
        return 0
    dataset = get_dataset(args.name)
    if args.data_command == "fetch":
        outcome = fetch(args.name, root, args.mirror, progress=sys.stderr.isatty())
    else:
        outcome = import_dataset(args.name, args.dir, root)
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
