"""A recurrent decoder with attention: GRU or LSTM, any depth, optional input feeding.

One step (Luong et al. 2015's order, as JoeyNMT's recurrent decoder does it):

1. the RNN reads the previous target word's embedding (with input feeding, concatenated with
   the previous step's attentional vector) and updates its state;
2. its top-layer output queries the encoder outputs (any :class:`~rnnkit.nn.attention.Attention`
   score), giving a context vector;
3. the attentional vector ``tanh(W [output; context])`` goes through dropout and a linear layer
   to the next word's scores.

The decoder's state is a dict of tensors that all have the batch as their first dimension
(the RNN state is stored ``(batch, layers, hidden)``), so a search can repeat and reorder
hypotheses with one ``index_select`` per entry (:func:`select_state`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from rnnkit.nn.attention import Attention, AttentionKind

DecoderRnn = Literal["gru", "lstm"]
State = dict[str, torch.Tensor]


def select_state(state: State, index: torch.Tensor) -> State:
    """Rows ``index`` ``(n,)`` of every entry of a decoder state (batch is dimension 0)."""
    return {k: v.index_select(0, index) for k, v in state.items()}


class AttentionDecoder(nn.Module):
    """Predicts target words one at a time, attending over the encoder's outputs."""

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        hidden_size: int,
        memory_size: int,
        summary_size: int,
        rnn: DecoderRnn = "gru",
        layers: int = 1,
        attention: AttentionKind = "bahdanau",
        dropout: float = 0.0,
        input_feeding: bool = True,
        tie_embeddings: bool = False,
    ):
        """memory_size: width of the encoder outputs; summary_size: width of the encoder's
        sentence summary that initialises the RNN state through a ``tanh`` bridge."""
        super().__init__()
        if rnn not in ("gru", "lstm"):
            raise ValueError(f"unknown decoder rnn {rnn!r} (choices: gru, lstm)")
        self.rnn_type, self.layers, self.hidden_size = rnn, layers, hidden_size
        self.input_feeding = input_feeding
        self.embed = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        width = embedding_dim + (hidden_size if input_feeding else 0)
        cell = nn.LSTM if rnn == "lstm" else nn.GRU
        self.rnn = cell(
            width, hidden_size, num_layers=layers, batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )  # fmt: skip
        self.bridge = nn.Linear(summary_size, layers * hidden_size)
        self.attention = Attention(attention, hidden_size, memory_size)
        self.combine = nn.Linear(hidden_size + memory_size, hidden_size, bias=False)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, vocab_size)
        if tie_embeddings:
            if embedding_dim != hidden_size:
                raise ValueError(
                    f"tied embeddings need the target embedding size ({embedding_dim}) to equal "
                    f"the decoder size ({hidden_size})"
                )
            self.out.weight = self.embed.weight

    def init_state(self, memory: torch.Tensor, mask: torch.Tensor, summary: torch.Tensor) -> State:
        """The state before the first word.

        memory ``(batch, source, memory_size)``, mask ``(batch, source)`` bool, summary
        ``(batch, summary_size)``.
        """
        batch = memory.shape[0]
        hidden = torch.tanh(self.bridge(summary)).view(batch, self.layers, self.hidden_size)
        state = {"hidden": hidden, "memory": memory, "mask": mask}
        state["keys"] = self.attention.keys(memory)
        if self.rnn_type == "lstm":
            state["cell"] = torch.zeros_like(hidden)
        if self.input_feeding:
            state["feed"] = memory.new_zeros(batch, self.hidden_size)
        return state

    def _rnn_state(self, state: State):
        h = state["hidden"].transpose(0, 1).contiguous()
        if self.rnn_type == "lstm":
            return h, state["cell"].transpose(0, 1).contiguous()
        return h

    def _attend_run(
        self, inputs: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """Teacher-forced steps over ``inputs`` ``(batch, steps)`` from ``state`` (for several
        steps only without input feeding). Returns the attentional vectors ``(batch, steps,
        hidden)``, attention weights ``(batch, steps, source)`` and the new state."""
        x = self.drop(self.embed(inputs))
        if self.input_feeding:
            x = torch.cat([x, state["feed"].unsqueeze(1)], dim=-1)
        output, rnn_state = self.rnn(x, self._rnn_state(state))
        context, weights = self.attention(output, state["keys"], state["memory"], state["mask"])
        attentional = torch.tanh(self.combine(torch.cat([output, context], dim=-1)))
        new = dict(state)
        if self.rnn_type == "lstm":
            new["hidden"], new["cell"] = (s.transpose(0, 1) for s in rnn_state)
        else:
            new["hidden"] = rnn_state.transpose(0, 1)
        if self.input_feeding:
            new["feed"] = attentional[:, -1]
        return attentional, weights, new

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor, State]:
        """One word: tokens ``(batch,)`` → logits ``(batch, vocab)``, attention weights
        ``(batch, source)`` and the new state."""
        attentional, weights, new = self._attend_run(tokens.unsqueeze(1), state)
        return self.out(self.drop(attentional)).squeeze(1), weights.squeeze(1), new

    def forward(self, inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: inputs ``(batch, steps)`` (``<s>`` then the target words) →
        logits ``(batch, steps, vocab)`` and attention weights ``(batch, steps, source)``."""
        attentional, weights = self.attentional(inputs, state)
        return self.out(self.drop(attentional)), weights

    def attentional(self, inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing up to the output layer: inputs ``(batch, steps)`` → the attentional
        vectors ``(batch, steps, hidden)`` (before dropout) and attention weights ``(batch,
        steps, source)``, so that a loss can score the real positions only.

        Without input feeding every step runs in one call of the RNN and of the attention;
        with it the steps depend on each other and run one by one.
        """
        if not self.input_feeding:
            attentional, weights, _ = self._attend_run(inputs, state)
            return attentional, weights
        if self.rnn_type == "gru" and self.layers == 1:
            return self._fed_gru(inputs, state)
        # The same computation as calling step() per word, with the work that does not depend
        # on the previous step (embeddings, dropout) done once for all steps and the RNN state
        # kept in the RNN's own layout between steps.
        embedded = self.drop(self.embed(inputs))  # (batch, steps, embedding)
        rnn_state, feed = self._rnn_state(state), state["feed"]
        keys, memory, mask = state["keys"], state["memory"], state["mask"]
        attentional, all_weights = [], []
        for t in range(inputs.shape[1]):
            x = torch.cat([embedded[:, t], feed], dim=-1).unsqueeze(1)
            output, rnn_state = self.rnn(x, rnn_state)
            context, weights = self.attention(output, keys, memory, mask)
            feed = torch.tanh(self.combine(torch.cat([output, context], dim=-1))).squeeze(1)
            attentional.append(feed)
            all_weights.append(weights)
        return torch.stack(attentional, 1), torch.cat(all_weights, 1)

    def _fed_gru(self, inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`attentional` of a one-layer GRU with input feeding: the same computation as
        ``nn.GRU`` and the attention step by step, with everything that does not depend on the
        previous step done once for the whole sequence (the target words' share of the input
        gates, the weights' slices and autocast casts, the padding), the query and the
        ``combine`` layer's output half in one product, and the gradients of the weights that
        every step uses in one product each (:class:`_StepProducts`) rather than one per step.
        Each step is then four small products and the gates' arithmetic (``nn.GRU``'s own on
        the CPU)."""
        rnn, attention, width = self.rnn, self.attention, self.hidden_size
        words, (batch, steps) = self.embed.embedding_dim, inputs.shape
        embedded = self.drop(self.embed(inputs))  # (batch, steps, embedding)
        word_gates = F.linear(embedded, rnn.weight_ih_l0[:, :words], rnn.bias_ih_l0)
        output_half, context_half = self.combine.weight.split([width, attention_width(self)], 1)
        query_weights = [output_half]
        if attention.kind == "bahdanau":  # its query layer reads the same RNN output
            query_weights.insert(0, attention.query_layer.weight)
        feed_weight, hidden_weight = rnn.weight_ih_l0[:, words:], rnn.weight_hh_l0
        joint = torch.cat(query_weights)  # ([query +] hidden, hidden)
        dtype = word_gates.dtype
        # each step's inputs of the products, kept for the weights' gradients
        feeds, hiddens, outputs, contexts = [], [], [], []
        gi, gh, both = (
            _StepProducts.apply((batch, steps, w.shape[0]), dtype, pairs, w, *extra)
            for w, pairs, extra in (
                (feed_weight, [(feed_weight.shape[0], feeds)], ()),
                (hidden_weight, [(hidden_weight.shape[0], hiddens)], ()),
                (joint, [(joint.shape[0], outputs), (-width, contexts)], (context_half,)),
            )
        )  # fmt: skip
        gi = (word_gates + gi).unbind(1)
        gh = _autocast_once(rnn.bias_hh_l0 + gh).unbind(1)
        both = both.unbind(1)
        feed_weight, hidden_weight, joint, context_weight = (
            _autocast_once(w.detach()).t()
            for w in (feed_weight, hidden_weight, joint, context_half)
        )  # fmt: skip
        keys, memory = state["keys"], _autocast_once(state["memory"])
        padding = ~state["mask"].unsqueeze(1)  # (batch, 1, source)
        hidden, feed = state["hidden"][:, 0], state["feed"]
        attentional, all_weights = [], []
        for t in range(steps):
            feeds.append(feed.detach())
            hiddens.append(hidden.detach())
            hidden = _gru_update(
                torch.addmm(gi[t], feed, feed_weight), torch.addmm(gh[t], hidden, hidden_weight),
                hidden,
            )  # fmt: skip
            outputs.append(hidden.detach())
            projected = torch.addmm(both[t], hidden, joint)
            query = projected[:, :-width] if attention.kind == "bahdanau" else hidden
            context, weights = attention.attend(query.unsqueeze(1), keys, memory, padding)
            context = context.squeeze(1)
            contexts.append(context.detach())
            feed = torch.tanh(torch.addmm(projected[:, -width:], context, context_weight))
            attentional.append(feed)
            all_weights.append(weights)
        return torch.stack(attentional, 1), torch.cat(all_weights, 1)


class _StepProducts(torch.autograd.Function):
    """Zeros ``(batch, steps, out)`` that a loop adds to the outputs of its products by
    detached weights (``x_t @ W.T``), so that the weights' gradients come in one product over
    all steps, ``grad.T @ x``, instead of one small product (and one addition) per step.

    ``pairs`` names, for each weight in order, the columns of the outputs whose gradient is
    its own (a count from the start, or from the end when negative) and the list that the loop
    fills with each step's inputs ``(batch, in)`` to that weight.
    """

    @staticmethod
    def forward(ctx, shape, dtype, pairs, *weights):
        """The zeros; ``weights`` (as the products use them, before any cast) get the
        gradients."""
        ctx.pairs, ctx.dtypes = pairs, [w.dtype for w in weights]
        return weights[0].new_zeros(shape, dtype=dtype)

    @staticmethod
    def backward(ctx, grad):
        """Each weight's gradient ``(out, in)``: the sum over steps and rows in one product."""
        grads = []
        for (columns, inputs), dtype in zip(ctx.pairs, ctx.dtypes, strict=True):
            part = grad[..., :columns] if columns > 0 else grad[..., columns:]
            x = torch.stack([i.to(grad.dtype) for i in inputs], 1).flatten(0, 1)
            grads.append((part.flatten(0, 1).t() @ x).to(dtype))
        return None, None, None, *grads


def attention_width(decoder: AttentionDecoder) -> int:
    """The width of the context vectors of ``decoder``'s attention (its memory's)."""
    return decoder.combine.in_features - decoder.hidden_size


def _autocast_once(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` in autocast's dtype where autocast is on for its device, else as it is: a
    slice or a concatenation of parameters, or the encoder's outputs, is cast once per sequence
    rather than at every step (autocast caches the casts of parameters only)."""
    device = weight.device.type
    if torch.is_autocast_enabled(device):
        return weight.to(torch.get_autocast_dtype(device))
    return weight


def _gru_update(gi: torch.Tensor, gh: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """One GRU step from its input gates ``gi`` and hidden gates ``gh`` ``(batch, 3 hidden)``
    (reset, update, new; biases included) and the previous hidden ``(batch, hidden)``, in
    ``nn.GRU``'s order of operations."""
    width = hidden.shape[1]
    # the reset and update gates side by side: one addition and one sigmoid for both
    reset, update = torch.sigmoid(gh[:, : 2 * width] + gi[:, : 2 * width]).chunk(2, 1)
    new = torch.tanh(gi[:, 2 * width :] + gh[:, 2 * width :] * reset)
    return (hidden - new) * update + new


__all__ = ["AttentionDecoder", "DecoderRnn", "State", "select_state"]
