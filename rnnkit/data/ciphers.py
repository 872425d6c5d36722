"""Substitution ciphers over an alphabet, and the message sources that feed the cipher task.

Everything works on alphabet indices (0 .. len(alphabet)-1) held in long tensors, a whole batch
at a time: a Caesar cipher is a Vigenère cipher whose key has length 1, so one function serves
both. ``c[t] = (p[t] + key[t mod key_length]) mod len(alphabet)``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rnnkit.errors import DataError

SEED_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ-"


def normalise(text: str, alphabet: str, unknown: str, collapse: bool = False) -> str:
    """Map ``text`` onto ``alphabet``: foreign characters become ``unknown``.

    Letters are upper-cased when the alphabet has no lower-case letters (so ``hello`` and
    ``HELLO`` mean the same to the seed's alphabet). With ``collapse``, runs of ``unknown`` shrink
    to one, which turns the spaces and punctuation between words into a single separator.
    """
    if not any(ch.islower() for ch in alphabet):
        text = text.upper()
    allowed = set(alphabet)
    chars = [ch if ch in allowed else unknown for ch in text]
    if collapse:
        out: list[str] = []
        for ch in chars:
            if not (ch == unknown and out and out[-1] == unknown):
                out.append(ch)
        chars = out
    return "".join(chars)


def apply_key(
    symbols: torch.Tensor, keys: torch.Tensor, key_lengths: torch.Tensor, size: int, sign: int = 1
) -> torch.Tensor:
    """Shift every symbol by its key letter; ``sign=-1`` decrypts.

    symbols: ``(batch, time)`` alphabet indices; keys: ``(batch, max_key_length)``;
    key_lengths: ``(batch,)``, each ≥ 1. Returns ``(batch, time)``.
    """
    time = symbols.shape[1]
    position = torch.arange(time, device=symbols.device).unsqueeze(0) % key_lengths.unsqueeze(1)
    shift = keys.gather(1, position)
    return (symbols + sign * shift) % size


def encrypt_text(text: str, key: str | int, alphabet: str = SEED_ALPHABET) -> str:
    """Encrypt a string already in ``alphabet`` with a shift (Caesar) or a keyword (Vigenère)."""
    return _shift_text(text, key, alphabet, sign=1)


def decrypt_text(text: str, key: str | int, alphabet: str = SEED_ALPHABET) -> str:
    """Inverse of :func:`encrypt_text`."""
    return _shift_text(text, key, alphabet, sign=-1)


def _shift_text(text: str, key: str | int, alphabet: str, sign: int) -> str:
    if not text:
        return ""
    index = {ch: i for i, ch in enumerate(alphabet)}
    missing = sorted({ch for ch in text if ch not in index})
    if missing:
        raise DataError(f"characters {''.join(missing)!r} are not in the alphabet {alphabet!r}")
    shifts = [key] if isinstance(key, int) else [index[ch] for ch in key]
    symbols = torch.tensor([[index[ch] for ch in text]])
    keys = torch.tensor([shifts])
    out = apply_key(symbols, keys, torch.tensor([len(shifts)]), len(alphabet), sign)
    return "".join(alphabet[i] for i in out[0].tolist())


class RandomSymbols:
    """Plaintext of independent, uniformly drawn alphabet symbols (the seed's messages)."""

    def __init__(self, alphabet_size: int):
        self.alphabet_size = alphabet_size

    def sample(self, n: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, length)`` alphabet indices."""
        return torch.randint(self.alphabet_size, (n, length), generator=generator)


class TextWindows:
    """Plaintext cut at random offsets out of a normalised text stream.

    ``stream`` is a 1-D long tensor of alphabet indices; windows never cross its end.
    """

    def __init__(self, stream: torch.Tensor):
        self.stream = stream

    def sample(self, n: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, length)`` alphabet indices."""
        if len(self.stream) < length:
            raise DataError(f"the text has {len(self.stream)} symbols, fewer than {length}")
        starts = torch.randint(len(self.stream) - length + 1, (n,), generator=generator)
        return self.stream[starts.unsqueeze(1) + torch.arange(length)]

    @classmethod
    def from_file(
        cls, path: Path, alphabet: str, unknown: str, part: tuple[float, float]
    ) -> TextWindows:
        """Read and normalise ``path``; keep the fraction ``part`` = (start, end) of it.

        Splitting by position (first 90% for training, the rest held out) keeps held-out
        messages from ever overlapping training text.
        """
        from rnnkit.data.text import read_text

        text = read_text(path)
        start, end = (int(len(text) * f) for f in part)
        clean = normalise(text[start:end], alphabet, unknown, collapse=True)
        index = {ch: i for i, ch in enumerate(alphabet)}
        return cls(torch.tensor([index[ch] for ch in clean], dtype=torch.long))
