"""Queries on word vectors: cosine nearest neighbours and analogies.

The vectors are normalised to unit length once; a batch of queries is then one matrix product
``(queries, dim) @ (dim, words)`` followed by ``topk``. An analogy ``a - b + c`` (``king - man
+ woman``) adds the unit vectors and ranks words by cosine to the sum (3CosAdd, as word2vec's
``compute-accuracy`` and gensim's ``most_similar`` do); the query words themselves are left out
of every answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.nn import functional as F

from rnnkit.errors import DataError

Ranked = list[tuple[str, float]]  # (word, cosine similarity), most similar first


class WordVectors:
    """Words and their vectors ``(words, dim)``, ready for similarity queries."""

    def __init__(self, words: Sequence[str], vectors: torch.Tensor):
        if vectors.dim() != 2 or vectors.shape[0] != len(words):
            raise ValueError(f"{len(words)} words but vectors of shape {tuple(vectors.shape)}")
        self.words = list(words)
        self.vectors = vectors.detach().float().cpu()
        self.unit = F.normalize(self.vectors, dim=1)  # all-zero rows stay zero
        self.index: dict[str, int] = {}
        self.folded: dict[str, int] = {}
        for i, word in enumerate(self.words):  # the first spelling wins, as in the file
            self.index.setdefault(word, i)
            self.folded.setdefault(word.lower(), i)

    @classmethod
    def load(cls, path: str | Path) -> WordVectors:
        """Read a word2vec or GloVe text file."""
        from rnnkit.data.vectors import read_vectors

        return cls(*read_vectors(path))

    def __len__(self) -> int:
        return len(self.words)

    def find(self, word: str) -> int | None:
        """Row of ``word``: as written, else case-insensitively (``france`` finds ``France``
        in cased vectors); None when absent."""
        hit = self.index.get(word)
        return hit if hit is not None else self.folded.get(word.lower())

    def rows(self, words: Sequence[str]) -> list[int]:
        """Rows of ``words``; a DataError names every word that is missing."""
        found = [self.find(w) for w in words]
        missing = [w for w, i in zip(words, found, strict=True) if i is None]
        if missing:
            raise DataError(
                f"not among the {len(self):,} words of the vectors: {', '.join(missing)}"
            )
        return [int(i) for i in found]  # type: ignore[arg-type]

    def nearest(self, targets: torch.Tensor, exclude: Sequence[Sequence[int]], k: int) -> list:
        """The ``k`` words of highest cosine to each target ``(queries, dim)``, leaving out the
        rows in ``exclude[q]`` for query ``q``. Returns one :data:`Ranked` list per query."""
        sims = F.normalize(targets.float(), dim=1) @ self.unit.T  # (queries, words)
        for q, rows in enumerate(exclude):
            sims[q, list(rows)] = float("-inf")
        k = max(0, min(k, len(self) - min((len(set(e)) for e in exclude), default=0)))
        values, indices = sims.topk(k, dim=1)
        return [
            [(self.words[i], float(v)) for i, v in zip(ix.tolist(), vs.tolist(), strict=True)]
            for ix, vs in zip(indices, values, strict=True)
        ]

    def neighbors(self, words: Sequence[str], k: int = 10) -> list[Ranked]:
        """The ``k`` nearest words by cosine of each query word (the word itself left out)."""
        rows = self.rows(words)
        return self.nearest(self.unit[rows], [[r] for r in rows], k)

    def analogy(self, triples: Sequence[tuple[str, str, str]], k: int = 10) -> list[Ranked]:
        """For each ``(a, b, c)``, the words nearest to ``a - b + c`` (``king man woman`` →
        ``queen``), the three query words left out."""
        if not triples:
            return []
        rows = [self.rows(list(t)) for t in triples]
        ids = torch.tensor(rows)  # (queries, 3)
        targets = self.unit[ids[:, 0]] - self.unit[ids[:, 1]] + self.unit[ids[:, 2]]
        return self.nearest(targets, rows, k)
