"""Neural building blocks shared by the tasks, and the models made of them (one module each)."""

from rnnkit.nn.encoder import RecurrentEncoder
from rnnkit.nn.sampling import filter_logits, sample_next

__all__ = ["RecurrentEncoder", "filter_logits", "sample_next"]
