"""The word embedder: input vectors → a context encoding per example → scores against output
vectors, for the ``ngram`` (the seed's N-gram LM), ``cbow`` and ``skipgram`` methods, trained
with negative sampling or a full softmax.

Trained with plain SGD (``sparse=True``), CBOW and skip-gram with negative sampling take
word2vec's hand-written gradient instead of autograd's: the forward pass computes the loss and,
from the same gathered rows, the gradient rows of both tables; the gradients are handed to the
optimizer as :class:`RowGrad` (the rows and where they go), which SGD's step adds into the
tables with one ``index_add_`` each. Only the rows of the batch are read or written, as in
word2vec, with no autograd graph and no sparse tensor to build or coalesce.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from rnnkit.config import setting
from rnnkit.nn.encoder import width
from rnnkit.runtime import gather_rows

Method = Literal["ngram", "cbow", "skipgram"]
PAD_ID = 0  # <pad>: fills empty CBOW context slots; its vector is never read or trained


@dataclass
class EmbedModelConfig:
    """The word vectors' method, size and loss (``model:`` of an embed recipe)."""

    method: Method = "skipgram"
    embedding_dim: int = width(100, "size of the word vectors")
    loss: Literal["negative", "softmax"] = "negative"  # negative sampling, or a full softmax
    negatives: int = width(5, "noise words per example (loss: negative)")
    noise_power: float = setting(0.75, "noise distribution: unigram counts raised to this power", 0)
    context: int = width(2, "ngram: previous words read (the seed's trigram model reads 2)")
    hidden_size: int = width(128, "ngram: hidden layer (and output vector) size")


