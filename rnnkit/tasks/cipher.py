"""The cipher task: recover plaintext from Caesar or Vigenère ciphertext, one symbol per symbol.

Messages are generated on the fly (the seed's way), either as random symbols or as windows of a
real text normalised to the alphabet. The model (:mod:`rnnkit.nn.cipher_net`) is embedding →
recurrent encoder → linear, with a softmax over the alphabet at every position.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch.nn import functional as F

from rnnkit import budget
from rnnkit.config import section, setting
from rnnkit.data.batching import epoch_seed, longest_first, pad
from rnnkit.data.ciphers import (
    SEED_ALPHABET,
    RandomSymbols,
    TextWindows,
    encipher_batch,
    frequency_ranks,
    normalise,
)
from rnnkit.data.text import read_text, resolve_data_path
from rnnkit.data.vocab import PAD, Vocab
from rnnkit.errors import ConfigError, DataError, ModelDirError
from rnnkit.export import OnnxPlan, Samples, check_samples, one_graph_plan
from rnnkit.nn.cipher_net import CipherModelConfig, CipherNet
from rnnkit.tasks.base import (
    Axes,
    Evaluation,
    NoOptions,
    TaskBase,
    Verb,
    for_inference,
    predictor,
)
from rnnkit.train import TrainConfig

# Fixed streams for held-out messages: dev (checked each epoch) and test (``rnnkit eval``).
DEV_STREAM = 1_000_000_007
TEST_STREAM = 2_000_000_011
HELDOUT_CHUNK = 500  # held-out messages are drawn in chunks of this size
MAX_MESSAGE = 100_000  # symbols in one generated message


@dataclass
class CipherDataConfig:
    """What messages look like and how they are enciphered."""

    alphabet: str = SEED_ALPHABET
    unknown: str = "-"  # every character outside the alphabet becomes this symbol
    cipher: Literal["caesar", "vigenere", "substitution"] = "caesar"
    key: Literal["fixed", "random"] = "fixed"  # random: a new unknown key for every message
    shift: int = 13  # caesar with key=fixed
    keyword: str = "LEMON"  # vigenere with key=fixed; substitution: the whole cipher alphabet
    # Symbols left as they are (the end of the alphabet), as classical ciphers leave spaces;
    # they do not move a Vigenère key on. "" enciphers every symbol (the seed's way).
    passthrough: str = ""
    # frequency: the model reads each message's letters re-coded by their frequency rank in
    # it (0 = commonest), which is what lets it learn substitution with a new key every time.
    recode: Literal["none", "frequency"] = "none"
    max_key_length: int = setting(5, "vigenere with key=random: key length drawn from 1..this", 1)
    source: Literal["random", "text"] = "random"  # plaintext: uniform symbols or real text
    text_file: str = ""  # source=text: a path, absolute or inside the data directory
    holdout: float = setting(
        0.1, "source=text: the last fraction of the file, for dev/test only", 0, 1,
        low_open=True, high_open=True,
    )  # fmt: skip
    min_length: int = setting(32, "shortest message, in symbols", 1)
    max_length: int = setting(32, "longest message, in symbols", 1, MAX_MESSAGE)
    train_messages: int = setting(10_000, "fresh messages per epoch", 1, 10**9)
    eval_messages: int = setting(2_000, "dev and test messages", 1, 10**9)

    def validate(self) -> None:
        """Refuse an alphabet, keys or lengths that contradict each other."""
        if len(set(self.alphabet)) != len(self.alphabet) or len(self.alphabet) < 2:
            raise ConfigError("bad value for data.alphabet (needs ≥ 2 distinct symbols)")
        if len(self.unknown) != 1 or self.unknown not in self.alphabet:
            raise ConfigError(f"bad value {self.unknown!r} for data.unknown (must be in alphabet)")
        if self.min_length > self.max_length:
            raise ConfigError("data.min_length must be ≤ data.max_length")
        if not self.alphabet.endswith(self.passthrough) or len(self.passthrough) >= len(
            self.alphabet
        ):
            raise ConfigError(
                f"bad value {self.passthrough!r} for data.passthrough (the last symbols of"
                " data.alphabet, leaving at least one to encipher)"
            )
        letters = self.alphabet[: len(self.alphabet) - len(self.passthrough)]
        if self.cipher == "vigenere" and self.key == "fixed":
            bad = sorted(set(self.keyword) - set(letters))
            if not self.keyword or bad:
                raise ConfigError(f"bad value {self.keyword!r} for data.keyword (not in alphabet)")
        if self.cipher == "substitution" and self.key == "fixed":
            if sorted(self.keyword) != sorted(letters):
                raise ConfigError(
                    f"bad value {self.keyword!r} for data.keyword (a substitution key holds"
                    f" every enciphered symbol once: {letters!r})"
                )
        if self.source == "text" and not self.text_file:
            raise ConfigError("data.text_file must be set when data.source is text")


@dataclass
class CipherConfig:
    """A cipher recipe: its messages, model and training."""

    task: Literal["cipher"] = "cipher"
    data: CipherDataConfig = field(default_factory=CipherDataConfig)
    model: CipherModelConfig = field(default_factory=CipherModelConfig)
    # Batch 256 trained fastest of 64, 256 and 1024 for the default sizes on a 2-core CPU.
    train: TrainConfig = section(TrainConfig, epochs=10, batch_size=256, lr=1e-2)


def alphabet_vocab(alphabet: str) -> Vocab:
    """The vocabulary of a cipher model: padding, then the alphabet's symbols."""
    return Vocab(list(alphabet), specials=[PAD], unk=None)


