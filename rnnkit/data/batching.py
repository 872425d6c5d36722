"""Turning lists of id sequences into padded, masked batches, grouping them by length, and
laying out an epoch of training batches with its own seeded random draws."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch


def pad(
    sequences: Sequence[Sequence[int]], pad_id: int = 0, length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id sequences into one tensor.

    Returns ``(ids, mask)``: ids ``(batch, time)`` long, mask ``(batch, time)`` bool, True on
    real tokens. ``time`` is the longest sequence, or ``length`` when given (which must fit).
    """
    longest = max((len(s) for s in sequences), default=0)
    time = longest if length is None else length
    if time < longest:
        raise ValueError(f"length {length} is shorter than the longest sequence ({longest})")
    ids = torch.full((len(sequences), time), pad_id, dtype=torch.long)
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    mask = torch.arange(time).unsqueeze(0) < lengths.unsqueeze(1)
    return ids, mask


def bucket_batches(
    lengths: Sequence[int],
    batch_size: int,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    bucket_factor: int = 50,
) -> list[list[int]]:
    """Group example indices into batches of similar length to waste little on padding.

    Examples are (optionally) shuffled, cut into pools of ``batch_size * bucket_factor``,
    sorted by length inside each pool, cut into batches, and the batches shuffled again; so
    batches are near-uniform in length yet their order stays random. Without ``shuffle`` the
    order is fully sorted by length (longest first), which is what evaluation wants.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    n = len(lengths)
    if not shuffle:
        order = sorted(range(n), key=lambda i: -lengths[i])
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    order = torch.randperm(n, generator=generator).tolist()
    pool = batch_size * max(1, bucket_factor)
    batches: list[list[int]] = []
    for start in range(0, n, pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


def longest_first(
    lengths: Sequence[int],
    batch_size: int,
    max_tokens: int | None = None,
    widths: Sequence[int] | None = None,
) -> list[list[int]]:
    """Batches of the indices of the non-empty items, longest first, for inference: similar
    lengths share a batch and waste little on padding. Items of length 0 are left out.

    With ``max_tokens`` a batch is also closed before its padded size, items × its longest
    length × its widest of ``widths`` (per item; 1 when not given), would pass ``max_tokens``,
    so that its memory stays bounded however long the inputs; an item over it alone gets a
    batch of its own. Batches that fit are exactly those of ``batch_size`` alone, so answers
    do not change where nothing needed cutting.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    order = sorted((i for i, n in enumerate(lengths) if n), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    batch: list[int] = []
    longest = widest = 0
    for i in order:
        width = widths[i] if widths is not None else 1
        size = (len(batch) + 1) * max(longest, lengths[i]) * max(widest, width)
        full = len(batch) == batch_size or (max_tokens is not None and size > max_tokens)
        if batch and full:
            batches.append(batch)
            batch, longest, widest = [], 0, 0
        batch.append(i)
        longest, widest = max(longest, lengths[i]), max(widest, width)
    if batch:
        batches.append(batch)
    return batches


def move(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Send every tensor of a batch dict to ``device`` (non-tensors pass through)."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def epoch_seed(seed: int, epoch: int, stride: int = 1, offset: int = 0) -> int:
    """The seed of an epoch's random draws, ``seed * 7919 + epoch * stride + offset``: a
    deterministic function of ``train.seed`` and the epoch (numbered from 1), so that a resumed
    run draws what an uninterrupted one would have."""
    return seed * 7919 + epoch * stride + offset


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded with :func:`epoch_seed` for the epoch's shuffling and sampling."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch))


class Epoch:
    """One epoch of training batches: ``order`` lists the example indices of each batch, and
    ``make(rows)`` builds that batch (a dict of tensors) when iteration reaches it. Iterating
    again gives the same batches in the same order."""

    def __init__(self, order: list[list[int]], make: Callable[[list[int]], dict[str, Any]]):
        self.order, self.make = order, make

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for rows in self.order:
            yield self.make(rows)
