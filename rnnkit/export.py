"""``rnnkit export --format onnx``: trained models as ONNX graphs, checked against PyTorch.

What each task exports (every batch, length and count axis is dynamic; padding is given by
boolean masks, True on real tokens, right-padded, every row with at least one real token):

- ``cipher``: ``ids`` int64 ``(batch, time)``, ``mask`` bool ``(batch, time)`` → ``logits``
  float32 ``(batch, time, vocab)`` and ``decoded`` int64 ``(batch, time)``, the likeliest
  symbol ids (never padding; 0 on padded positions), as :meth:`CipherNet.decode`.
- ``tag``: the tensors of :meth:`TagTask.make_batch` — ``words``, ``mask`` ``(batch, time)``;
  with character features also ``forms`` ``(batch, time)``, ``chars`` ``(forms, letters)`` and
  ``char_lengths`` ``(forms,)`` — → ``tags`` int64 ``(batch, time)`` (0 on padding) and
  ``emissions`` float32 ``(batch, time, tags)``. A CRF head runs Viterbi inside the graph; a
  softmax head takes the argmax.
- ``classify``: neural — ``words`` int64, ``mask`` bool ``(batch, time)``; bag of n-grams —
  ``features`` int64 ``(entries,)``, ``counts`` float32 ``(entries,)``, ``offsets`` int64
  ``(batch,)`` as :meth:`ClassifyTask.collate` makes them → ``probabilities`` float32
  ``(batch, labels)``.
- ``lm``: one step. ``tokens`` int64 ``(batch, 1)``, ``h`` (and ``c`` for an LSTM) float32
  ``(layers, batch, hidden)``, zeros to start → ``log_probs`` float32 ``(batch, vocab)``,
  ``h_next`` (and ``c_next``). Sampling, banned tokens and the loop stay in Python.
- ``translate``: two graphs, ``OUT.encoder.onnx`` and ``OUT.decoder.onnx`` (``OUT`` without its
  ``.onnx``). The encoder takes ``source`` int64 and ``source_mask`` bool ``(batch, source)``
  (word ids closed by ``</s>``, as :meth:`TranslateTask.make_batch` encodes them) and returns
  ``memory`` ``(batch, source, memory_size)``, the attention ``keys`` ``(batch, source,
  key_size)`` computed once per sentence, and the decoder's start state: ``hidden`` ``(batch,
  layers, size)``, ``cell`` (LSTM decoder) and ``feed`` ``(batch, size)`` (input feeding). One
  decoder step takes ``token`` int64 ``(batch,)`` (``<s>`` first), that state, ``memory``,
  ``keys`` and ``source_mask`` and returns ``log_probs`` ``(batch, vocab)`` (``<pad>``,
  ``<unk>`` and ``<s>`` at -inf, as the search sees them), ``attention`` ``(batch, source)``
  and the new state as ``hidden_next``, ``cell_next``, ``feed_next``. Search stays in Python.
- ``embed`` has no graph: its product is a vectors file (``rnnkit embed export``).

Exporter. ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based exporter, for every
graph. The default (dynamo) exporter was tried first on these same graphs (torch 2.13,
onnxscript 0.7). It exports the one-way models (cipher, lm) correctly, but ``torch.export``
gives the output of ``aten.lstm`` the trace's length as a fixed size, so every shape read from
an LSTM's output becomes a constant: the bidirectional graphs (tagger, classifier, a
bidirectional cipher) failed in onnxruntime at any other length (``GatherElements``: index out
of range), and the declared output shapes keep the trace's length. A Viterbi that stays a loop
also needs ``torch._higher_order_ops.scan``, a private prototype API, and each export took
1-8 s against 0.05-0.5 s. The TorchScript exporter exports every graph here with dynamic
shapes, Viterbi as a real ONNX ``Loop``, at opsets 17 to 20.

Packed sequences. :class:`~rnnkit.nn.encoder.RecurrentEncoder` packs batches of several lengths;
packing does not export. :class:`UnpackedRNN` runs the same weights over the padded batch: a
forward direction reads real tokens before any padding, so its outputs at real positions are
the packed ones; a backward direction would read the padding first, so each sequence is
reversed within its own length (a gather computed from the mask), read, and reversed back,
layer by layer. Outputs at padded positions are zeroed, as ``pad_packed_sequence`` leaves them,
and final states are read at each sequence's own end.

Viterbi (CRF). The loop over time is a small function compiled by ``torch.jit.script``
(:func:`viterbi`), which the TorchScript exporter turns into ONNX ``Loop`` nodes: a graph of
fixed size that decodes sentences of any length. Unrolling would fix a maximum length and
grow the graph with it. The recursion is the one :meth:`CRF._viterbi` runs, step for step.

Parity. Unless ``check=False`` (``--no-check``), every export is run in onnxruntime on batches of
1 and 5 sequences of different lengths and one of a single token (cut from the recipe's own
data when it is readable here, else drawn from the vocabulary), in shapes other than the
trace's, and compared with the task's own PyTorch path (packed encoder, :meth:`CRF.decode`,
``log_probs_step``, ...): float outputs must agree within :data:`TOLERANCE`, decoded ids
exactly, and every array must have the declared shape, or nothing is written. The language
model runs 12 steps and the translation decoder 6, each side carrying its own state. Files are
written to a temporary name and renamed into place.
"""

from __future__ import annotations

import argparse
import inspect
import io
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rnnkit.errors import RnnkitError

TASKS = ("cipher", "lm", "tag", "classify", "translate")
MIN_OPSET, MAX_OPSET, DEFAULT_OPSET = 17, 20, 17  # 20: the TorchScript exporter's newest
TOLERANCE = 1e-4  # largest absolute difference from PyTorch a float output may have
EXPORTER = "torchscript"
# Lengths of the traced batch and of the two check batches. They differ in batch size and
# length, so a graph that kept a traced size fixed fails its check; the check batches mix
# lengths (one token included), so that padding must be handled right.
TRACE_LENGTHS = (4, 2, 3)
CHECK_LENGTHS = ((7,), (9, 1, 5, 2, 8), (1,))  # the last: Viterbi's loops run zero times
LM_CHECK_STEPS = 12  # steps of the language model, each fed the state the last returned
DECODER_CHECK_STEPS = 6  # translation decoder steps checked


class ExportError(RnnkitError):
    """A model that cannot be exported, or an export that fails its parity check."""