class RowGrad(torch.Tensor):
    """The gradient of a table ``(vocab, dim)`` kept as the rows it adds: row ``index[i]``
    gets ``weights[i] * vectors[source[i]]`` (an index may repeat; its rows add up).

    It stands in ``param.grad`` so that :class:`torch.optim.SGD`'s step, ``param.add_(grad,
    alpha=-lr)``, adds those rows into the table in place, touching only them, in one pass over
    ``vectors`` (word2vec's update, with no ``(n, dim)`` rows made first). The step consumes
    it: ``param.grad`` is None afterwards (the batch's tensors are let go, and a model moved or
    converted later has no such gradient to carry). ``to_dense()`` gives the ordinary
    gradient; any other use (another optimizer, clipping) sees that dense gradient, and
    in-place changes other than a scaling are refused rather than silently lost.
    """

    index: torch.Tensor
    weights: torch.Tensor | None
    vectors: torch.Tensor
    source: torch.Tensor | None

    @staticmethod
    def __new__(
        cls,
        shape: torch.Size,
        index: torch.Tensor,
        vectors: torch.Tensor,
        weights: torch.Tensor | None = None,
        source: torch.Tensor | None = None,
    ) -> RowGrad:
        """index ``(n,)``; vectors ``(m, dim)``; weights ``(n,)`` (default 1); source ``(n,)``
        the vector of each row (default ``0 .. n-1``, which needs ``m == n``)."""
        base = vectors.new_zeros(()).expand(shape)  # the right shape, dtype and device, no memory
        grad = torch.Tensor._make_subclass(cls, base)
        grad.index, grad.vectors, grad.weights, grad.source = index, vectors, weights, source
        return grad

    def add_into(self, table: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """``table += alpha * self``, in place; returns ``table``.

        Each row gets one axpy per entry straight from ``vectors``, in the entries' order (a
        ``(vocab × m)`` sparse matrix of the weights times the vectors, added in place: one
        serial loop in torch, so the result does not depend on the number of threads).
        """
        with torch._C.DisableTorchFunctionSubclass():
            if self.weights is None and self.source is None:
                return table.index_add_(0, self.index, self.vectors, alpha=alpha)
            weights, source = self._parts()
            matrix = torch.sparse_coo_tensor(
                torch.stack([self.index, source]),
                weights,
                (table.shape[0], self.vectors.shape[0]),
                check_invariants=False,
            )
            return table.addmm_(matrix, self.vectors, alpha=alpha)

    def dense(self) -> torch.Tensor:
        """The gradient as an ordinary tensor ``(vocab, dim)``."""
        with torch._C.DisableTorchFunctionSubclass():
            out = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        return self.add_into(out)

    # Metadata a caller may read without making the dense gradient.
    _SAFE = frozenset(
        {
            torch.Tensor.size, torch.Tensor.dim, torch.Tensor.numel,
            torch.Tensor.is_sparse.__get__, torch.Tensor.layout.__get__, torch.Tensor.shape.__get__,
            torch.Tensor.dtype.__get__, torch.Tensor.device.__get__, torch.Tensor.is_cuda.__get__,
            torch.Tensor.grad_fn.__get__, torch.Tensor.requires_grad.__get__,
            torch.Tensor.requires_grad_, torch.Tensor.detach_,
        }
    )  # fmt: skip

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in cls._SAFE:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        if func is torch.Tensor.add_ and len(args) == 2 and type(args[0]) is not cls:
            table, grad = args  # SGD's step: applied once, then let go
            grad.add_into(table, kwargs.get("alpha", 1))
            if table.grad is grad:
                table.grad = None
            return table
        if func in (torch.Tensor.to_dense, torch.Tensor.clone):
            return args[0].dense()
        if args and type(args[0]) is cls and getattr(func, "__name__", "").endswith("_"):
            if func in (torch.Tensor.mul_, torch.Tensor.div_) and not kwargs and len(args) == 2:
                weights, _ = args[0]._parts()
                with torch._C.DisableTorchFunctionSubclass():
                    args[0].weights = func(weights.clone(), args[1])
                return args[0]
            raise TypeError(f"a RowGrad cannot be changed in place by {func.__name__}")
        dense = [a.dense() if type(a) is cls else a for a in args]
        with torch._C.DisableTorchFunctionSubclass():
            return func(*dense, **kwargs)

    def all_summed(self) -> RowGrad:
        """The sum of this gradient over every process: all their rows, in rank order (see
        :func:`rnnkit.runtime.sum_gradients`). Every process must call it."""
        weights, source = self._parts()
        with torch._C.DisableTorchFunctionSubclass():
            vectors = gather_rows(self.vectors)
            starts = torch.tensor([0] + [v.shape[0] for v in vectors]).cumsum(0)
            sources = [
                s + int(first) for s, first in zip(gather_rows(source), starts[:-1], strict=True)
            ]
            return RowGrad(
                self.shape,
                torch.cat(gather_rows(self.index)),
                torch.cat(vectors),
                torch.cat(gather_rows(weights)),
                torch.cat(sources),
            )

    def _parts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weights and sources, defaults filled in."""
        n = self.index.numel()
        weights = self.vectors.new_ones(n) if self.weights is None else self.weights
        return weights, torch.arange(n) if self.source is None else self.source

    def scaled(self, factor: float) -> RowGrad:
        """This gradient times ``factor``, as a new RowGrad: only its weights are scaled."""
        weights, source = self._parts()
        return RowGrad(self.shape, self.index, self.vectors, weights * factor, source)

    def plus(self, other: RowGrad) -> RowGrad:
        """The sum of two row gradients of one table, as one."""
        (w1, s1), (w2, s2) = self._parts(), other._parts()
        return RowGrad(
            self.shape,
            torch.cat([self.index, other.index]),
            torch.cat([self.vectors, other.vectors]),
            torch.cat([w1, w2]),
            torch.cat([s1, s2 + self.vectors.shape[0]]),
        )


def _accumulate(table: torch.Tensor, grad: RowGrad) -> None:
    """Add a gradient to ``table.grad`` (as autograd would accumulate it)."""
    if table.grad is None:
        table.grad = grad
    elif type(table.grad) is RowGrad:
        table.grad = table.grad.plus(grad)
    else:
        table.grad = grad.add_into(table.grad.to_dense().clone())


class _HandGradient(torch.autograd.Function):
    """The loss of a batch as its value; backward hands the precomputed gradients to the
    tables."""

    @staticmethod
    def forward(ctx: Any, embed: torch.Tensor, out: torch.Tensor, step: tuple) -> torch.Tensor:
        """The batch's mean loss (0-dim) of ``step``, ``(value, (embed grad, out grad))``; the
        tables are inputs only so that backward reaches them."""
        value, ctx.grads = step
        ctx.tables = (embed, out)
        return value

    @staticmethod
    def backward(ctx: Any, upstream: torch.Tensor) -> tuple[None, None, None]:
        """Accumulate the precomputed row gradients, times ``upstream`` (0-dim), into the
        tables' ``grad``; autograd gets no gradients back."""
        scale = float(upstream)
        for table, grad in zip(ctx.tables, ctx.grads, strict=True):
            _accumulate(table, grad if scale == 1.0 else grad.scaled(scale))
        ctx.grads = ctx.tables = None
        return None, None, None


class WordEmbedder(nn.Module):
    """Input vectors → a context encoding per example → scores against output vectors."""

    def __init__(self, vocab_size: int, config: EmbedModelConfig, sparse: bool):
        super().__init__()
        c = config
        self.method, self.objective, self.sparse = c.method, c.loss, sparse
        self.embed = nn.Embedding(vocab_size, c.embedding_dim, sparse=sparse)
        bound = 0.5 / c.embedding_dim  # word2vec's start
        nn.init.uniform_(self.embed.weight, -bound, bound)
        width = c.embedding_dim
        self.hidden = None
        if c.method == "ngram":
            self.hidden = nn.Linear(c.context * c.embedding_dim, c.hidden_size)
            width = c.hidden_size
        self.out = nn.Embedding(vocab_size, width, sparse=sparse)
        nn.init.zeros_(self.out.weight)  # word2vec's start
        # Plain SGD on CBOW or skip-gram with negative sampling: word2vec's hand gradient.
        self.by_hand = sparse and c.loss == "negative" and c.method != "ngram"

    sums_gradients = True
    """The loss's gradient is the batch's sum (see :meth:`loss`): the Trainer adds the
    processes' gradients instead of averaging them, and reduces them itself, sparse and row
    gradients included, which DistributedDataParallel cannot."""

    def encode(self, inputs: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """The vector that predicts each example's target ``(batch, width)``.

        inputs: skipgram ``(batch,)`` centre ids; cbow ``(batch, slots)`` context ids, ``0``
        in empty slots, or with ``offsets`` ``(batch,)`` the context ids of all examples one
        after another ``(contexts,)``, example ``i``'s starting at ``offsets[i]``; ngram
        ``(batch, context)`` previous word ids, oldest first.
        """
        if self.method == "skipgram":
            return self.embed(inputs)
        if self.method == "cbow":
            if offsets is None:
                total = F.embedding_bag(
                    inputs, self.embed.weight, mode="sum", sparse=self.sparse, padding_idx=PAD_ID
                )
                count = (inputs != PAD_ID).sum(1, keepdim=True).clamp(min=1)
            else:
                total = F.embedding_bag(
                    inputs, self.embed.weight, offsets, mode="sum", sparse=self.sparse
                )
                count = _bag_sizes(offsets, inputs.numel()).unsqueeze(1).clamp(min=1)
            # The mean goes forward; backward, each context word gets the whole error of the
            # mean, not its 1/n share: word2vec's and gensim's CBOW update (cbow_mean=1).
            return total + (total / count - total).detach()
        return F.relu(self.hidden(self.embed(inputs).flatten(1)))

    def example_losses(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Loss of each example ``(batch,)``.

        batch: ``input`` and optionally ``offsets`` (see :meth:`encode`), ``target``
        ``(batch,)``, and for negative sampling ``negatives`` ``(batch, k)``. Negative
        sampling: ``-log σ(u_t·h) - Σ_n log σ(-u_n·h)`` over the noise words that differ from
        the target; softmax: cross-entropy.
        """
        h = self.encode(batch["input"], batch.get("offsets"))
        target = batch["target"]
        if self.objective == "softmax":
            return F.cross_entropy(h @ self.out.weight.T, target, reduction="none")
        negatives = batch["negatives"]
        words = torch.cat([target.unsqueeze(1), negatives], dim=1)  # (batch, 1 + k)
        scores = (self.out(words) * h.unsqueeze(1)).sum(-1)  # (batch, 1 + k)
        real = (negatives != target.unsqueeze(1)).to(scores.dtype)
        return -F.logsigmoid(scores[:, 0]) - (F.logsigmoid(-scores[:, 1:]) * real).sum(1)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean loss per example as its value, with the gradient of the sum: ``train.lr``
        is then a per-example step size, as in word2vec, whatever the batch size."""
        if self.by_hand and torch.is_grad_enabled():
            step = self.hand_gradient(batch)
            return _HandGradient.apply(self.embed.weight, self.out.weight, step)
        per_example = self.example_losses(batch)
        total = per_example.sum()
        return per_example.mean().detach() + (total - total.detach())

    @torch.no_grad()
    def hand_gradient(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple]:
        """Negative sampling's loss and gradient by hand, as word2vec computes them.

        Returns the mean loss per example (0-dim) and the gradients of the *summed* loss for
        ``embed.weight`` and ``out.weight``, as :class:`RowGrad`. With ``h`` the encoding and
        ``u_w`` the output vector of word ``w``, a score ``s = u_w·h`` has the gradient ``g =
        σ(s) - label`` (label 1 for the target, 0 for a noise word; ``g = 0`` for a noise word
        equal to the target): ``g·h`` goes to ``u_w`` and ``Σ g·u_w`` to ``h``, which CBOW
        passes whole to every context word. The batch is as for :meth:`example_losses`.
        """
        target, negatives, inputs = batch["target"], batch["negatives"], batch["input"]
        embed, out = self.embed.weight, self.out.weight
        size = target.numel()
        if self.method == "skipgram":
            h = embed.index_select(0, inputs)
        else:
            offsets = batch.get("offsets")
            if offsets is None:  # padded rows → the contexts one after another
                kept = inputs != PAD_ID
                inputs, sizes = inputs[kept], kept.sum(1)
                offsets = sizes.cumsum(0) - sizes
            else:
                sizes = _bag_sizes(offsets, inputs.numel())
            h = F.embedding_bag(inputs, embed, offsets, mode="sum")
            h /= sizes.clamp(min=1).unsqueeze(1).to(h.dtype)
        words = torch.cat([target.unsqueeze(1), negatives], dim=1)  # (batch, 1 + k)
        scores = _row_dots(h, out, words)  # u_w·h for each example's words
        real = negatives != target.unsqueeze(1)
        scores[:, 1:].neg_()  # now the logits of the labels: u_t·h, -u_n·h
        losses = F.softplus(-scores)  # -log σ
        losses[:, 1:].mul_(real)
        value = losses.sum() / max(1, size)
        grad = torch.sigmoid(scores).sub_(1)  # d(-log σ(x))/dx = σ(x) - 1
        grad[:, 1:].neg_().mul_(real)  # x = -s for the noise words
        grad_h = F.embedding_bag(words, out, mode="sum", per_sample_weights=grad)
        each = _row_of_each(size, words.shape[1])
        out_grad = RowGrad(out.shape, words.view(-1), h, grad.view(-1), each)
        if self.method == "skipgram":
            return value, (RowGrad(embed.shape, inputs, grad_h), out_grad)
        owner = torch.repeat_interleave(torch.arange(size), sizes)
        return value, (RowGrad(embed.shape, inputs, grad_h, None, owner), out_grad)


def _row_dots(h: torch.Tensor, table: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """``table[words[i, j]] · h[i]`` for every ``(i, j)`` ``(batch, n)``, read straight from the
    table (a sampled matrix product: no ``(batch, n, dim)`` rows are gathered first).

    h: ``(batch, dim)``; table: ``(vocab, dim)``; words: ``(batch, n)`` ids.
    """
    size, n = words.shape
    starts = _row_starts(size, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        pattern = torch.sparse_csr_tensor(
            starts,
            words.reshape(-1),
            h.new_zeros(size * n),
            (size, table.shape[0]),
            check_invariants=False,
        )
    dots = torch.sparse.sampled_addmm(pattern, h, table.t(), beta=0.0)
    return dots.values().view(size, n)


@functools.lru_cache(maxsize=8)
def _row_starts(rows: int, n: int) -> torch.Tensor:
    """``0, n, 2n, ..., rows·n`` ``(rows + 1,)``: where each row of ``n`` entries starts, made
    once per shape (read-only)."""
    return torch.arange(0, rows * n + 1, n)


@functools.lru_cache(maxsize=8)
def _row_of_each(rows: int, n: int) -> torch.Tensor:
    """``0 (n times), 1 (n times), ...`` ``(rows·n,)``: the row of each entry of a
    ``(rows, n)`` tensor, made once per shape (read-only)."""
    return torch.arange(rows).repeat_interleave(n)


def _bag_sizes(offsets: torch.Tensor, total: int) -> torch.Tensor:
    """Sizes of the bags that start at ``offsets`` ``(batch,)`` in a list of ``total`` ids."""
    ends = torch.cat([offsets[1:], offsets.new_tensor([total])])
    return ends - offsets


__all__ = ["EmbedModelConfig", "Method", "PAD_ID", "RowGrad", "WordEmbedder"]