class _EpochBatches:
    """One epoch of freshly generated batches, the same every time for the same epoch."""

    def __init__(self, task: CipherTask, seed: int, rank: int = 0, world_size: int = 1):
        self.task = task
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        c = task.config
        self.sizes = [c.train.batch_size] * (c.data.train_messages // c.train.batch_size)
        if c.data.train_messages % c.train.batch_size:
            self.sizes.append(c.data.train_messages % c.train.batch_size)

    def __len__(self) -> int:
        return sum(size >= self.world_size for size in self.sizes)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # Every process draws every global batch (the draws must stay in step) and keeps its
        # share of the rows, as base.shard does with example indices.
        generator = torch.Generator().manual_seed(self.seed)
        source = self.task.source("train")
        for size in self.sizes:
            batch = self.task.make_batch(source, size, generator)
            if size >= self.world_size:
                yield {k: v[self.rank :: self.world_size] for k, v in batch.items()}


class CipherTask(TaskBase):
    """Builds the cipher model and its data; trains via the Trainer; predicts and evaluates."""

    name = "cipher"
    Config = CipherConfig
    Options = NoOptions
    cpu_bf16_pays = True  # 1.1-1.6x faster in bf16 on AVX512-BF16 (bench/precision.py)
    metric_goals = {
        "char_accuracy": "max",
        "letter_accuracy": "max",
        "message_accuracy": "max",
        "loss": "min",
    }
    verb = Verb(
        "decrypt", "decrypt text with a cipher model", "ciphertexts", label="Ciphertext",
        hint="Decrypted as you type.", button=None,
    )  # fmt: skip
    # What runs the network in predict: None, PyTorch; an rnnkit.backends.OnnxRunner when
    # loaded with backend onnx (its graph "model", as rnnkit.export builds it).
    runner: Any = None

    def __init__(
        self, config: CipherConfig, vocabs: tuple[Vocab, ...], data_dir: Path | None = None
    ):
        self.config = config
        self.data_dir = data_dir
        d = config.data
        self.alphabet = d.alphabet
        (self.vocab,) = vocabs
        if self.vocab != alphabet_vocab(d.alphabet):
            raise ModelDirError("vocab.json does not match the alphabet in config.json")
        self.pad_id = self.vocab.stoi[PAD]
        self.model = CipherNet(len(self.vocab), config.model, self.pad_id)
        self._sources: dict[str, Any] = {}
        self.letters = len(d.alphabet) - len(d.passthrough)  # symbols below this are enciphered
        if d.cipher in ("vigenere", "substitution") and d.key == "fixed":
            self.fixed_key = [d.alphabet.index(ch) for ch in d.keyword]
        else:
            self.fixed_key = [d.shift % self.letters]

    @classmethod
    def build(cls, config: CipherConfig, data_dir: Path | None = None) -> CipherTask:
        """A new model on the config's alphabet; messages are made as training asks for them."""
        return cls(config, (alphabet_vocab(config.data.alphabet),), data_dir)

    # ------------------------------------------------------------------ data
    def source(self, split: str) -> RandomSymbols | TextWindows:
        """The plaintext source of a split: ``train``, or held-out ``dev``/``test``."""
        if split not in self._sources:
            d = self.config.data
            if d.source == "random":
                self._sources[split] = RandomSymbols(len(d.alphabet))
            else:
                # Train on the head; dev and test each get one half of the held-out tail.
                middle = 1.0 - d.holdout / 2
                part = {
                    "train": (0.0, 1.0 - d.holdout),
                    "dev": (1.0 - d.holdout, middle),
                    "test": (middle, 1.0),
                }[split]
                path = resolve_data_path(d.text_file, self.data_dir)
                self._sources[split] = TextWindows.from_file(path, d.alphabet, d.unknown, part)
        return self._sources[split]

    def keys(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys ``(n, max_key_length)`` and key lengths ``(n,)`` for ``n`` messages (for
        substitution, ``(n, letters)`` permutations)."""
        d = self.config.data
        size = self.letters
        if d.key == "fixed":
            keys = torch.tensor([self.fixed_key]).expand(n, -1)
            return keys, torch.full((n,), len(self.fixed_key))
        if d.cipher == "substitution":
            keys = torch.rand(n, size, generator=generator).argsort(1)
            return keys, torch.full((n,), size)
        longest = 1 if d.cipher == "caesar" else d.max_key_length
        keys = torch.randint(size, (n, longest), generator=generator)
        lengths = torch.randint(1, longest + 1, (n,), generator=generator)
        return keys, lengths

    def make_batch(self, source, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Generate ``n`` (ciphertext, plaintext) pairs as a padded batch.

        Returns ``source`` and ``target`` ids ``(n, time)`` and ``mask`` ``(n, time)``.
        """
        d = self.config.data
        plain = source.sample(n, d.max_length, generator)
        keys, key_lengths = self.keys(n, generator)
        cipher = encipher_batch(plain, d.cipher, keys, key_lengths, self.letters)
        if d.min_length == d.max_length:
            mask = torch.ones_like(plain, dtype=torch.bool)
        else:
            lengths = torch.randint(d.min_length, d.max_length + 1, (n,), generator=generator)
            mask = torch.arange(d.max_length).unsqueeze(0) < lengths.unsqueeze(1)
        cipher = self.recode(cipher, mask)
        # Alphabet index i is vocabulary id i + 1: id 0 is padding.
        return {
            "source": (cipher + 1).masked_fill(~mask, 0),
            "target": (plain + 1).masked_fill(~mask, 0),
            "mask": mask,
        }

    def recode(self, cipher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """What the model reads for ciphertext symbols ``(n, time)``: as they are, or
        re-coded by frequency rank (``data.recode``)."""
        if self.config.data.recode == "frequency":
            return frequency_ranks(cipher, mask, self.letters)
        return cipher

    def recode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """:meth:`recode` for vocabulary ids ``(n, time)`` (alphabet index + 1, 0 = padding)."""
        if self.config.data.recode == "none":
            return ids
        return (self.recode((ids - 1).clamp(min=0), mask) + 1).masked_fill(~mask, 0)

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> _EpochBatches:
        """Freshly generated batches of ``train.batch_size`` messages (see :meth:`make_batch`),
        the same for the same ``train.seed`` and ``epoch``; each process keeps its share of
        every batch's rows."""
        seed = epoch_seed(self.config.train.seed, epoch, stride=104_729, offset=17)
        return _EpochBatches(self, seed, rank, world_size)

    def heldout_batches(self, split: str) -> list[dict[str, torch.Tensor]]:
        """The fixed dev or test messages: the same whatever the model or its batch size."""
        stream = DEV_STREAM if split == "dev" else TEST_STREAM
        generator = torch.Generator().manual_seed(stream)
        n, size = self.config.data.eval_messages, HELDOUT_CHUNK
        source = self.source(split)
        return [self.make_batch(source, min(size, n - i), generator) for i in range(0, n, size)]

    # ------------------------------------------------------------ evaluation
    def evaluate(self, split: str = "dev") -> Evaluation:
        """Character and message accuracy (fractions) and loss on held-out messages."""
        return Evaluation(self._score(self.heldout_batches(split)))

    @torch.no_grad()
    def _score(self, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
        device = for_inference(self.model)
        right = chars = whole = messages = letter_right = letters = 0
        loss_sum = 0.0
        for batch in batches:
            source, target, mask = (batch[k].to(device) for k in ("source", "target", "mask"))
            logits = self.model(source, mask)
            loss_sum += float(F.cross_entropy(logits[mask], target[mask], reduction="sum"))
            logits[..., self.pad_id] = float("-inf")
            hit = (logits.argmax(-1) == target) & mask
            right += int(hit.sum())
            chars += int(mask.sum())
            is_letter = mask & (target <= self.letters)  # ids are alphabet index + 1
            letter_right += int((hit & is_letter).sum())
            letters += int(is_letter.sum())
            whole += int((hit | ~mask).all(dim=1).sum())
            messages += source.shape[0]
        return {
            "char_accuracy": right / max(1, chars),
            "letter_accuracy": letter_right / max(1, letters),
            "message_accuracy": whole / max(1, messages),
            "loss": loss_sum / max(1, chars),
        }

    def evaluate_file(self, path: str | Path) -> Evaluation:
        """Score a file of ``CIPHERTEXT<TAB>PLAINTEXT`` lines (``rnnkit eval --data``)."""
        return Evaluation(self._score(self.read_pairs(path)))

    def read_pairs(self, path: str | Path) -> list[dict[str, torch.Tensor]]:
        """Batches from a file of ``CIPHERTEXT<TAB>PLAINTEXT`` lines (for ``eval --data``)."""
        d = self.config.data
        index = {ch: i + 1 for i, ch in enumerate(d.alphabet)}
        sources, targets = [], []
        lines = read_text(path).splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise DataError("expected CIPHERTEXT<TAB>PLAINTEXT", str(path), number)
            cipher, plain = (normalise(p, d.alphabet, d.unknown) for p in parts)
            if len(cipher) != len(plain):
                raise DataError("ciphertext and plaintext differ in length", str(path), number)
            sources.append([index[ch] for ch in cipher])
            targets.append([index[ch] for ch in plain])
        if not sources:
            raise DataError("no pairs in file", str(path))
        size = self.config.train.batch_size
        batches = []
        for i in range(0, len(sources), size):
            ids, mask = pad(sources[i : i + size])
            ids = self.recode_ids(ids, mask)
            tgt, _ = pad(targets[i : i + size])
            batches.append({"source": ids, "target": tgt, "mask": mask})
        return batches

    # ------------------------------------------------------------ prediction
    @predictor
    def predict(self, texts: list[str], options: NoOptions) -> list[dict[str, Any]]:
        """Decrypt each ciphertext: ``{"plaintext": ...}`` per input, in the model's alphabet
        (foreign characters read as the unknown symbol; ``""`` gives ``""``)."""
        return [{"plaintext": plain} for plain in self.decrypt(texts)]

    def format(self, text: str, result: dict[str, Any]) -> str:
        """The plaintext alone."""
        return result["plaintext"]

    @torch.no_grad()
    def decrypt(self, texts: Sequence[str], batch_size: int = 256) -> list[str]:
        """Decrypt each text. Foreign characters are read as the unknown symbol; "" gives ""."""
        d = self.config.data
        device = for_inference(self.model)
        clean = [normalise(t, d.alphabet, d.unknown) for t in texts]
        out = [""] * len(clean)
        # A batch holds at most the budget's padded characters, however long the texts.
        for rows in longest_first([len(t) for t in clean], batch_size, budget.PREDICT_TOKENS):
            budget.check_deadline()
            ids, mask = pad([self.vocab.encode(clean[i]) for i in rows], self.pad_id)
            ids = self.recode_ids(ids, mask)
            best = self.decode(ids.to(device), mask.to(device)).cpu()
            for row, i in enumerate(rows):
                out[i] = "".join(self.vocab.decode(best[row, : len(clean[i])].tolist()))
        return out

    def decode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The predict path's call of the network: the likeliest symbol ids ``(batch, time)``
        for ids and mask ``(batch, time)``, by PyTorch or by :attr:`runner`'s graph."""
        if self.runner is not None:
            return self.runner.run("model", {"ids": ids, "mask": mask})["decoded"]
        return self.model.decode(ids, mask)

    # ------------------------------------------------------------------------------ export
    def onnx_plan(self, data: bool = True) -> OnnxPlan:
        """One graph, ``model``: ``ids`` int64, ``mask`` bool ``(batch, time)`` → ``logits``
        float32 ``(batch, time, vocab)`` and ``decoded`` int64 ``(batch, time)``, the likeliest
        symbol ids (never padding; 0 on padded positions), as :meth:`CipherNet.decode`;
        checked on ciphertexts of the dev text (else symbols drawn from the alphabet)."""

        def read() -> list[list[int]]:
            b = self.make_batch(self.source("dev"), 16, torch.Generator().manual_seed(0))
            return [row[real].tolist() for row, real in zip(b["source"], b["mask"], strict=True)]

        def drawn() -> Samples:
            generator = torch.Generator().manual_seed(0)
            row = torch.randint(1, len(self.vocab), (200,), generator=generator).tolist()
            return Samples([row], "symbols drawn from the alphabet")

        def batch(rows: list[list[int]]) -> dict[str, torch.Tensor]:
            return dict(zip(("ids", "mask"), pad(rows), strict=True))

        def forward(b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.model(b["ids"], b["mask"])
            return logits, self.model.best(logits, b["mask"])

        text = ("batch", "time")
        inputs = {"ids": text, "mask": text}
        outputs: dict[str, Axes] = {"logits": (*text, len(self.vocab)), "decoded": text}
        samples = check_samples(read, drawn, data)
        return one_graph_plan(self.model, forward, inputs, outputs, samples, batch, ("decoded",))

    @staticmethod
    def demo(out: Path) -> None:
        """``rnnkit demo``: train the seed's setting into ``out``, then decrypt a few
        messages and score fresh held-out ones."""
        _demo(out)


def _demo(out: Path) -> None:
    from rnnkit.data.ciphers import encrypt_text
    from rnnkit.tasks import build_task
    from rnnkit.train import Trainer

    config = CipherConfig()
    print(
        f"Training the seed's cipher model (ROT13 over {config.data.alphabet}, "
        f"{config.model.rnn.upper()} {config.model.hidden_size}) on CPU ...",
        flush=True,
    )
    task = build_task(CipherTask.name, config)
    summary = Trainer(task, config.train, out).fit()
    print(f"trained in {summary['minutes'] * 60:.0f} s; model in {out}\n")
    model = CipherTask.from_dir(out)
    plain = ["THIS-IS-A-SECRET", "THIS-IS-ANOTHER-SECRET", "ATTACK-AT-DAWN", "HELLO-WORLD"]
    secrets = [encrypt_text(p, config.data.shift) for p in plain]
    for secret, result in zip(secrets, model.predict(secrets), strict=True):
        print(f"{secret} -> {result['plaintext']}")
    metrics = model.evaluate("test")
    print(
        f"\nheld-out ({config.data.eval_messages} fresh messages): "
        f"character accuracy {metrics['char_accuracy']:.2%}, "
        f"message accuracy {metrics['message_accuracy']:.2%}"
    )
    print(f"try: .venv/bin/rnnkit decrypt --model {out} FUVEMVEMNMERPDRF")


__all__ = ["CipherConfig", "CipherTask"]