# ------------------------------------------------------------------------- recurrent layers
def reverse_within(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row of ``x`` ``(batch, time, features)`` within its own length ``(batch,)``;
    positions past a row's length stay where they are. Its own inverse."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # (1, time)
    ends = lengths.unsqueeze(1)  # (batch, 1)
    index = torch.where(steps < ends, ends - 1 - steps, steps)  # (batch, time)
    return x.gather(1, index.unsqueeze(2).expand(-1, -1, x.shape[2]))


def _one_layer(rnn: nn.RNNBase, layer: int, reverse: bool) -> nn.RNNBase:
    """A one-layer, one-direction copy of ``layer`` of ``rnn`` (its ``_reverse`` weights when
    ``reverse``), batch first, for running each direction of a bidirectional layer apart."""
    extra = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
    width = rnn.input_size if layer == 0 else 2 * rnn.hidden_size
    cell = type(rnn)(width, rnn.hidden_size, num_layers=1, bias=rnn.bias, batch_first=True, **extra)
    suffix = f"l{layer}" + ("_reverse" if reverse else "")
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if rnn.bias else [])
    with torch.no_grad():
        for name in names:
            getattr(cell, f"{name}_l0").copy_(getattr(rnn, f"{name}_{suffix}"))
    return cell.eval()


class UnpackedRNN(nn.Module):
    """A batch-first ``nn.LSTM``/``GRU``/``RNN`` run over a padded batch without packing, with
    the results that packing gives at real positions (see the module docstring)."""

    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        if not rnn.batch_first:
            raise ExportError("only batch-first recurrent layers can be exported")
        self.bidirectional = rnn.bidirectional
        if self.bidirectional:
            layers = range(rnn.num_layers)
            self.forwards = nn.ModuleList(_one_layer(rnn, k, False) for k in layers)
            self.backwards = nn.ModuleList(_one_layer(rnn, k, True) for k in layers)
        else:
            self.rnn = rnn  # a one-way network reads real tokens first: run it whole

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x ``(batch, time, input)``, lengths ``(batch,)`` ≥ 1 → outputs ``(batch, time,
        directions * hidden)``, zero past each length, and the top layer's final hidden state
        of each direction, concatenated ``(batch, directions * hidden)``."""
        last = (lengths - 1).view(-1, 1, 1)
        if self.bidirectional:
            for forward, backward in zip(self.forwards, self.backwards, strict=True):
                ahead, _ = forward(x)
                behind, _ = backward(reverse_within(x, lengths))
                behind = reverse_within(behind, lengths)
                x = torch.cat([ahead, behind], dim=2)
            width = ahead.shape[2]
            # the forward direction ends at the last real token, the backward one at the first
            final = torch.cat(
                [ahead.gather(1, last.expand(-1, 1, width)).squeeze(1), behind[:, 0]], dim=1
            )
            outputs = x
        else:
            outputs, _ = self.rnn(x)
            final = outputs.gather(1, last.expand(-1, 1, outputs.shape[2])).squeeze(1)
        real = torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
        return outputs.masked_fill(~real.unsqueeze(2), 0.0), final


def _lengths(mask: torch.Tensor) -> torch.Tensor:
    """Sequence lengths ``(batch,)`` from a mask, at least 1, as the packed encoder takes them."""
    return mask.sum(dim=1).clamp(min=1)


# -------------------------------------------------------------------------------- Viterbi
def viterbi(
    emissions: torch.Tensor,
    mask: torch.Tensor,
    transitions: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
) -> torch.Tensor:
    """The best tag ids ``(batch, time)`` for emissions ``(batch, time, tags)`` and mask
    ``(batch, time)``; transitions ``(tags, tags)``, start and end ``(tags,)`` with forbidden
    moves already scored. Compiled by ``torch.jit.script`` for export (see :func:`_scripted`).

    The arithmetic is :meth:`CRF._viterbi`'s, in the same order, so that the two agree on ties:
    a step adds the transitions and the next emission first, then the running best; at a
    padded step a sentence keeps its scores and points back to its own tag.
    """
    batch, time, tags = emissions.shape[0], emissions.shape[1], emissions.shape[2]
    steps = emissions.masked_fill(~mask.unsqueeze(2), 0.0).transpose(0, 1)  # (time, batch, tags)
    best = start + steps[0]
    stay = torch.arange(tags, device=emissions.device).unsqueeze(0).expand(batch, tags)
    pointers: list[torch.Tensor] = []
    for t in range(1, time):
        table = transitions + steps[t].unsqueeze(1)  # (batch, from, to)
        values, back = torch.max(best.unsqueeze(2) + table, dim=1)
        real = mask[:, t].unsqueeze(1)
        best = torch.where(real, values, best)
        pointers.append(torch.where(real, back, stay))
    tag = (best + end).argmax(dim=1)
    path = [tag]
    for i in range(time - 1):
        tag = pointers[time - 2 - i].gather(1, tag.unsqueeze(1)).squeeze(1)
        path.append(tag)
    # list.reverse() does not survive the export; the walk back is flipped as a tensor
    return torch.stack(path, dim=1).flip(1)


_SCRIPTED: dict[str, Any] = {}


def _scripted() -> Any:
    """:func:`viterbi` compiled once, on first use (not at import: the CLI imports this module
    to build its parser)."""
    if "viterbi" not in _SCRIPTED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice
            _SCRIPTED["viterbi"] = torch.jit.script(viterbi)
    return _SCRIPTED["viterbi"]


# ---------------------------------------------------------------------------------- graphs
class CipherGraph(nn.Module):
    """ids, mask ``(batch, time)`` → logits ``(batch, time, vocab)``, decoded ``(batch, time)``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.rnn = UnpackedRNN(net.encoder.rnn)
        banned = torch.zeros(net.out.out_features, dtype=torch.bool)
        banned[net.pad_id] = True  # padding is never predicted
        self.register_buffer("banned", banned, persistent=False)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, _ = self.rnn(self.net.embed(ids), _lengths(mask))
        logits = self.net.out(hidden)
        best = logits.masked_fill(self.banned, float("-inf")).argmax(-1)
        return logits, best.masked_fill(~mask, self.net.pad_id)


