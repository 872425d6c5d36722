"""The encoder-decoder with attention that translates a sentence into a sentence.

Source words → embedding → (bi)GRU or LSTM encoder over packed batches → a GRU or LSTM decoder
(:class:`rnnkit.nn.decoder.AttentionDecoder`) that attends over the encoder outputs and predicts
the target one word at a time; batched greedy or beam search (:mod:`rnnkit.nn.search`). Both
vocabularies start with the same four specials, whose ids the search relies on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from rnnkit.config import rate
from rnnkit.data.vocab import PAD, UNK
from rnnkit.errors import ConfigError
from rnnkit.nn.attention import AttentionKind
from rnnkit.nn.decoder import AttentionDecoder, DecoderRnn, State
from rnnkit.nn.encoder import (
    RecurrentEncoder,
    RnnType,
    depth,
    final_outputs,
    mask_lengths,
    width,
)
from rnnkit.nn.search import Hypotheses, search

BOS, EOS = "<s>", "</s>"
SPECIALS = (PAD, UNK, BOS, EOS)  # the first ids of both vocabularies, in this order
BOS_ID, EOS_ID = SPECIALS.index(BOS), SPECIALS.index(EOS)


@dataclass
class TranslateModelConfig:
    """The encoder, the attention decoder and their sizes (``model:`` of a translate recipe)."""

    source_embedding_dim: int = width(256, "source word embeddings")
    target_embedding_dim: int = width(256, "target word embeddings")
    encoder_rnn: RnnType = "gru"
    bidirectional: bool = True
    encoder_layers: int = depth(1)
    hidden_size: int = width(256, "encoder, per direction")
    decoder_rnn: DecoderRnn = "gru"
    decoder_layers: int = depth(1)
    decoder_size: int = width(256)
    attention: AttentionKind = "bahdanau"  # bahdanau (additive), dot or general (Luong)
    input_feeding: bool = True  # the decoder also reads its previous attentional vector
    dropout: float = rate(0.2)
    # The output layer shares the target embeddings (target_embedding_dim = decoder_size).
    tie_target: bool = False
    pretrained_source: str = ""  # word2vec/GloVe text file for the source embeddings
    pretrained_target: str = ""  # ... and for the target embeddings
    freeze: bool = False  # keep pretrained embeddings fixed

    def validate(self) -> None:
        """Refuse settings that contradict each other."""
        memory = self.hidden_size * (2 if self.bidirectional else 1)
        if self.attention == "dot" and memory != self.decoder_size:
            raise ConfigError(
                f"model.attention=dot needs model.decoder_size ({self.decoder_size}) to equal the "
                f"encoder output size ({memory}); use general or bahdanau"
            )
        if self.tie_target and self.target_embedding_dim != self.decoder_size:
            raise ConfigError(
                "model.tie_target needs model.target_embedding_dim = model.decoder_size"
            )


class Seq2Seq(nn.Module):
    """Encoder, attention decoder and (for autoencoder pre-training) a source decoder."""

    def __init__(
        self, sources: int, targets: int, config: TranslateModelConfig, autoencoder: bool = False
    ):
        super().__init__()
        c = self.config = config
        self.src_embed = nn.Embedding(sources, c.source_embedding_dim, padding_idx=0)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = RecurrentEncoder(
            c.source_embedding_dim, c.hidden_size, c.encoder_rnn, c.encoder_layers, c.bidirectional,
            c.dropout,
        )  # fmt: skip
        self.directions = 2 if c.bidirectional else 1
        memory = self.encoder.output_size
        options = {
            "rnn": c.decoder_rnn, "layers": c.decoder_layers, "attention": c.attention,
            "dropout": c.dropout, "input_feeding": c.input_feeding,
        }  # fmt: skip
        self.decoder = AttentionDecoder(
            targets, c.target_embedding_dim, c.decoder_size, memory, memory,
            tie_embeddings=c.tie_target, **options,
        )  # fmt: skip
        self.reconstruct: AttentionDecoder | None = None
        # Autoencoder steps leave the translation decoder out, translation steps the other.
        self.skips_parameters = autoencoder
        if autoencoder:
            self.reconstruct = AttentionDecoder(
                sources, c.source_embedding_dim, c.decoder_size, memory, memory, **options
            )
        self.teacher_forcing = 1.0
        self.label_smoothing = 0.0

    def encode(self, source: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """source, mask ``(batch, source)`` → outputs ``(batch, source, memory)`` and a summary
        ``(batch, memory)``: the top layer's final state of each direction, concatenated."""
        outputs, _ = self.encoder(self.drop(self.src_embed(source)), mask)
        return outputs, final_outputs(outputs, mask_lengths(mask), self.directions)

    def start(self, batch: dict[str, Any], decoder: AttentionDecoder | None = None) -> State:
        """The source of ``batch`` (``source``, ``source_mask`` ``(batch, source)``) encoded into
        ``decoder``'s state before the first word; by default the translation decoder's."""
        decoder = decoder or self.decoder
        memory, summary = self.encode(batch["source"], batch["source_mask"])
        return decoder.init_state(memory, batch["source_mask"], summary)

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Mean cross-entropy per target word (``</s>`` included).

        batch: ``source``, ``source_mask`` ``(batch, source)``; ``target_in`` (``<s>`` + words),
        ``target_out`` (words + ``</s>``), ``target_mask`` ``(batch, target)``; ``autoencode``
        True trains the source decoder on the source instead.
        """
        decoder = self.decoder
        if batch.get("autoencode"):
            if self.reconstruct is None:
                raise ConfigError("autoencoder batches need train.autoencoder_epochs > 0")
            decoder = self.reconstruct
        state = self.start(batch, decoder)
        inputs, mask = batch["target_in"], batch["target_mask"]
        targets = batch["target_out"][mask]
        if not self.training or self.teacher_forcing >= 1:
            # the output layer (the vocabulary: the widest product) on real positions only
            attentional, _ = decoder.attentional(inputs, state)
            logits = decoder.out(decoder.drop(attentional)[mask])
            return F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)
        forced = torch.rand(inputs.shape[0], device=inputs.device) < self.teacher_forcing
        steps, prev = [], inputs[:, 0]
        for t in range(inputs.shape[1]):
            logits_t, _, state = decoder.step(prev, state)
            steps.append(logits_t)
            if t + 1 < inputs.shape[1]:
                prev = torch.where(forced, inputs[:, t + 1], logits_t.detach().argmax(-1))
        logits = torch.stack(steps, 1)[mask]
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)

    def log_probs_step(self, tokens: torch.Tensor, state: State):
        """The search's step: log-probabilities ``(n, vocab)`` with ``<pad>``, ``<unk>`` and
        ``<s>`` never chosen, attention ``(n, source)``, new state."""
        logits, weights, state = self.decoder.step(tokens, state)
        # a masked fill, not an in-place write, so that the step exports to ONNX
        banned = torch.arange(logits.shape[-1], device=logits.device) <= BOS_ID
        logits = logits.float().masked_fill(banned, float("-inf"))
        return torch.log_softmax(logits, dim=-1), weights, state

    @torch.no_grad()
    def translate(
        self,
        batch: dict[str, Any],
        beam: int = 1,
        alpha: float = 0.0,
        max_length: int | torch.Tensor = 100,
        attention: bool = False,
    ) -> Hypotheses:
        """Search for translations of ``batch`` (``source``, ``source_mask``)."""
        return search(
            self.log_probs_step, self.start(batch), BOS_ID, EOS_ID, max_length, beam, alpha,
            keep_attention=attention,
        )  # fmt: skip

    @torch.no_grad()
    def sequence_scores(self, batch: dict[str, Any]) -> torch.Tensor:
        """Summed log-probabilities ``(batch,)`` of the target sequences of ``batch`` (masked
        positions excluded), scored as the search scores them."""
        state = self.start(batch)
        inputs, out, mask = batch["target_in"], batch["target_out"], batch["target_mask"]
        total = torch.zeros(inputs.shape[0], device=inputs.device)
        for t in range(inputs.shape[1]):
            log_probs, _, state = self.log_probs_step(inputs[:, t], state)
            picked = log_probs.gather(1, out[:, t : t + 1]).squeeze(1)
            total = total + picked.masked_fill(~mask[:, t], 0.0)
        return total


def state_names(decoder: AttentionDecoder) -> list[str]:
    """The decoder state's tensors that change from step to step, in graph order: hidden,
    then cell and feed where the decoder has them."""
    return ["hidden"] + ["cell"] * (decoder.rnn_type == "lstm") + ["feed"] * decoder.input_feeding


__all__ = [
    "state_names",
    "BOS",
    "BOS_ID",
    "EOS",
    "EOS_ID",
    "SPECIALS",
    "Seq2Seq",
    "TranslateModelConfig",
]
