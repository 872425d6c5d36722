"""The adaptive softmax's loss and log-probabilities, over torch's
:class:`~torch.nn.AdaptiveLogSoftmaxWithLoss` parameters (Grave et al., 2017).

Why not call the module itself when training: each tail cluster's matmuls see only the rows whose
targets fall in that cluster, a count that changes with every batch of real text. Under CPU bf16
autocast those matmuls run in oneDNN, whose primitive cache and ideep's computation cache each
keep a compiled kernel for every new shape (up to 1,024 each), so a word LM's resident memory rose
with every step (2.3 GB after 30 steps on a 33,000-word vocabulary, against 1.2 GB in fp32; see
docs/scale.md). :func:`adaptive_nll` pads each cluster's rows to one of a few sizes per octave
there, so shapes repeat and the caches stop growing after the first steps.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def bucket_rows(n: int) -> int:
    """``n`` rounded up to a number with at most four significant bits (…, 14, 15, 16, 18, 20,
    …, 30, 32, 36, …): at most 1/8 more rows, and eight sizes per octave however large ``n``."""
    if n <= 16:
        return n
    shift = n.bit_length() - 4
    return -(-n >> shift) << shift


def pads_clusters(device: torch.device) -> bool:
    """Whether the tail clusters' rows are padded on ``device`` now: under CPU autocast, whose
    matmuls cache a kernel per shape. fp32 CPU matmuls (BLAS) and CUDA keep nothing per shape,
    so there the loss is torch's own, bit for bit."""
    return device.type == "cpu" and torch.is_autocast_enabled("cpu")


def adaptive_nll(
    a: nn.AdaptiveLogSoftmaxWithLoss, features: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Summed negative log-likelihood of ``target`` ``(n,)`` given ``features`` ``(n, hidden)``:
    ``-a(features, target).output.sum()``, with each tail cluster's rows padded to
    :func:`bucket_rows` when :func:`pads_clusters`. The padding rows repeat row 0 and are cut off
    before the loss, so they add nothing to it or to any gradient. The loss has the features'
    dtype, as torch's has (whose own forward fails on float32 features under autocast, as a
    GRU's are: its bfloat16 cluster scores cannot be copied into them)."""
    if not pads_clusters(features.device):
        return -a(features, target).output.sum()
    output = features.new_zeros(target.shape[0])
    # The head's class of each row: the word itself in the shortlist, else its cluster's entry.
    head_class = target.clone()
    for i, tail in enumerate(a.tail):
        low, high = a.cutoffs[i], a.cutoffs[i + 1]
        rows = ((target >= low) & (target < high)).nonzero().squeeze(1)
        n = rows.numel()
        if n == 0:
            continue
        head_class.index_fill_(0, rows, a.shortlist_size + i)
        padded = F.pad(rows, (0, bucket_rows(n) - n))
        logits = tail(features.index_select(0, padded))[:n]
        words = (target.index_select(0, rows) - low).unsqueeze(1)
        log_probs = F.log_softmax(logits, dim=1).gather(1, words).squeeze(1)
        output.index_copy_(0, rows, log_probs.to(output.dtype))
    head = F.log_softmax(a.head(features), dim=1)
    output = output + head.gather(1, head_class.unsqueeze(1)).squeeze(1)
    return -output.sum()


def adaptive_log_probs(a: nn.AdaptiveLogSoftmaxWithLoss, features: torch.Tensor) -> torch.Tensor:
    """``a.log_prob(features)``, features ``(n, hidden)`` → ``(n, vocab)``. That fills an empty
    tensor slice by slice; the same values joined by one concatenation export to ONNX (no
    in-place writes)."""
    head = F.log_softmax(a.head(features), dim=1)
    parts = [head[:, : a.shortlist_size]]
    for i, tail in enumerate(a.tail):
        cluster = F.log_softmax(tail(features), dim=1)
        parts.append(cluster + head[:, a.shortlist_size + i].unsqueeze(1))
    return torch.cat(parts, dim=1)


__all__ = ["adaptive_log_probs", "adaptive_nll", "bucket_rows", "pads_clusters"]