class TaggerGraph(nn.Module):
    """The tagger's batch (see :meth:`Tagger.emissions`) → tags ``(batch, time)`` and
    emissions ``(batch, time, tags)``."""

    def __init__(self, tagger: nn.Module, names: Sequence[str]):
        super().__init__()
        self.names = list(names)  # of the inputs, in order
        self.tagger = tagger
        self.rnn = UnpackedRNN(tagger.encoder.rnn)
        chars = tagger.chars
        self.char_rnn = (
            UnpackedRNN(chars.rnn) if chars is not None and chars.kind == "lstm" else None
        )
        self.crf_decode = _scripted() if tagger.crf is not None else None

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = dict(zip(self.names, inputs, strict=True))
        t = self.tagger
        words, mask = b["words"], b["mask"]
        x = t.embed(words)
        if t.chars is not None:
            chars, lengths = b["chars"], b["char_lengths"]
            if self.char_rnn is not None:
                # CharFeatures: the final states of both directions of a packed BiLSTM
                _, per_form = self.char_rnn(t.chars.embed(chars), lengths.clamp(min=1))
            else:
                per_form = t.chars(chars, lengths)  # the CNN needs no packing
            x = torch.cat([x, per_form[b["forms"]]], dim=-1)
        if t.contextual is not None:  # the character LMs run inside the graph
            x = torch.cat([x, t.contextual(b)], dim=-1)
        hidden, _ = self.rnn(x, _lengths(mask))
        emissions = t.out(hidden)
        if t.crf is None:
            return emissions.argmax(-1).masked_fill(~mask, 0), emissions
        trans, start, end = t.crf._scores()
        tags = self.crf_decode(emissions, mask, trans, start, end)
        return tags.masked_fill(~mask, 0), emissions


class NeuralClassifierGraph(nn.Module):
    """words, mask ``(batch, time)`` → probabilities ``(batch, labels)``."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        super().__init__()
        self.names = list(names)  # of the inputs, in order
        self.model = model
        self.rnn = UnpackedRNN(model.encoder.rnn)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        b = dict(zip(self.names, inputs, strict=True))
        m = self.model
        words, mask = b["words"], b["mask"]
        x = m.embed(words)
        if m.contextual is not None:  # the character LMs run inside the graph
            x = torch.cat([x, m.contextual(b)], dim=-1)
        hidden, _ = self.rnn(x, _lengths(mask))
        return torch.softmax(m.out(m.pool(hidden, mask)).float(), dim=-1)


class BowClassifierGraph(nn.Module):
    """features ``(entries,)``, counts ``(entries,)``, offsets ``(batch,)`` → probabilities
    ``(batch, labels)``.

    ``EmbeddingBag`` with offsets exports as a loop over bags; here each text's sum is one
    matrix product with a ``(batch, entries)`` membership matrix built from the offsets, the
    same sum in one operation (memory: batch × entries floats, small for batches of texts).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, features: torch.Tensor, counts: torch.Tensor, offsets: torch.Tensor
    ) -> torch.Tensor:
        m, config = self.model, self.model.config
        entries = torch.arange(features.shape[0], device=features.device).unsqueeze(0)
        # the entry count as a tensor: a Python int would be traced as a constant
        total = torch.ones_like(features).sum(dim=0, keepdim=True)
        ends = torch.cat([offsets[1:], total])
        member = (entries >= offsets.unsqueeze(1)) & (entries < ends.unsqueeze(1))
        member = member.to(torch.float32)  # (batch, entries)
        weights = counts
        if config.features == "tfidf":
            weights = weights * m.idf[features]
        if config.norm == "l2":
            norms = (member @ (weights * weights).unsqueeze(1)).squeeze(1)  # (batch,)
            weights = weights / (member.t() @ norms.sqrt().clamp(min=1e-12).unsqueeze(1)).squeeze(1)
        scores = member @ (m.linear.weight[features] * weights.unsqueeze(1)) + m.bias
        return torch.softmax(scores.float(), dim=-1)


