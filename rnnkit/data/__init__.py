"""Readers, vocabularies, batching and the cipher data generator."""

from rnnkit.data.batching import bucket_batches, move, pad
from rnnkit.data.vocab import PAD, UNK, Vocab

__all__ = ["PAD", "UNK", "Vocab", "bucket_batches", "move", "pad"]
