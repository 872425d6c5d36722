"""The adaptive softmax's loss: torch's values, few distinct shapes under CPU autocast, and
memory that stops growing as the clusters' row counts vary from batch to batch."""

import ctypes
import ctypes.util
import sys

import pytest
import torch
from torch import nn

from rnnkit.nn.adaptive import adaptive_nll, bucket_rows
from rnnkit.nn.language_model import LanguageModel, LMModelConfig

HIDDEN, VOCAB, CUTOFFS = 32, 600, [50, 200]


def _softmax() -> nn.AdaptiveLogSoftmaxWithLoss:
    torch.manual_seed(0)
    return nn.AdaptiveLogSoftmaxWithLoss(HIDDEN, VOCAB, cutoffs=CUTOFFS, div_value=4.0)


def _targets(rows: int, in_tail: int, seed: int) -> torch.Tensor:
    """``rows`` targets of which the first ``in_tail`` fall in the first tail cluster, the rest
    in the shortlist."""
    g = torch.Generator().manual_seed(seed)
    tail = torch.randint(CUTOFFS[0], CUTOFFS[1], (in_tail,), generator=g)
    return torch.cat([tail, torch.randint(0, CUTOFFS[0], (rows - in_tail,), generator=g)])


def test_bucket_rows_adds_at_most_an_eighth_and_keeps_eight_sizes_an_octave():
    assert [bucket_rows(n) for n in (1, 15, 16, 17, 18, 19, 31, 33, 1200)] == [
        1, 15, 16, 18, 18, 20, 32, 36, 1280,
    ]  # fmt: skip
    assert {bucket_rows(n) for n in range(1025, 2049)} == {1024 + 128 * k for k in range(1, 9)}
    assert all(n <= bucket_rows(n) <= n * 9 / 8 for n in range(1, 5000))


def test_the_loss_is_torchs_without_autocast_and_close_to_it_under_bf16():
    a = _softmax()
    features = torch.randn(300, HIDDEN)
    target = torch.randint(0, VOCAB, (300,))
    assert torch.equal(adaptive_nll(a, features, target), -a(features, target).output.sum())
    half = features.bfloat16()
    weights = list(a.parameters())
    grads = []
    for loss in (lambda x: adaptive_nll(a, x, target), lambda x: -a(x, target).output.sum()):
        x = half.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = loss(x)
        grads.append((value, *torch.autograd.grad(value, [x, *weights])))
    for ours, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(ours.float(), theirs.float(), rtol=2e-2, atol=2e-3)


def test_the_tails_see_few_row_counts_under_cpu_autocast():
    a = _softmax()
    seen: set[int] = set()
    a.tail[0].register_forward_hook(lambda m, args, out: seen.add(args[0].shape[0]))
    features = torch.randn(256, HIDDEN, dtype=torch.bfloat16)
    for in_tail in range(100, 140):  # forty different counts
        with torch.autocast("cpu", dtype=torch.bfloat16):
            adaptive_nll(a, features, _targets(256, in_tail, in_tail))
    assert seen == {104, 112, 120, 128, 144}


def test_a_gru_word_lm_with_an_adaptive_softmax_trains_under_bf16():
    # A GRU's outputs stay float32 under CPU autocast; torch's own forward failed on them.
    config = LMModelConfig(
        rnn="gru", adaptive_softmax=True, cutoffs=CUTOFFS, hidden_size=HIDDEN, embedding_dim=16
    )
    model = LanguageModel(VOCAB, config)
    tokens = torch.randint(0, VOCAB, (4, 13))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss({"input": tokens[:, :-1], "target": tokens[:, 1:], "reset": True})
    loss.backward()
    assert torch.isfinite(loss)


def _malloc_in_use() -> int:
    """Bytes glibc's malloc has handed out and not taken back (heap and mmap'd blocks)."""

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks"
            " keepcost".split()
        ]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads glibc's malloc counters")
def test_memory_stops_growing_as_cluster_sizes_vary_under_bf16():
    # Unpadded, each new row count left oneDNN kernels in its caches: on an AVX512-BF16 CPU
    # these forty steps kept about 50 MB more each time they ran with new counts. Padded, the
    # counts fall in three sizes met in the warm-up. (A CPU without native bf16 grows neither.)
    a = _softmax()
    features = torch.randn(256, HIDDEN, dtype=torch.bfloat16, requires_grad=True)

    def step(in_tail: int, seed: int) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = adaptive_nll(a, features, _targets(256, in_tail, seed))
        loss.backward()

    for in_tail in (97, 104, 112, 120, 97, 104, 112, 120):
        step(in_tail, 0)
    before = _malloc_in_use()
    for in_tail in range(97, 121):
        step(in_tail, in_tail)
    assert _malloc_in_use() - before < 8 * 2**20