class LMStepGraph(nn.Module):
    """tokens ``(batch, 1)``, state ``(layers, batch, hidden)`` (h, or h and c) →
    log-probabilities ``(batch, vocab)`` and the next state."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.lstm = isinstance(model.encoder.rnn, nn.LSTM)

    def forward(
        self, tokens: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        m = self.model
        state = (h, c) if self.lstm else h
        # no mask: the language model never packs, so its network runs as it is
        features, state = m.encoder.rnn(m.embed(tokens), state)
        log_probs = self.log_probs(features[:, -1])
        if self.lstm:
            return log_probs, state[0], state[1]
        return log_probs, state

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        m = self.model
        if m.adaptive is None:
            return m.log_probs(features)
        # AdaptiveLogSoftmaxWithLoss.log_prob fills an empty tensor slice by slice; the same
        # values joined with one concatenation export without in-place writes.
        a = m.adaptive
        head = F.log_softmax(a.head(features), dim=1)
        parts = [head[:, : a.shortlist_size]]
        for i, tail in enumerate(a.tail):
            cluster = F.log_softmax(tail(features), dim=1)
            parts.append(cluster + head[:, a.shortlist_size + i].unsqueeze(1))
        return torch.cat(parts, dim=1)


class EncoderGraph(nn.Module):
    """source, source_mask ``(batch, source)`` → memory, keys and the decoder's start state."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.rnn = UnpackedRNN(model.encoder.rnn)

    def forward(self, source: torch.Tensor, source_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.model
        # Seq2Seq.encode: outputs, and the top layer's final state of each direction
        memory, summary = self.rnn(m.src_embed(source), _lengths(source_mask))
        state = m.decoder.init_state(memory, source_mask, summary)
        return tuple(state[name] for name in _state_names(m.decoder, with_memory=True))


class DecoderStepGraph(nn.Module):
    """One word: token ``(batch,)``, the state, memory, keys and source_mask → log-probs
    ``(batch, vocab)``, attention ``(batch, source)`` and the next state."""

    def __init__(self, model: nn.Module, banned: Sequence[int]):
        super().__init__()
        self.model = model
        self.names = _state_names(model.decoder, with_memory=False)
        ban = torch.zeros(model.decoder.out.out_features, dtype=torch.bool)
        ban[list(banned)] = True
        self.register_buffer("banned", ban, persistent=False)

    def forward(self, token: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = dict(zip([*self.names, "memory", "keys", "mask"], inputs, strict=True))
        logits, weights, new = self.model.decoder.step(token, state)
        # Seq2Seq.log_probs_step bans these by writing -inf into slices; a masked fill gives
        # the same values without an in-place write
        logits = logits.float().masked_fill(self.banned, float("-inf"))
        return (torch.log_softmax(logits, dim=-1), weights, *(new[n] for n in self.names))


def _state_names(decoder: nn.Module, with_memory: bool) -> list[str]:
    """The decoder state's tensors in graph order: (memory, keys,) hidden, cell, feed."""
    names = ["memory", "keys"] if with_memory else []
    names.append("hidden")
    if decoder.rnn_type == "lstm":
        names.append("cell")
    if decoder.input_feeding:
        names.append("feed")
    return names


# ------------------------------------------------------------------------- graph specs
Axes = tuple[str | int, ...]  # per dimension: a dynamic axis name, or a fixed size


@dataclass
class Graph:
    """One ONNX graph to write: the module, its named inputs and outputs with their axes, and
    example inputs to trace it with."""

    name: str  # "model", or "encoder" / "decoder"
    module: nn.Module
    inputs: dict[str, Axes]
    outputs: dict[str, Axes]
    example: tuple[torch.Tensor, ...]
    ids: tuple[str, ...] = ()  # outputs of decoded ids: must equal PyTorch's exactly
    data: bytes = b""
    path: Path | None = None
    diffs: dict[str, float] = field(default_factory=dict)
    ids_equal: bool | None = None
    greedy_equal: bool | None = None  # translation decoder: the argmax of its log-probs
    shape_errors: list[str] = field(default_factory=list)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        both = {**self.inputs, **self.outputs}
        return {
            name: {i: a for i, a in enumerate(axes) if isinstance(a, str)}
            for name, axes in both.items()
        }


@dataclass
class Samples:
    """Token streams to cut check batches from, and where they came from."""

    rows: list[list[Any]]
    source: str


def _cut(samples: Samples, lengths: Sequence[int], shift: int = 0) -> list[list[Any]]:
    """Rows of exactly ``lengths`` tokens, each cut from another place of the samples joined
    end to end (so a row may span two sentences); ``shift`` moves every cut."""
    stream = [token for row in samples.rows for token in row]
    while len(stream) < max(lengths, default=0):  # a short text: read it again
        stream = stream + stream
    out, at = [], 7 * shift
    for n in lengths:
        start = at % (len(stream) - n + 1)
        out.append(stream[start : start + n])
        at += n + 5
    return out


def _vocab_samples(itos: Sequence[str], first: int, extra: Sequence[str] = ()) -> Samples:
    """Random tokens of a vocabulary (ids ``first`` and up), with ``extra`` ones mixed in."""
    generator = torch.Generator().manual_seed(0)
    words = list(itos[first:]) or list(itos)
    picks = torch.randint(len(words), (200,), generator=generator).tolist()
    row = [words[i] for i in picks]
    for i, token in enumerate(extra):
        row.insert(3 + 11 * i, token)
    return Samples([row], "tokens drawn from the model's vocabulary")


def _data_or_vocab(
    read: Callable[[], list[list[Any]]], fallback: Callable[[], Samples], data: bool = True
) -> Samples:
    """Token rows from the recipe's data; the vocabulary's when the data is not readable here
    (a model directory copied to another machine), or when ``data`` is False (no file read)."""
    try:
        rows = [r for r in read() if r] if data else []
    except (RnnkitError, OSError):
        rows = []
    samples = Samples(rows, "the recipe's dev data") if rows else fallback()
    if not any(samples.rows):
        raise ExportError("no tokens to check the export with (an empty vocabulary?)")
    return samples


@dataclass
class Plan:
    """A task's graphs, the check that compares them with PyTorch (given an onnxruntime
    session per graph name, it fills each graph's ``diffs`` and ``ids_equal`` and returns the
    check batches' shapes, for the report), and the source of the check's tokens."""

    graphs: list[Graph]
    check: Callable[[dict[str, Any]], list[str]]
    data: str


# --------------------------------------------------------------------------------- cipher
def _cipher_graphs(task: Any, data: bool = True) -> Plan:
    def read() -> list[list[int]]:
        generator = torch.Generator().manual_seed(0)
        b = task.make_batch(task.source("dev"), 16, generator)  # ciphertexts of dev plaintext
        return [row[real].tolist() for row, real in zip(b["source"], b["mask"], strict=True)]

    def fallback() -> Samples:
        generator = torch.Generator().manual_seed(0)
        return Samples([torch.randint(1, len(task.vocab), (200,), generator=generator).tolist()],
                       "symbols drawn from the alphabet")  # fmt: skip

    samples = _data_or_vocab(read, fallback, data)

    def batch(lengths: Sequence[int], shift: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        from rnnkit.data.batching import pad

        return pad(_cut(samples, lengths, shift))

    graph = Graph(
        "model", CipherGraph(task.model),
        inputs={"ids": ("batch", "time"), "mask": ("batch", "time")},
        outputs={"logits": ("batch", "time", len(task.vocab)), "decoded": ("batch", "time")},
        example=batch(TRACE_LENGTHS), ids=("decoded",),
    )  # fmt: skip

    check = _check_on_lengths(
        graph, batch,
        inputs=lambda b: {"ids": b[0], "mask": b[1]},
        expected=lambda b: {"logits": task.model(*b), "decoded": task.model.decode(*b)},
    )  # fmt: skip
    return Plan([graph], check, samples.source)


def _check_on_lengths(
    graph: Graph,
    batch: Callable[[Sequence[int], int], Any],
    inputs: Callable[[Any], dict[str, torch.Tensor]],
    expected: Callable[[Any], dict[str, torch.Tensor]],
) -> Callable[[dict[str, Any]], list[str]]:
    """The parity check of a one-graph export: for each of CHECK_LENGTHS, a fresh batch through
    onnxruntime against the task's own PyTorch answer (``expected``, run without gradients)."""

    def check(sessions: dict[str, Any]) -> list[str]:
        shown = []
        for shift, lengths in enumerate(CHECK_LENGTHS, 1):
            b = batch(lengths, shift)
            with torch.no_grad():
                want = expected(b)
            _compare(graph, _run(sessions[graph.name], graph, inputs(b)), want)
            shown.append(_shape(lengths))
        return shown

    return check


def _contextual_axes(module: Any) -> dict[str, Axes]:
    """Graph inputs of contextual features: each LM's character ids and word places."""
    if module is None:
        return {}
    axes: dict[str, Axes] = {}
    for i in range(len(module.lms)):
        axes[f"ctx{i}_ids"] = ("batch", f"chars{i}")
        axes[f"ctx{i}_at"] = ("batch", "time")
    return axes


def _contextual_inputs(model: nn.Module, token_lists: Sequence[Sequence[str]]) -> dict:
    """What a graph with contextual features reads besides the batch: the LMs' inputs."""
    if model.contextual is None:
        return {}
    return model.contextual.inputs(token_lists)


# ------------------------------------------------------------------------------------ tag
def _tag_graphs(task: Any, data: bool = True) -> Plan:
    samples = _data_or_vocab(
        lambda: [s.tokens for s in task.sentences("dev")],
        lambda: _vocab_samples(task.vocab.itos, 2, ["Zqxjvorth", "Kwambe", "ÉTÉ"]),
        data,
    )
    names = ["words", "mask"]
    if task.model.chars is not None:
        names += ["forms", "chars", "char_lengths"]
    axes: dict[str, Axes] = {
        "words": ("batch", "time"), "mask": ("batch", "time"), "forms": ("batch", "time"),
        "chars": ("forms", "letters"), "char_lengths": ("forms",),
    } | _contextual_axes(task.model.contextual)  # fmt: skip
    names += list(_contextual_axes(task.model.contextual))

    def batch(lengths: Sequence[int], shift: int = 0) -> dict[str, torch.Tensor]:
        rows = _cut(samples, lengths, shift)
        return task.make_batch(rows, with_tags=False) | _contextual_inputs(task.model, rows)

    example = batch(TRACE_LENGTHS)
    graph = Graph(
        "model", TaggerGraph(task.model, names),
        inputs={n: axes[n] for n in names},
        outputs={"tags": ("batch", "time"), "emissions": ("batch", "time", len(task.tag_vocab))},
        example=tuple(example[n] for n in names), ids=("tags",),
    )  # fmt: skip

    check = _check_on_lengths(
        graph, batch,
        inputs=lambda b: {n: b[n] for n in names},
        expected=lambda b: {"tags": task.model.decode(b), "emissions": task.model.emissions(b)},
    )  # fmt: skip
    return Plan([graph], check, samples.source)


# ------------------------------------------------------------------------------- classify
def _classify_graphs(task: Any, data: bool = True) -> Plan:
    joiner = "" if task.config.data.tokenize == "chars" else " "
    samples = _data_or_vocab(
        lambda: [task.tokens(ex.text) for ex in task.examples("dev")],
        lambda: _vocab_samples(
            [t for t in task.vocab.itos if joiner or len(t) == 1] if task.bow else task.vocab.itos,
            0 if task.bow else 2, ["zqxjvorth"],
        ),
        data,
    )  # fmt: skip

    def batch(lengths: Sequence[int], shift: int = 0) -> dict[str, torch.Tensor]:
        texts = [joiner.join(row) for row in _cut(samples, lengths, shift)]
        found = task.collate([task.encode(t) for t in texts])
        if task.bow:
            return found
        return found | _contextual_inputs(task.model, [t.split() or [""] for t in texts])

    if task.bow:
        names = ["features", "counts", "offsets"]
        module: nn.Module = BowClassifierGraph(task.model)
        inputs: dict[str, Axes] = {
            "features": ("entries",), "counts": ("entries",), "offsets": ("batch",)
        }  # fmt: skip
    else:
        inputs = {"words": ("batch", "time"), "mask": ("batch", "time")}
        inputs |= _contextual_axes(task.model.contextual)
        names = list(inputs)
        module = NeuralClassifierGraph(task.model, names)
    example = batch(TRACE_LENGTHS)
    graph = Graph(
        "model", module, inputs=inputs,
        outputs={"probabilities": ("batch", len(task.label_vocab))},
        example=tuple(example[n] for n in names),
    )  # fmt: skip

    check = _check_on_lengths(
        graph, batch,
        inputs=lambda b: {n: b[n] for n in names},
        expected=lambda b: {"probabilities": torch.softmax(task.model.logits(b).float(), -1)},
    )  # fmt: skip
    return Plan([graph], check, samples.source)


# ------------------------------------------------------------------------------------- lm
def _lm_graphs(task: Any, data: bool = True) -> Plan:
    model = task.model
    rnn = model.encoder.rnn
    lstm = isinstance(rnn, nn.LSTM)
    samples = _data_or_vocab(
        lambda: [task.ids("dev")[:2000].tolist()],
        lambda: Samples([list(range(len(task.vocab))) * 3], "every id of the vocabulary"),
        data,
    )
    state_axes: Axes = (rnn.num_layers, "batch", rnn.hidden_size)
    inputs: dict[str, Axes] = {"tokens": ("batch", 1), "h": state_axes}
    outputs: dict[str, Axes] = {"log_probs": ("batch", len(task.vocab)), "h_next": state_axes}
    if lstm:
        inputs["c"] = state_axes
        outputs["c_next"] = state_axes

    def zeros(n: int) -> list[torch.Tensor]:
        return [torch.zeros(rnn.num_layers, n, rnn.hidden_size) for _ in range(1 + lstm)]

    tokens = torch.tensor(_cut(samples, [1] * len(TRACE_LENGTHS)))
    graph = Graph(
        "model", LMStepGraph(model), inputs=inputs, outputs=outputs,
        example=(tokens, *zeros(len(TRACE_LENGTHS))),
    )  # fmt: skip

    def check(sessions: dict[str, Any]) -> list[str]:
        shown = []
        for shift, size in enumerate(sorted({len(lengths) for lengths in CHECK_LENGTHS}), 1):
            rows = torch.tensor(_cut(samples, [LM_CHECK_STEPS] * size, shift))
            ours = theirs = zeros(size)
            for t in range(LM_CHECK_STEPS):
                step = rows[:, t : t + 1]
                with torch.no_grad():
                    features, state = model(step, tuple(theirs) if lstm else theirs[0])
                    log_probs = model.log_probs(features[:, -1])
                theirs = list(state) if lstm else [state]
                expected = dict(zip(outputs, [log_probs, *theirs], strict=True))
                got = _run(sessions["model"], graph, dict(zip(inputs, [step, *ours], strict=True)))
                _compare(graph, got, expected)
                # each side carries its own state, so any drift would add up over the steps
                ours = [torch.from_numpy(got[n]) for n in list(outputs)[1:]]
            shown.append(f"{size} of {LM_CHECK_STEPS} steps")
        return shown

    return Plan([graph], check, samples.source)


# ------------------------------------------------------------------------------ translate
def _translate_graphs(task: Any, data: bool = True) -> Plan:
    from rnnkit.nn.seq2seq import BOS_ID

    model = task.model
    decoder = model.decoder
    samples = _data_or_vocab(
        lambda: [p.source.split() for p in task.pairs("dev")],
        lambda: _vocab_samples(task.vocab.itos, 4, ["zqxjvorth"]),
        data,
    )
    states = _state_names(decoder, with_memory=False)
    state_axes: dict[str, Axes] = {
        "hidden": ("batch", decoder.layers, decoder.hidden_size),
        "cell": ("batch", decoder.layers, decoder.hidden_size),
        "feed": ("batch", decoder.hidden_size),
    }
    memory_size = model.encoder.output_size
    key_size = (
        memory_size
        if decoder.attention.key_layer is None
        else decoder.attention.key_layer.out_features
    )
    memory_axes: dict[str, Axes] = {
        "memory": ("batch", "source", memory_size), "keys": ("batch", "source", key_size),
    }  # fmt: skip
    source_axes: dict[str, Axes] = {
        "source": ("batch", "source"),
        "source_mask": ("batch", "source"),
    }

    def batch(lengths: Sequence[int], shift: int = 0) -> dict[str, torch.Tensor]:
        # make_batch closes each source with </s>: a row of n words is n + 1 long
        rows = _cut(samples, [max(1, n - 1) for n in lengths], shift)
        return task.make_batch([" ".join(r) for r in rows])

    encoder = EncoderGraph(model)
    example = batch(TRACE_LENGTHS)
    source = (example["source"], example["source_mask"])
    with torch.no_grad():
        start = dict(zip([*memory_axes, *states], encoder(*source), strict=True))
    graphs = [
        Graph("encoder", encoder, inputs=source_axes,
              outputs={**memory_axes, **{n: state_axes[n] for n in states}}, example=source),
        Graph(
            "decoder", DecoderStepGraph(model, banned=range(BOS_ID + 1)),
            inputs={"token": ("batch",), **{n: state_axes[n] for n in states}, **memory_axes,
                    "source_mask": ("batch", "source")},
            outputs={"log_probs": ("batch", len(task.target_vocab)),
                     "attention": ("batch", "source"),
                     **{f"{n}_next": state_axes[n] for n in states}},
            example=(torch.full((len(TRACE_LENGTHS),), BOS_ID), *(start[n] for n in states),
                     start["memory"], start["keys"], example["source_mask"]),
        ),
    ]  # fmt: skip

    def check(sessions: dict[str, Any]) -> list[str]:
        shown = []
        enc, dec = graphs
        for shift, lengths in enumerate(CHECK_LENGTHS, 1):
            b = batch(lengths, shift)
            with torch.no_grad():
                state = model.start(b)
            feeds = {"source": b["source"], "source_mask": b["source_mask"]}
            got = _run(sessions["encoder"], enc, feeds)
            _compare(enc, got, {n: state[n] for n in enc.outputs})
            ours = {n: torch.from_numpy(got[n]) for n in enc.outputs}
            prev = torch.full((len(lengths),), BOS_ID)
            for _ in range(DECODER_CHECK_STEPS):
                with torch.no_grad():
                    log_probs, weights, state = model.log_probs_step(prev, state)
                feeds = {"token": prev, **{n: ours[n] for n in [*states, "memory", "keys"]},
                         "source_mask": b["source_mask"]}  # fmt: skip
                step = _run(sessions["decoder"], dec, feeds)
                expected = {"log_probs": log_probs, "attention": weights}
                expected.update({f"{n}_next": state[n] for n in states})
                _compare(dec, step, expected)
                # the choice greedy search would make must be the same on both sides
                same = bool((step["log_probs"].argmax(-1) == log_probs.argmax(-1).numpy()).all())
                dec.greedy_equal = same and dec.greedy_equal is not False
                ours.update({n: torch.from_numpy(step[f"{n}_next"]) for n in states})
                prev = log_probs.argmax(-1)  # both sides read the same next word
            shown.append(_shape([int(n) for n in b["source_mask"].sum(1)]))
        return shown

    return Plan(graphs, check, samples.source)


BUILDERS = {
    "cipher": _cipher_graphs,
    "tag": _tag_graphs,
    "classify": _classify_graphs,
    "lm": _lm_graphs,
    "translate": _translate_graphs,
}


# ------------------------------------------------------------------------------ checking
def _shape(lengths: Sequence[int]) -> str:
    return f"{len(lengths)} of length {'/'.join(str(n) for n in lengths)}"


def _run(session: Any, graph: Graph, feeds: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Outputs of ``graph``'s onnxruntime session, by name, for torch inputs; any array whose
    shape breaks the declared axes (a fixed size, or one axis name with two sizes) is noted in
    ``graph.shape_errors`` (onnxruntime itself only logs a warning)."""
    arrays = {k: v.detach().cpu().numpy() for k, v in feeds.items()}
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(names, arrays), strict=True))
    declared = {**graph.inputs, **graph.outputs}
    sizes: dict[str, int] = {}
    for name, array in [*arrays.items(), *got.items()]:
        axes = declared[name]
        fits = len(axes) == array.ndim
        for axis, size in zip(axes, array.shape, strict=False):
            if isinstance(axis, int):
                fits = fits and size == axis
            else:
                fits = fits and sizes.setdefault(axis, size) == size
        if not fits:
            graph.shape_errors.append(f"{name} is {tuple(array.shape)}, declared {axes}")
    return got


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """The largest absolute difference of two arrays; equal infinities (banned tokens' -inf)
    count as equal, a shape mismatch as infinite."""
    if a.shape != b.shape:
        return math.inf
    if a.size == 0:
        return 0.0
    a, b = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(a - b)
    diff[(a == b) | (np.isnan(a) & np.isnan(b))] = 0.0
    diff[np.isnan(diff)] = math.inf
    return float(diff.max())


def _compare(graph: Graph, got: dict[str, np.ndarray], expected: dict[str, torch.Tensor]) -> None:
    """Fold one batch's differences into ``graph.diffs`` and ``graph.ids_equal``."""
    for name, want in expected.items():
        want_np = want.detach().cpu().numpy()
        if name in graph.ids:
            same = got[name].shape == want_np.shape and bool((got[name] == want_np).all())
            graph.ids_equal = same and graph.ids_equal is not False
        else:
            graph.diffs[name] = max(graph.diffs.get(name, 0.0), max_abs_diff(got[name], want_np))


def session(data: bytes, threads: int = 1) -> Any:
    """An onnxruntime CPU session of ONNX bytes: ``threads`` intra-op threads (1 for the
    check's small batches: the machine may be shared), one inter-op thread, errors only.

    The intra-op threads sleep between calls instead of spinning (onnxruntime's default): a
    server calls its graphs many times a second for small batches, and spinning threads took
    the CPU from its event loop (on a shared 2-core machine, ``rnnkit serve --backend onnx``
    answered 1.6-1.8x the requests/s of the tiny test models without spinning as with it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------ exporting
def _export_graph(graph: Graph, opset: int) -> bytes:
    """ONNX bytes of one graph, by the TorchScript-based exporter (see the module docstring)."""
    buffer = io.BytesIO()
    kwargs: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the default from torch 2.9 on
    with warnings.catch_warnings(), torch.no_grad():
        # the exporter warns about its deprecation and about LSTMs without initial states
        # (which get zeros of the dynamic batch size; the parity check covers it)
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                graph.module, graph.example, buffer,
                input_names=list(graph.inputs), output_names=list(graph.outputs),
                dynamic_axes=graph.dynamic_axes(), opset_version=opset,
                do_constant_folding=True, **kwargs,
            )  # fmt: skip
        except torch.onnx.errors.OnnxExporterError as err:  # an operator it cannot write
            what = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise ExportError(f"{graph.name}: torch.onnx cannot export it ({what})") from None
    return _declare_shapes(buffer.getvalue(), graph)


def _declare_shapes(data: bytes, graph: Graph) -> bytes:
    """The model with its inputs and outputs declared as ``graph`` specifies them, checked.

    The exporter's own shape inference can name a fixed size as a dynamic axis, or one axis
    as another (it declared the translation encoder's ``feed`` ``(batch, source)``): the
    declared shapes are replaced by the contract, the intermediate shape hints it wrote are
    dropped (onnxruntime infers its own), and ONNX's checker then runs full shape inference,
    which refuses a contract that the graph contradicts.
    """
    import onnx

    model = onnx.load_from_string(data)
    spec = {**graph.inputs, **graph.outputs}
    for value in [*model.graph.input, *model.graph.output]:
        axes = spec.get(value.name)
        dims = value.type.tensor_type.shape.dim
        if axes is None or len(dims) != len(axes):
            raise ExportError(f"{graph.name}: {value.name} is not the tensor its contract says")
        for dim, axis in zip(dims, axes, strict=True):
            dim.Clear()
            if isinstance(axis, str):
                dim.dim_param = axis
            else:
                dim.dim_value = axis
    del model.graph.value_info[:]
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"{graph.name}: the exported graph is not valid ONNX: {first}") from None
    return model.SerializeToString()


def _describe(data: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The inputs and outputs an ONNX model declares: name, element type, shape (axis names
    for dynamic dimensions)."""
    import onnx

    model = onnx.load_from_string(data)

    def one(value: Any) -> dict[str, Any]:
        t = value.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        return {"name": value.name, "dtype": dtype, "shape": dims}

    initializers = {i.name for i in model.graph.initializer}
    inputs = [one(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [one(v) for v in model.graph.output]


def output_paths(out: str | Path, task: str) -> dict[str, Path]:
    """Where each graph of ``task`` goes: ``OUT`` itself, or for translation
    ``OUT.encoder.onnx`` and ``OUT.decoder.onnx`` (``OUT`` without a ``.onnx`` suffix)."""
    out = Path(out)
    if task != "translate":
        return {"model": out}
    stem = out.with_suffix("") if out.suffix == ".onnx" else out
    return {name: stem.with_name(f"{stem.name}.{name}.onnx") for name in ("encoder", "decoder")}


def _need(package: str, what: str) -> None:
    import importlib

    try:
        importlib.import_module(package)
    except ImportError:
        raise ExportError(f"{what} needs the {package} package (pip install {package})") from None


def export_onnx(
    directory: str | Path, out: str | Path, check: bool = True, opset: int = DEFAULT_OPSET
) -> dict[str, Any]:
    """Export the model in ``directory`` to ONNX at ``out`` (see the module docstring for the
    graphs), check it against PyTorch unless ``check`` is False, and write it atomically.

    Returns a report: ``task``, ``exporter``, ``opset``, ``checked``, ``tolerance``,
    ``check_data`` and ``check_batches`` (what the check ran on), and ``graphs``: per graph
    its ``name``, ``path``, ``bytes``, ``inputs`` and ``outputs`` (name, dtype, shape),
    ``max_abs_diff`` (the largest absolute difference of its float outputs from PyTorch's,
    None unchecked), ``diffs`` (the same per output), ``ids_equal`` (its decoded ids equal
    PyTorch's; None where it outputs none) and ``greedy_equal`` (translation decoder: the
    argmax of its log-probabilities equals PyTorch's at every checked step; else None).
    Raises :class:`ExportError` (an :class:`~rnnkit.errors.RnnkitError`) for a task without a
    graph, a bad ``opset`` or ``out``, or a failed check; nothing is written then.
    """
    from rnnkit.checkpoint import atomic_write_bytes, read_model_config

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"--opset {opset}: from {MIN_OPSET} to {MAX_OPSET}")
    name = read_model_config(directory)["task"]
    if name == "embed":
        raise ExportError(
            "the embed task has no ONNX export: its vectors are a text file (rnnkit embed export)"
        )
    if name not in BUILDERS:
        raise ExportError(f"the {name} task has no ONNX export (tasks: {', '.join(TASKS)})")
    paths = output_paths(out, name)
    for path in paths.values():
        if path.is_dir():
            raise ExportError(f"--out {path} is a directory; give a file name")
    _need("onnx", "ONNX export")
    if check:
        _need("onnxruntime", "the parity check (skipped by --no-check)")

    import rnnkit

    task = rnnkit.load(directory, device="cpu")
    plan, shown = export_task(task, opset, check)
    for graph in plan.graphs:
        graph.path = paths[graph.name]
        atomic_write_bytes(graph.path, graph.data)
    return _report(name, opset, check, plan.graphs, shown, plan.data)


def export_task(
    task: Any,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    data: bool = True,
    unwritten: str = "nothing written (--no-check writes it anyway)",
) -> tuple[Plan, list[str]]:
    """A loaded ``task``'s graphs exported to ONNX in memory (each graph's ``data``) and,
    unless ``check`` is False, compared in onnxruntime with its PyTorch path (see the module
    docstring); ``data`` False checks on tokens drawn from the vocabulary, reading no file.
    Returns the plan and the shapes of the check batches. Raises :class:`ExportError` for a
    task without graphs or a failed check (``unwritten`` says what follows from a failure).
    Export (:func:`export_onnx`) and the ONNX backend (:mod:`rnnkit.backends`) both build
    their graphs here."""
    if task.name not in BUILDERS:
        raise ExportError(f"the {task.name} task has no ONNX export (tasks: {', '.join(TASKS)})")
    task.model.eval()
    with torch.no_grad():
        plan = BUILDERS[task.name](task, data)
    for graph in plan.graphs:
        graph.module.eval()
        graph.data = _export_graph(graph, opset)
    shown: list[str] = []
    if check:
        try:
            shown = plan.check({g.name: session(g.data) for g in plan.graphs})
        except Exception as err:  # onnxruntime's own exception types
            if not type(err).__module__.startswith("onnxruntime"):
                raise
            what = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise ExportError(
                f"onnxruntime cannot run the exported graph ({what}); {unwritten}"
            ) from None
        failed = [g for g in plan.graphs if _failure(g)]
        if failed:
            raise ExportError(
                "the ONNX export differs from PyTorch ("
                + "; ".join(_failure(g) for g in failed)
                + f"); {unwritten}"
            )
    return plan, shown


def _failure(graph: Graph) -> str:
    """Why ``graph`` fails its check, or ``""``."""
    reasons = [
        f"{n} by {d:.3g} > {TOLERANCE:g}" for n, d in graph.diffs.items() if not d <= TOLERANCE
    ]
    reasons += graph.shape_errors[:1]
    # decoded ids must match exactly; the translation decoder's greedy choices are reported
    # but not enforced: its log-probabilities are checked within the tolerance, and two
    # words within it of each other may swap places on another runtime
    if graph.ids_equal is False:
        reasons.append(f"decoded {', '.join(graph.ids)} differ")
    return f"{graph.name}: {', '.join(reasons)}" if reasons else ""


def _report(
    task: str, opset: int, checked: bool, graphs: list[Graph], shown: list[str], source: str
) -> dict[str, Any]:
    entries = []
    for g in graphs:
        inputs, outputs = _describe(g.data)
        entries.append({
            "name": g.name, "path": str(g.path), "bytes": len(g.data),
            "inputs": inputs, "outputs": outputs,
            "max_abs_diff": max(g.diffs.values(), default=0.0) if checked else None,
            "diffs": dict(g.diffs), "ids_equal": g.ids_equal if checked else None,
            "greedy_equal": g.greedy_equal if checked else None,
        })  # fmt: skip
    return {
        "task": task, "exporter": EXPORTER, "opset": opset, "checked": checked,
        "tolerance": TOLERANCE, "check_data": source if checked else "",
        "check_batches": shown, "graphs": entries,
    }  # fmt: skip


# ------------------------------------------------------------------------------------ CLI
def add_export_parser(sub: Any) -> None:
    """Add ``export`` to the ``rnnkit`` command's subparsers."""
    p = sub.add_parser(
        "export",
        help="export a model to ONNX, checked against PyTorch",
        description="Export a trained model to ONNX (cipher, tag, classify, lm: one step, "
        "translate: OUT.encoder.onnx and OUT.decoder.onnx) and check it in onnxruntime "
        "against PyTorch on batches of several lengths before writing it.",
    )
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="output format (onnx)")
    p.add_argument(
        "--out", required=True,
        help="the .onnx file to write; translate writes two, OUT.encoder.onnx and "
        "OUT.decoder.onnx (OUT without its .onnx)",
    )  # fmt: skip
    p.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET,
        help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})",
    )  # fmt: skip
    p.add_argument(
        "--no-check", action="store_true",
        help="write without the onnxruntime-vs-PyTorch parity check (and without onnxruntime)",
    )  # fmt: skip


def cmd_export(args: argparse.Namespace) -> int:
    """``rnnkit export``: export, print what was written and how it compared; 0 on success.
    Errors are raised as :class:`~rnnkit.errors.RnnkitError` for the CLI to print."""
    report = export_onnx(args.model, args.out, check=not args.no_check, opset=args.opset)
    print(format_report(report))
    return 0


def format_report(report: dict[str, Any]) -> str:
    """The report of :func:`export_onnx` as lines for a person."""
    lines = []
    for g in report["graphs"]:
        lines.append(
            f"wrote {g['path']} ({report['task']} {g['name']}, {g['bytes'] / 1024:,.0f} KiB, "
            f"opset {report['opset']}, {report['exporter']} exporter)"
        )
        for kind in ("inputs", "outputs"):
            shown = ", ".join(
                f"{v['name']} {v['dtype']} [{', '.join(str(d) for d in v['shape'])}]"
                for v in g[kind]
            )
            lines.append(f"  {kind}: {shown}")
        if report["checked"]:
            ids = {True: "; ids identical", False: "; ids DIFFER", None: ""}[g["ids_equal"]]
            if g["greedy_equal"] is not None:
                ids += "; greedy choices " + ("identical" if g["greedy_equal"] else "differ")
            lines.append(
                f"  parity with PyTorch: largest |difference| {g['max_abs_diff']:.2g} "
                f"(limit {report['tolerance']:g}){ids}"
            )
    if report["checked"]:
        lines.append(
            f"checked in onnxruntime on {report['check_data']}: batches of "
            + ", ".join(report["check_batches"])
        )
    else:
        lines.append("not checked against PyTorch (--no-check)")
    return "\n".join(lines)


__all__ = [
    "ExportError",
    "UnpackedRNN",
    "add_export_parser",
    "cmd_export",
    "export_onnx",
    "export_task",
    "format_report",
    "max_abs_diff",
    "output_paths",
    "reverse_within",
    "session",
    "viterbi",
]
