"""Contextual word features from character language models (Akbik et al. 2018, Flair).

A forward character LM reads a sentence left to right and a backward one right to left; a
word's feature is the forward LM's state after the word's last character, concatenated with
the backward LM's state after it has read (backwards) the word's first character. Both states
have seen the whole word and everything on one side of it, so the same word gets different
features in different sentences.

The LMs are rnnkit ``lm`` models at character level. Their weights become part of the model
that uses them (saved in its ``model.safetensors``), their sizes and characters travel in
:meth:`ContextualChars.describe`, so that model loads without the LM directories.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from rnnkit.config import setting
from rnnkit.data.batching import pad
from rnnkit.data.vocab import UNK, Vocab
from rnnkit.errors import ModelDirError
from rnnkit.nn.encoder import MAX_SIZE
from rnnkit.nn.language_model import LanguageModel, LMModelConfig, start_id

FILE = "contextual.json"  # in the directory of a model that holds the LMs


class ContextualChars(nn.Module):
    """Character LMs → one feature vector per word of each sentence.

    ``lms``: ``LanguageModel`` modules; ``vocabs``: their character vocabularies; ``reverse``:
    which of them read text backwards. Frozen (the default): the LMs stay in eval mode and
    get no gradients. Output width: the sum of the LMs' hidden sizes.
    """

    def __init__(
        self, lms: Sequence[nn.Module], vocabs: Sequence[Vocab], reverse: Sequence[bool],
        tune: bool = False,
    ):  # fmt: skip
        super().__init__()
        self.lms = nn.ModuleList(lms)
        self.vocabs = list(vocabs)
        self.reverse = list(reverse)
        self.tune = tune
        self.output_size = sum(lm.encoder.output_size for lm in self.lms)
        if not tune:
            for p in self.lms.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> ContextualChars:
        """Set the training mode as any module does, except that frozen LMs stay in eval mode."""
        super().train(mode)
        if not self.tune:  # a frozen LM's dropout stays off
            self.lms.eval()
        return self

    def inputs(self, token_lists: Sequence[Sequence[str]]) -> dict[str, torch.Tensor]:
        """Character ids and word positions for each LM: ``ctx{i}_ids`` ``(n, chars)`` and
        ``ctx{i}_at`` ``(n, words)`` (where each word's state is read; 0 on padding)."""
        out = {}
        width = max(len(t) for t in token_lists)
        for i, (vocab, backward) in enumerate(zip(self.vocabs, self.reverse, strict=True)):
            start = start_id(vocab)
            unk = vocab.stoi.get(UNK, 0)
            rows, places = [], []
            for tokens in token_lists:
                text = " ".join(tokens)
                ends, at = [], 0
                for token in tokens:  # index of each word's first and last character
                    ends.append((at, at + len(token) - 1))
                    at += len(token) + 1
                if backward:
                    text = text[::-1]
                    spots = [len(text) - 1 - first for first, _ in ends]
                else:
                    spots = [last for _, last in ends]
                rows.append([start] + [vocab.stoi.get(ch, unk) for ch in text])
                places.append([s + 1 for s in spots])
            out[f"ctx{i}_ids"], _ = pad(rows)
            out[f"ctx{i}_at"], _ = pad(places, length=width)
        return out

    def onnx_axes(self) -> dict[str, tuple[str, str]]:
        """The tensors of :meth:`inputs` as ONNX graph inputs, with their axes (an exported
        graph runs the LMs itself)."""
        axes = {}
        for i in range(len(self.lms)):
            axes |= {f"ctx{i}_ids": ("batch", f"chars{i}"), f"ctx{i}_at": ("batch", "time")}
        return axes

    def features(self, batch: dict[str, Any]) -> torch.Tensor:
        """The batch's ``contextual`` features if computed beforehand (frozen), else now."""
        found = batch.get("contextual")
        return found if found is not None else self(batch)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """The features ``(n, words, output_size)`` of the sentences :meth:`inputs` encoded.

        Padding after a sentence is never read: the LMs only look left of a word's place."""
        parts = []
        for i, lm in enumerate(self.lms):
            with torch.set_grad_enabled(self.tune and torch.is_grad_enabled()):
                hidden, _ = lm(batch[f"ctx{i}_ids"])  # (n, chars, hidden)
            at = batch[f"ctx{i}_at"]
            parts.append(hidden.gather(1, at.unsqueeze(2).expand(-1, -1, hidden.shape[2])))
        return torch.cat(parts, dim=2)

    def describe(self) -> list[dict[str, Any]]:
        """What rebuilds the LMs without their directories: sizes, characters, direction."""
        from rnnkit.config import to_dict

        return [
            {"model": to_dict(lm.config), "vocab": vocab.to_dict(), "reverse": backward}
            for lm, vocab, backward in zip(self.lms, self.vocabs, self.reverse, strict=True)
        ]

    @classmethod
    def build(cls, described: Sequence[dict[str, Any]], tune: bool = False) -> ContextualChars:
        """Empty LMs of the described shapes (weights come with the model that holds them)."""
        from rnnkit.config import from_dict

        lms, vocabs = [], []
        for entry in described:
            vocab = Vocab.from_dict(entry["vocab"])
            lms.append(LanguageModel(len(vocab), from_dict(LMModelConfig, entry["model"])))
            vocabs.append(vocab)
        return cls(lms, vocabs, [bool(e["reverse"]) for e in described], tune)

    @classmethod
    def from_model_dir(cls, directory: Path, tune: bool = False) -> ContextualChars:
        """The LMs described in ``contextual.json`` of the model directory that holds them."""
        from rnnkit import checkpoint as ckpt

        described = ckpt.read_json(directory / FILE)
        try:
            return cls.build(described, tune)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ModelDirError(f"{directory}/{FILE} is damaged ({err})") from None

    @classmethod
    def load(
        cls, directories: Sequence[str], tune: bool = False, data_dir: Path | None = None
    ) -> ContextualChars:
        """The character LMs of rnnkit ``lm`` model directories, weights and all (a relative
        path not found here is looked up in the data directory, as recipes' files are)."""
        from rnnkit.data.text import resolve_data_path
        from rnnkit.errors import ConfigError
        from rnnkit.tasks import load_task

        directories = [str(resolve_data_path(d, data_dir)) for d in directories]
        tasks = [load_task(d) for d in directories]
        for d, task in zip(directories, tasks, strict=True):
            if task.name != "lm" or task.level != "char":
                raise ConfigError(f"model.contextual: {d} is not a character-level lm model")
        return cls(
            [t.model for t in tasks], [t.vocab for t in tasks],
            [t.config.data.reverse for t in tasks], tune,
        )  # fmt: skip


def dim_setting() -> Any:
    """The ``model.contextual_dim`` setting of every model that reads contextual features: the
    width :func:`reprojection` maps the LMs' states to (0: as they are)."""
    return setting(
        0, "a learned linear map of the LMs' states to this many features (0: as they are)",
        0, MAX_SIZE,
    )  # fmt: skip


def reprojection(contextual: ContextualChars | None, dim: int) -> tuple[nn.Module, int]:
    """The layer between the LMs' features and the model that reads them, and the width it
    gives: a learned linear map to ``dim`` features, or the features as they are (``dim`` 0,
    or no LMs). Wide LM states (two LMs of 640 units: 1,280 floats a word) otherwise widen
    every input-to-hidden product of the model's first layer; a narrow map keeps what the
    model uses of them at a fraction of that cost."""
    if contextual is None:
        return nn.Identity(), 0
    if not dim:
        return nn.Identity(), contextual.output_size
    return nn.Linear(contextual.output_size, dim), dim


class FeatureCache:
    """Frozen contextual features of the sentences met, each computed once, not once per
    epoch; bounded by the tokens held (each ``output_size`` floats), then cleared."""

    def __init__(self, max_tokens: int = 400_000):
        self.max_tokens = max_tokens
        self._held: dict[tuple[str, ...], torch.Tensor] = {}
        self._tokens = 0

    def batch(
        self, module: ContextualChars, token_lists: Sequence[Sequence[str]]
    ) -> dict[str, torch.Tensor]:
        """The contextual part of a batch: the LM inputs when the LMs are fine-tuned, else the
        frozen features ``contextual`` ``(n, words, output_size)``."""
        if module.tune:
            return module.inputs(token_lists)
        keys = [tuple(t) for t in token_lists]
        missing = list(dict.fromkeys(k for k in keys if k not in self._held))
        found = {}
        if missing:
            device = next(module.parameters()).device
            inputs = {k: v.to(device) for k, v in module.inputs(missing).items()}
            with torch.no_grad():
                features = module.eval()(inputs).cpu()
            found = {key: features[row, : len(key)] for row, key in enumerate(missing)}
            added = sum(len(k) for k in missing)
            if self._tokens + added > self.max_tokens:
                self._held.clear()
                self._tokens = 0
            self._held.update(found)
            self._tokens += added
        rows = [found[key] if key in found else self._held[key] for key in keys]
        return {"contextual": pad_sequence(rows, batch_first=True)}
