"""Training examples for word embeddings, made with tensor operations over a whole corpus.

A corpus is two aligned 1-D tensors: ``ids`` (the token ids of the words kept, in text order)
and ``sentences`` (the sentence number of each token). A context never crosses a sentence
boundary. From it come, without a Python loop per word:

* frequent-word subsampling (Mikolov et al. 2013, in the form word2vec's C code and gensim use:
  a word of corpus frequency ``f`` is kept with probability ``(sqrt(f / t) + 1) * t / f``);
* per-centre window sizes, drawn from ``1..window`` (word2vec's "reduced window") or fixed;
* skip-gram ``(centre, context)`` position pairs, CBOW ``(centre, contexts)`` rows, and N-gram
  ``(previous N words, next word)`` rows;
* the noise table for negative sampling: word ``w`` fills a share of it proportional to
  ``count(w) ** 0.75``, so a uniform draw from the table is a draw from that distribution.

Functions that make examples take a centre range ``[start, stop)`` so that an epoch can be cut
into chunks; contexts may lie outside the range.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from rnnkit.data.vocab import Vocab

NO_CONTEXT = -1  # a CBOW context slot with no word in it


def encode_lines(lines: Iterable[str], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor]:
    """Whitespace tokens of each line → ``(ids, sentences)``, both ``(tokens,)`` long.

    Each line is a sentence. Words outside the vocabulary, and its specials (``<unk>``,
    ``<pad>``), are dropped, as word2vec drops words under its minimum count.
    """
    stoi, first = vocab.stoi, len(vocab.specials)
    ids: list[int] = []
    lengths: list[int] = []
    for line in lines:
        row = [i for i in map(stoi.get, line.split()) if i is not None and i >= first]
        ids.extend(row)
        lengths.append(len(row))
    sentences = torch.repeat_interleave(
        torch.arange(len(lengths)), torch.tensor(lengths, dtype=torch.long)
    )
    return torch.tensor(ids, dtype=torch.long), sentences


def keep_probabilities(counts: torch.Tensor, threshold: float) -> torch.Tensor:
    """Probability of keeping each word ``(vocab,)`` under subsampling with ``threshold``.

    counts: ``(vocab,)`` corpus counts. ``threshold`` 0 keeps every word.
    """
    counts = counts.double()
    if threshold <= 0:
        return torch.ones_like(counts, dtype=torch.float32)
    freq = counts / counts.sum().clamp(min=1)
    keep = ((freq / threshold).sqrt() + 1) * threshold / freq.clamp(min=1e-30)
    return keep.clamp(max=1.0).float()


def subsample(
    ids: torch.Tensor, sentences: torch.Tensor, keep: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop each token with probability ``1 - keep[id]``; returns the shorter corpus."""
    kept = torch.rand(ids.numel(), generator=generator) < keep[ids]
    return ids[kept], sentences[kept]


def window_sizes(
    tokens: int, window: int, dynamic: bool, generator: torch.Generator
) -> torch.Tensor:
    """Context width on each side for every centre ``(tokens,)``: uniform in ``1..window``
    when ``dynamic`` (nearer words are seen more often), else ``window``."""
    if dynamic:
        return torch.randint(1, window + 1, (tokens,), generator=generator)
    return torch.full((tokens,), window, dtype=torch.long)


