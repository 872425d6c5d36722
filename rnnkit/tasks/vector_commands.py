"""The embed task's commands on word vectors: ``rnnkit embed export``, ``rnnkit analogy``,
and ``rnnkit neighbors --vectors FILE`` (the verb's answer without a model). The embed task
declares them (:class:`~rnnkit.tasks.base.Command`, :class:`~rnnkit.tasks.base.ModelFree`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rnnkit.errors import RnnkitError
from rnnkit.nn.similarity import Ranked, WordVectors
from rnnkit.tasks.base import Command, ModelFree


def neighbors_in_file(path: str, words: list[str], options: Any) -> list[dict[str, Any]]:
    """``neighbors --vectors FILE``: the embed task's answer, from a vectors file."""
    ranked = WordVectors.load(path).neighbors(words, options.k)
    return [
        {"word": word, "known": True, "neighbors": [{"word": w, "similarity": s} for w, s in near]}
        for word, near in zip(words, ranked, strict=True)
    ]


VECTORS_FILE = ModelFree("vectors", "a word2vec or GloVe text file", neighbors_in_file)


def _model_vectors(directory: str) -> WordVectors:
    """The word vectors of an embed model directory."""
    from rnnkit.tasks.embed import EmbedTask

    return EmbedTask.from_dir(directory).word_vectors()


def add_embed(sub: Any) -> argparse.ArgumentParser:
    """Add ``rnnkit embed export``'s parser to the subparsers ``sub``; returns it."""
    p = sub.add_parser("embed", help="word-embedding models: export their vectors")
    actions = p.add_subparsers(dest="embed_command", required=True, metavar="ACTION")
    e = actions.add_parser("export", help="write an embed model's word vectors to a text file")
    e.add_argument("--model", required=True, help="model directory (task embed)")
    e.add_argument("--out", required=True, help="the vectors file to write")
    e.add_argument(
        "--format",
        choices=["word2vec", "glove"],
        default="word2vec",
        help="word2vec: a 'COUNT DIM' header line (default); glove: no header",
    )
    return p


def run_embed(args: argparse.Namespace) -> int:
    """``rnnkit embed export``: write a model's vectors in word2vec or GloVe text format."""
    from rnnkit.data.vectors import write_vectors

    vectors = _model_vectors(args.model)
    write_vectors(args.out, vectors.words, vectors.vectors, args.format)
    dim = vectors.vectors.shape[1]
    print(f"{len(vectors):,} vectors of {dim} dimensions in {args.out} ({args.format} format)")
    return 0


def add_analogy(sub: Any) -> argparse.ArgumentParser:
    """Add ``rnnkit analogy``'s parser to the subparsers ``sub``; returns it."""
    p = sub.add_parser("analogy", help="words nearest to A - B + C (king man woman -> queen)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--vectors", help="a word2vec or GloVe text file")
    source.add_argument("--model", help="an embed model directory")
    p.add_argument("words", nargs=3, metavar=("A", "B", "C"), help="A - B + C")
    p.add_argument("-k", type=int, default=10, help="how many words to list (10)")
    p.add_argument("--json", action="store_true", help="one JSON object per query")
    return p


def run_analogy(args: argparse.Namespace) -> int:
    """``rnnkit analogy A B C``: the ``k`` words nearest to A - B + C."""
    if args.k < 1:
        raise RnnkitError(f"-k {args.k}: must be at least 1")
    vectors = WordVectors.load(args.vectors) if args.vectors else _model_vectors(args.model)
    a, b, c = args.words
    (ranked,) = vectors.analogy([(a, b, c)], args.k)
    _print_ranked(f"{a} - {b} + {c}", ranked, args.json)
    return 0


def _print_ranked(query: str, ranked: Ranked, as_json: bool) -> None:
    if as_json:
        found = [{"word": w, "similarity": round(s, 6)} for w, s in ranked]
        print(json.dumps({"query": query, "neighbors": found}, ensure_ascii=False))
        return
    print(query)
    width = max((len(w) for w, _ in ranked), default=0)
    for word, similarity in ranked:
        print(f"  {word:<{width}}  {similarity:.4f}")


COMMANDS = (Command("embed", add_embed, run_embed), Command("analogy", add_analogy, run_analogy))
