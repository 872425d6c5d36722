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

    def _run(self, inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor, State]:
        """Teacher-forced steps over ``inputs`` ``(batch, steps)`` from ``state`` (for several
        steps only without input feeding). Returns logits ``(batch, steps, vocab)``, attention
        weights ``(batch, steps, source)`` and the new state."""
        x = self.drop(self.embed(inputs))
        if self.input_feeding:
            x = torch.cat([x, state["feed"].unsqueeze(1)], dim=-1)
        output, rnn_state = self.rnn(x, self._rnn_state(state))
        context, weights = self.attention(output, state["keys"], state["memory"], state["mask"])
        attentional = torch.tanh(self.combine(torch.cat([output, context], dim=-1)))
        logits = self.out(self.drop(attentional))
        new = dict(state)
        if self.rnn_type == "lstm":
            new["hidden"], new["cell"] = (s.transpose(0, 1) for s in rnn_state)
        else:
            new["hidden"] = rnn_state.transpose(0, 1)
        if self.input_feeding:
            new["feed"] = attentional[:, -1]
        return logits, weights, new

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor, State]:
        """One word: tokens ``(batch,)`` → logits ``(batch, vocab)``, attention weights
        ``(batch, source)`` and the new state."""
        logits, weights, new = self._run(tokens.unsqueeze(1), state)
        return logits.squeeze(1), weights.squeeze(1), new

    def forward(self, inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: inputs ``(batch, steps)`` (``<s>`` then the target words) →
        logits ``(batch, steps, vocab)`` and attention weights ``(batch, steps, source)``.

        Without input feeding every step runs in one call of the RNN and of the attention;
        with it the steps depend on each other and run one by one.
        """
        if not self.input_feeding:
            logits, weights, _ = self._run(inputs, state)
            return logits, weights
        # The same computation as calling step() per word, with the work that does not depend
        # on the previous step (embeddings, dropout, the output layer) done once for all steps
        # and the RNN state kept in the RNN's own layout between steps.
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
        logits = self.out(self.drop(torch.stack(attentional, 1)))
        return logits, torch.cat(all_weights, 1)


__all__ = ["AttentionDecoder", "DecoderRnn", "State", "select_state"]
