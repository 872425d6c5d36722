"""Substitution ciphers over an alphabet, and the message sources that feed the cipher task.

Everything works on alphabet indices (0 .. len(alphabet)-1) held in long tensors, a whole batch
at a time: a Caesar cipher is a Vigenère cipher whose key has length 1, so one function serves
both. ``c[t] = (p[t] + key[t mod key_length]) mod len(alphabet)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

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
    # Every symbol enciphered: the pass-through cipher with nothing passing through.
    return encipher_batch(symbols, "vigenere", (sign * keys) % size, key_lengths, size)


def encrypt_text(text: str, key: str | int, alphabet: str = SEED_ALPHABET) -> str:
    """Encrypt a string already in ``alphabet`` with a shift (Caesar) or a keyword (Vigenère).
    Shifting by ``len(alphabet) - key`` decrypts."""
    if not text:
        return ""
    index = {ch: i for i, ch in enumerate(alphabet)}
    missing = sorted({ch for ch in text if ch not in index})
    if missing:
        raise DataError(f"characters {''.join(missing)!r} are not in the alphabet {alphabet!r}")
    shifts = [key] if isinstance(key, int) else [index[ch] for ch in key]
    symbols = torch.tensor([[index[ch] for ch in text]])
    keys = torch.tensor([shifts])
    out = apply_key(symbols, keys, torch.tensor([len(shifts)]), len(alphabet))
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


# ------------------------------------------------------------------ classical text ciphers
# Classical practice: only the letters a-z are enciphered (their case is kept); digits, spaces
# and punctuation pass through unchanged and do not move a Vigenère key on.
LETTERS = "abcdefghijklmnopqrstuvwxyz"
CipherName = Literal["caesar", "vigenere", "substitution"]


class Letters:
    """The letters of a text, which is what a classical key acts on.

    ``values``: ``(m,)`` long, 0..25 for a..z in reading order; ``upper``: ``(m,)`` bool;
    ``positions``: ``(m,)`` long, their indices in ``text``.
    """

    def __init__(self, text: str):
        self.text = text
        found = [(i, ch) for i, ch in enumerate(text) if ch.lower() in _INDEX and ch.isascii()]
        self.positions = torch.tensor([i for i, _ in found], dtype=torch.long)
        self.values = torch.tensor([_INDEX[ch.lower()] for _, ch in found], dtype=torch.long)
        self.upper = torch.tensor([ch.isupper() for _, ch in found], dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.values)

    def render(self, values: torch.Tensor | Sequence[int]) -> str:
        """The text with its letters replaced by ``values`` ``(m,)``, case kept."""
        chars = list(self.text)
        for i, v, up in zip(
            self.positions.tolist(), list(values), self.upper.tolist(), strict=True
        ):
            ch = LETTERS[int(v)]
            chars[i] = ch.upper() if up else ch
        return "".join(chars)


_INDEX = {ch: i for i, ch in enumerate(LETTERS)}


def parse_key(cipher: CipherName, key: str | int) -> torch.Tensor:
    """A key as shifts or a table: Caesar ``3`` or ``"d"``; Vigenère ``"lemon"``; substitution
    the 26 cipher letters for plaintext a..z (``"qwertyuiopasdfghjklzxcvbnm"``).

    Returns ``(p,)`` shifts for Caesar/Vigenère, ``(26,)`` cipher letter per plain letter for
    substitution.
    """
    if cipher == "caesar" and isinstance(key, int):
        return torch.tensor([key % 26])
    text = str(key).lower()
    if not text or any(ch not in _INDEX for ch in text):
        raise DataError(f"bad {cipher} key {str(key)[:40]!r}: letters a-z only")
    values = torch.tensor([_INDEX[ch] for ch in text])
    if cipher == "caesar" and len(values) != 1:
        raise DataError(f"bad caesar key {text[:40]!r}: one letter or a shift")
    if cipher == "substitution" and sorted(values.tolist()) != list(range(26)):
        raise DataError(f"bad substitution key {text[:40]!r}: each letter a-z exactly once")
    return values


def key_text(cipher: CipherName, key: torch.Tensor) -> str:
    """Inverse of :func:`parse_key` (Caesar and Vigenère keys as letters)."""
    return "".join(LETTERS[int(v)] for v in key)


def encipher_letters(
    values: torch.Tensor, cipher: CipherName, key: torch.Tensor, sign: int = 1
) -> torch.Tensor:
    """Encipher (``sign=1``) or decipher (``-1``) letter values ``(..., m)`` with one key."""
    if cipher == "substitution":
        table = key if sign == 1 else torch.argsort(key)
        return table[values]
    shifts = key[torch.arange(values.shape[-1]) % len(key)]
    return (values + sign * shifts) % 26


def encipher(text: str, cipher: CipherName, key: str | int) -> str:
    """Encipher ``text`` classically: letters only, case kept, everything else as it is."""
    letters = Letters(text)
    return letters.render(encipher_letters(letters.values, cipher, parse_key(cipher, key)))


def decipher(text: str, cipher: CipherName, key: str | int) -> str:
    """Inverse of :func:`encipher`."""
    letters = Letters(text)
    return letters.render(encipher_letters(letters.values, cipher, parse_key(cipher, key), -1))


def random_key(cipher: CipherName, generator: torch.Generator, length: int = 1) -> torch.Tensor:
    """A uniformly drawn key: one shift, ``length`` shifts, or a permutation of the letters."""
    if cipher == "substitution":
        return torch.randperm(26, generator=generator)
    return torch.randint(26, (1 if cipher == "caesar" else length,), generator=generator)


def encipher_batch(
    plain: torch.Tensor,
    cipher: CipherName,
    keys: torch.Tensor,
    key_lengths: torch.Tensor,
    letters: int,
) -> torch.Tensor:
    """Encipher messages whose symbols ``≥ letters`` pass through, as spaces do classically
    (they do not move a periodic key on either).

    plain: ``(n, time)`` alphabet indices; keys: ``(n, max_key_length)`` shifts, or
    ``(n, letters)`` permutations for substitution; key_lengths: ``(n,)``. Returns
    ``(n, time)``.
    """
    is_letter = plain < letters
    inside = plain.clamp(max=letters - 1)
    if cipher == "substitution":
        return torch.where(is_letter, keys.gather(1, inside), plain)
    position = (is_letter.long().cumsum(1) - 1).clamp(min=0) % key_lengths.unsqueeze(1)
    return torch.where(is_letter, (inside + keys.gather(1, position)) % letters, plain)


def frequency_ranks(cipher: torch.Tensor, mask: torch.Tensor, letters: int) -> torch.Tensor:
    """Re-code every message's letters by their frequency rank in that message: its commonest
    letter becomes 0, the next 1... (ties: the letter seen first wins). Every substitution key
    then gives the same symbols for the same plaintext, so the model sees only what the key
    preserves: which letters repeat where (Aldarrab & May 2021).

    cipher, mask: ``(n, time)``; symbols ``≥ letters`` are left as they are.
    """
    is_letter = cipher < letters
    inside = cipher.clamp(max=letters - 1)
    counts = torch.zeros(cipher.shape[0], letters, dtype=torch.long)
    real = is_letter & mask
    counts.scatter_add_(1, inside, real.long())
    time = cipher.shape[1]
    where = torch.arange(time).expand_as(cipher).masked_fill(~real, time)
    first = torch.full_like(counts, time).scatter_reduce(1, inside, where, "amin")
    order = torch.argsort(first - counts * (time + 1), dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(letters).expand_as(order).contiguous())
    return torch.where(is_letter, rank.gather(1, inside), cipher)
