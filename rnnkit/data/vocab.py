"""A vocabulary: tokens ↔ integer ids, with special tokens and unknown handling."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rnnkit.errors import DataError, ModelDirError

PAD = "<pad>"
UNK = "<unk>"


class Vocab:
    """Maps tokens (characters, words, tags) to ids and back.

    Specials come first, in the order given, so ``<pad>`` is id 0 when it is the first special.
    With ``unk`` set, unknown tokens encode to its id; with ``unk=None`` they raise a DataError
    (right for closed sets such as a cipher alphabet or a tag set).
    """

    def __init__(
        self,
        tokens: Iterable[str],
        specials: Sequence[str] = (PAD, UNK),
        unk: str | None = UNK,
    ):
        self.specials = list(specials)
        if unk is not None and unk not in self.specials:
            raise ValueError(f"unknown token {unk!r} must be one of the specials")
        self.itos: list[str] = []
        self.stoi: dict[str, int] = {}
        for token in [*self.specials, *tokens]:
            if token not in self.stoi:
                self.stoi[token] = len(self.itos)
                self.itos.append(token)
        self.unk = unk
        self.unk_id = self.stoi[unk] if unk is not None else None
        self.pad_id = self.stoi.get(PAD)

    @classmethod
    def build(
        cls,
        counts: Counter[str] | Iterable[str],
        min_freq: int = 1,
        max_size: int | None = None,
        specials: Sequence[str] = (PAD, UNK),
        unk: str | None = UNK,
    ) -> Vocab:
        """Keep tokens seen at least ``min_freq`` times, most frequent first (ties by text)."""
        if not isinstance(counts, Counter):
            counts = Counter(counts)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        kept = [tok for tok, n in ranked if n >= min_freq and tok not in specials]
        if max_size is not None:
            kept = kept[: max(0, max_size - len(specials))]
        return cls(kept, specials=specials, unk=unk)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, specials={self.specials})"

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Token sequence → id list. Unknown tokens map to ``unk`` or raise DataError."""
        ids = []
        for token in tokens:
            idx = self.stoi.get(token, self.unk_id)
            if idx is None:
                raise DataError(f"token {token!r} is not in the vocabulary")
            ids.append(idx)
        return ids

    def decode(self, ids: Iterable[int], strip_specials: bool = True) -> list[str]:
        """Id sequence → tokens; specials (padding and the like) are dropped by default."""
        n_special = len(self.specials)
        out = []
        for idx in ids:
            idx = int(idx)
            if strip_specials and idx < n_special and self.itos[idx] != self.unk:
                continue
            out.append(self.itos[idx])
        return out

    def to_dict(self) -> dict[str, Any]:
        """The vocabulary as JSON data: ``itos`` (specials first), ``specials`` and ``unk``."""
        return {"itos": self.itos, "specials": self.specials, "unk": self.unk}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocab:
        """The vocabulary :meth:`to_dict` gave; anything malformed or inconsistent is a
        ModelDirError (the data comes from a model directory)."""
        if not isinstance(data, dict):
            raise ModelDirError(
                f"a vocabulary is a JSON object with itos, specials and unk, not "
                f"{type(data).__name__}"
            )
        try:
            specials = list(data["specials"])
            itos = list(data["itos"])
            unk = data["unk"]
        except KeyError as err:
            raise ModelDirError(f"vocabulary is missing its {err} entry") from None
        except TypeError:
            raise ModelDirError("vocabulary's itos and specials must be lists") from None
        if not all(isinstance(t, str) for t in itos) or not isinstance(unk, (str, type(None))):
            raise ModelDirError("vocabulary holds something other than strings")
        if itos[: len(specials)] != specials or len(set(itos)) != len(itos):
            raise ModelDirError("vocabulary is inconsistent (specials or duplicate tokens)")
        return cls(itos[len(specials) :], specials=specials, unk=unk)

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        """The vocabulary in the JSON file ``path``; its errors name the file."""
        from rnnkit.checkpoint import read_json

        data = read_json(Path(path))  # its own errors name the file
        try:
            return cls.from_dict(data)
        except ModelDirError as err:
            raise ModelDirError(f"{path}: {err}") from None
