"""Neural building blocks shared by the tasks."""

from rnnkit.nn.encoder import RecurrentEncoder

__all__ = ["RecurrentEncoder"]