def spans(sentences: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How many context words each centre has on its left and on its right ``(tokens,)``
    each: its window size, cut at the ends of its sentence.

    sentences: ``(tokens,)`` sentence numbers, non-decreasing; sizes: ``(tokens,)`` windows.
    """
    n = sentences.numel()
    where = torch.arange(n)
    if n == 0:
        return where, where
    new = torch.ones(n, dtype=torch.bool)
    new[1:] = sentences[1:] != sentences[:-1]  # a sentence starts here
    first = torch.cummax(torch.where(new, where, 0), 0).values  # its sentence's first token
    end = torch.ones(n, dtype=torch.bool)
    end[:-1] = new[1:]  # a sentence ends here
    last = torch.cummin(torch.where(end, where, n).flip(0), 0).values.flip(0)
    return torch.minimum(sizes, where - first), torch.minimum(sizes, last - where)


def window_pairs(
    left: torch.Tensor, right: torch.Tensor, start: int = 0, stop: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``(centre, context)`` position pair of the centres in ``[start, stop)``, centre by
    centre in text order and, within a centre, from the farthest left context to the farthest
    right one (word2vec's order), given the :func:`spans` ``left`` and ``right``.

    Returns two ``(pairs,)`` long tensors: the centre positions and the context positions.
    """
    stop = left.numel() if stop is None else stop
    counts = left[start:stop] + right[start:stop]
    centres = torch.repeat_interleave(torch.arange(start, stop), counts)
    if centres.numel() == 0:
        return centres, centres
    firsts = counts.cumsum(0) - counts  # each centre's first pair
    rank = torch.arange(centres.numel()) - torch.repeat_interleave(firsts, counts)
    rank -= torch.repeat_interleave(left[start:stop], counts)  # -left .. right - 1
    rank += rank >= 0  # -left .. -1, 1 .. right: the offsets
    return centres, centres + rank


def _offsets(window: int) -> list[int]:
    return [o for d in range(1, window + 1) for o in (-d, d)]


def _context_ok(
    sentences: torch.Tensor, sizes: torch.Tensor, centres: torch.Tensor, offset: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For centres ``(m,)`` and one offset: the context positions ``(m,)`` and whether each is
    a context (inside the corpus, inside the centre's window, in the same sentence)."""
    where = centres + offset
    inside = (where >= 0) & (where < sentences.numel())
    clamped = where.clamp(0, sentences.numel() - 1)
    ok = inside & (sizes[centres] >= abs(offset)) & (sentences[clamped] == sentences[centres])
    return where, ok


def skipgram_pairs(
    sentences: torch.Tensor,
    sizes: torch.Tensor,
    start: int = 0,
    stop: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of every ``(centre, context)`` pair for the centres in ``[start, stop)``.

    sentences, sizes: ``(tokens,)``. Returns two ``(pairs,)`` long tensors, grouped by offset
    (-1, +1, -2, +2, ...), not shuffled.
    """
    stop = sentences.numel() if stop is None else stop
    centres = torch.arange(start, stop)
    if centres.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    found_c, found_x = [], []
    for offset in _offsets(int(sizes[start:stop].max())):
        where, ok = _context_ok(sentences, sizes, centres, offset)
        found_c.append(centres[ok])
        found_x.append(where[ok])
    return torch.cat(found_c), torch.cat(found_x)


def count_skipgram_pairs(sentences: torch.Tensor, sizes: torch.Tensor) -> int:
    """How many pairs :func:`skipgram_pairs` makes over the whole corpus, without making them."""
    if sentences.numel() == 0:
        return 0
    centres = torch.arange(sentences.numel())
    return sum(
        int(_context_ok(sentences, sizes, centres, o)[1].sum()) for o in _offsets(int(sizes.max()))
    )


def cbow_rows(
    sentences: torch.Tensor,
    sizes: torch.Tensor,
    window: int,
    start: int = 0,
    stop: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CBOW examples for the centres in ``[start, stop)`` that have at least one context.

    Returns centre positions ``(rows,)`` and context positions ``(rows, 2 * window)`` in offset
    order (-1, +1, -2, +2, ...), ``NO_CONTEXT`` where a slot is empty.
    """
    stop = sentences.numel() if stop is None else stop
    centres = torch.arange(start, stop)
    slots = []
    for offset in _offsets(window):
        where, ok = _context_ok(sentences, sizes, centres, offset)
        slots.append(torch.where(ok, where, NO_CONTEXT))
    if not slots:
        return centres[:0], torch.zeros(0, 0, dtype=torch.long)
    contexts = torch.stack(slots, dim=1)
    some = (contexts != NO_CONTEXT).any(dim=1)
    return centres[some], contexts[some]


def count_cbow_rows(sentences: torch.Tensor, sizes: torch.Tensor, window: int) -> int:
    """How many rows :func:`cbow_rows` makes over the whole corpus."""
    centres = torch.arange(sentences.numel())
    some = torch.zeros(sentences.numel(), dtype=torch.bool)
    for offset in _offsets(window):
        some |= _context_ok(sentences, sizes, centres, offset)[1]
    return int(some.sum())


def ngram_rows(
    sentences: torch.Tensor,
    context: int,
    targets: torch.Tensor | None = None,
    start: int = 0,
    stop: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """N-gram language-model examples: each target position in ``[start, stop)`` preceded by
    ``context`` words of its own sentence.

    targets: optional ``(tokens,)`` bool, False for targets left out (subsampled). Returns
    target positions ``(rows,)`` and context positions ``(rows, context)``, oldest first.
    """
    stop = sentences.numel() if stop is None else stop
    where = torch.arange(max(start, context), max(stop, context))
    ok = sentences[where - context] == sentences[where]
    if targets is not None:
        ok &= targets[where]
    where = where[ok]
    return where, where.unsqueeze(1) + torch.arange(-context, 0)


def noise_table(counts: torch.Tensor, power: float = 0.75, size: int = 10_000_000) -> torch.Tensor:
    """A table of word ids ``(about size,)``, int32, where each word with a count fills a share
    proportional to ``count ** power`` (at least one slot). Words of count 0 never appear."""
    weights = counts.double().clamp(min=0) ** power
    weights[counts <= 0] = 0
    if weights.sum() <= 0:
        raise ValueError("no word has a positive count")
    slots = (weights / weights.sum() * size).round().long()
    slots[(counts > 0) & (slots == 0)] = 1
    return torch.repeat_interleave(torch.arange(counts.numel(), dtype=torch.int32), slots)


def draw_negatives(
    table: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator | None = None
) -> torch.Tensor:
    """Noise word ids of ``shape`` (long), drawn from a :func:`noise_table`."""
    return table[torch.randint(table.numel(), shape, generator=generator)].long()


class NoiseSampler:
    """Draws noise words from the unigram counts raised to ``power``, for training batches.

    A uniform draw from a table of ``size`` word ids in which each word fills a share
    proportional to ``count ** power`` (:func:`noise_table`), as word2vec draws them. The table
    is small enough (4 MB by default) to stay in the CPU's cache.
    """

    def __init__(self, counts: torch.Tensor, power: float = 0.75, size: int = 1 << 20):
        self.table = noise_table(counts, power, size)

    def draw(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Noise word ids of ``shape`` (long)."""
        n = self.table.numel()
        picks = torch.randint(n, shape, generator=generator)
        return self.table.index_select(0, picks.view(-1)).view(shape).long()
