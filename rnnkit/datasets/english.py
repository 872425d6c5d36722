"""The English text the project's datasets hold, as one training text for character LMs.

The shared pair of character LMs (``configs/english-char-lm.yaml``, forward and backward) reads
every English training split the registry knows, in the tokenised form the taggers and
classifiers see (tokens joined by spaces, one sentence a line), and is chosen on EWT's dev
sentences, the web text the taggers are scored on. No dev or test split of any dataset enters
the training text, so no downstream test sentence was ever read by an LM.

    python -m rnnkit.datasets.english --out runs/english-text [--data-dir DIR]

writes ``train.txt`` and ``dev.txt`` there (``docs/tagging.md``, "Contextual features").
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from rnnkit.data.tagged import read_conllu
from rnnkit.datasets.registry import data_dir

# Web text is what the taggers are scored on and the scarcest here, so EWT's sentences are read
# twice per pass (they gained most in docs/tagging.md's comparison of LM pairs).
EWT_REPEATS = 2


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def _ewt(root: Path, split: str) -> Iterator[str]:
    for sentence in read_conllu(root / "ud-english-ewt" / f"en_ewt-ud-{split}.conllu", "upos"):
        yield " ".join(sentence.tokens)


def training_lines(root: Path) -> Iterator[str]:
    """Every English training sentence or paragraph under data directory ``root``."""
    yield from _lines(root / "wikitext-2" / "train.txt")
    for _ in range(EWT_REPEATS):
        yield from _ewt(root, "train")
    yield from (line.split(" ", 1)[1] for line in _lines(root / "sst2" / "stsa.binary.train"))
    yield from (line.split(" ", 1)[1] for line in _lines(root / "trec" / "train_5500.label"))
    yield from _lines(root / "tinyshakespeare" / "input.txt")
    # Tatoeba repeats its short English sentences once per French translation: each once.
    english = (line.split("\t", 1)[0] for line in _lines(root / "eng-fra" / "fra.txt"))
    yield from dict.fromkeys(english)


def write(out: Path, root: Path) -> dict[Path, str]:
    """Write ``out/train.txt`` (:func:`training_lines`) and ``out/dev.txt`` (EWT's dev
    sentences); returns each path with the text written there."""
    out.mkdir(parents=True, exist_ok=True)
    texts = {
        out / "train.txt": "".join(line + "\n" for line in training_lines(root)),
        out / "dev.txt": "".join(line + "\n" for line in _ewt(root, "dev")),
    }
    for path, text in texts.items():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return texts


def main(argv: list[str] | None = None) -> None:
    """``python -m rnnkit.datasets.english --out DIR [--data-dir DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for train.txt and dev.txt")
    parser.add_argument("--data-dir", help="where datasets live (default: $RNNKIT_DATA)")
    args = parser.parse_args(argv)
    for path, text in write(Path(args.out), data_dir(args.data_dir)).items():
        print(f"{path}: {len(text):,} characters, {text.count(chr(10)):,} lines")


if __name__ == "__main__":
    main()
