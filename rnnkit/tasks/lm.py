"""Language models: predict the next character or word; generate text from a prompt.

Training reads the corpus as ``batch_size`` contiguous parallel streams cut into BPTT windows; the
recurrent state flows from one window to the next and is detached between them (truncated
backpropagation through time), as in pytorch/examples and AWD-LSTM, instead of padded sentences.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from rnnkit import budget
from rnnkit.config import section, setting
from rnnkit.data.batching import epoch_generator
from rnnkit.data.corpus import Prepared, Shape, StreamRows, prepare
from rnnkit.data.text import (
    EOS,
    Level,
    as_streams,
    read_text,
    resolve_data_path,
    tokenize,
    windows,
)
from rnnkit.data.vocab import PAD, UNK, Vocab
from rnnkit.errors import ConfigError
from rnnkit.export import CHECK_LENGTHS, OnnxGraph, OnnxPlan, RunGraph, Samples, check_samples
from rnnkit.nn.language_model import LanguageModel, LMModelConfig, start_id
from rnnkit.nn.sampling import sample_next
from rnnkit.tasks.base import (
    Axes,
    Evaluation,
    TaskBase,
    Verb,
    check_inputs,
    for_inference,
    predictor,
    resolve_options,
)
from rnnkit.train import TrainConfig


@dataclass
class LMOptions:
    """How to continue a prompt; the same defaults in ``rnnkit generate``, Python and HTTP."""

    length: int = setting(200, "tokens (characters or words) to generate", 0, 5000)
    temperature: float = setting(1.0, "sampling temperature; 0 = greedy", 0, 100)
    top_k: int = setting(0, "sample among the k likeliest tokens (0 = all)", 0, 1_000_000)
    top_p: float = setting(
        1.0, "nucleus sampling: the smallest set with this mass (1 = all)", 0, 1, low_open=True
    )
    seed: int | None = setting(None, "makes sampling repeatable (null = fresh)", 0, 2**63 - 1)


@dataclass
class LMDataConfig:
    """The texts, how they are cut into tokens, and the BPTT windows."""

    level: Level = "char"
    train: str = ""  # a text file, absolute or inside the data directory
    dev: str = ""  # "" = the last dev_fraction of the training file
    test: str = ""  # "" = score the validation text
    dev_fraction: float = setting(0.1, "", 0, 1, low_open=True, high_open=True)
    min_freq: int = 1  # rarer tokens become <unk>
    max_vocab: int | None = None
    bptt: int = setting(128, "tokens per truncated-BPTT window", 1)
    random_offset: bool = True  # shift the window grid by a random amount each epoch
    eval_streams: int = setting(16, "parallel streams when scoring", 1)
    reverse: bool = False  # read every text back to front: a backward LM (char level only)
    max_dev_tokens: int = setting(
        2_000_000, "dev scored on its first this many tokens (0 = all)", 0
    )

    def validate(self) -> None:
        """Refuse a recipe without a text, or a backward LM of words."""
        if not self.train:
            raise ConfigError("data.train must name a text file")
        if self.reverse and self.level != "char":
            raise ConfigError("data.reverse needs data.level char (a backward character LM)")


@dataclass
class LMConfig:
    """An lm recipe: its texts, model and training."""

    task: Literal["lm"] = "lm"
    data: LMDataConfig = field(default_factory=LMDataConfig)
    model: LMModelConfig = field(default_factory=LMModelConfig)
    train: TrainConfig = section(
        TrainConfig, epochs=20, batch_size=64, lr=2e-3, clip_norm=1.0, metric="loss"
    )


class _Windows:
    """One epoch of BPTT windows over the training streams, each read from disk when the
    Trainer reaches it."""

    def __init__(self, rows: StreamRows, bptt: int, offset: int):
        self.rows = rows
        self.spans = windows(rows, bptt, offset)

    def __len__(self) -> int:
        return len(self.spans)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i, (start, length) in enumerate(self.spans):
            tokens = self.rows.window(start, start + length + 1)
            yield {"input": tokens[:, :-1], "target": tokens[:, 1:], "reset": i == 0}


def text_tokens(text: str, d: LMDataConfig) -> list[str]:
    """The tokens a model of data config ``d`` reads for ``text``: reversed for a backward LM."""
    tokens = tokenize(text, d.level)
    return tokens[::-1] if d.reverse else tokens


def stream_shape(d: LMDataConfig) -> Shape:
    """How the training file of data config ``d`` is prepared (:mod:`rnnkit.data.corpus`)."""
    hold_out = None if d.dev else d.dev_fraction
    return Shape("stream", d.level, False, d.reverse, d.min_freq, d.max_vocab, hold_out)


def prepare_training_text(config: LMConfig, data_dir: Path | None) -> Prepared:
    """The recipe's training file prepared into token ids on disk (cached)."""
    d = config.data
    path = resolve_data_path(d.train, data_dir)
    return prepare(path, stream_shape(d), progress=config.train.progress)


class LMTask(TaskBase):
    """Builds the language model and its token streams; scores, generates, saves."""

    name = "lm"
    Config = LMConfig
    Options = LMOptions
    cpu_bf16_pays = True  # 1.4-1.7x faster in bf16 on AVX512-BF16 (bench/precision.py)
    metric_goals = {"loss": "min", "perplexity": "min", "bpc": "min"}
    prepare_training_file = staticmethod(prepare_training_text)  # rnnkit prepare
    verb = Verb(
        "generate", "generate text with a language model", "prompts", label="Prompt",
        hint="Ctrl+Enter generates; Esc stops.", button="Generate", prompt=True, multiline=True,
    )  # fmt: skip

    def __init__(self, config: LMConfig, vocabs: tuple[Vocab, ...], data_dir: Path | None = None):
        self.config = config
        self.data_dir = data_dir
        self.level = config.data.level
        self._ids: dict[str, torch.Tensor] = {}
        self._corpus: Prepared | None = None
        (self.vocab,) = vocabs
        self.model = LanguageModel(len(self.vocab), config.model)

    @classmethod
    def build(cls, config: LMConfig, data_dir: Path | None = None) -> LMTask:
        """A new model whose vocabulary is the training text's. The training file is prepared
        into token ids on disk once (cached; :mod:`rnnkit.data.corpus`), and the dev text is
        read now, so a bad dev file stops the run before its first step."""
        corpus = prepare_training_text(config, data_dir)
        task = cls(config, (corpus.vocab,), data_dir)
        task._corpus = corpus
        task.ids("dev")
        if config.model.pretrained:
            task.load_vectors(task.model.embed, task.vocab, config.model.pretrained, unit="tokens")
        return task

    # ------------------------------------------------------------------ data
    def tokens_of(self, text: str) -> list[str]:
        """The tokens the model reads for ``text``: reversed for a backward LM."""
        return text_tokens(text, self.config.data)

    def corpus(self) -> Prepared:
        """The training file, prepared (read from the cache when it is there)."""
        if self._corpus is None:
            self._corpus = prepare_training_text(self.config, self.data_dir)
        return self._corpus

    def ids(self, split: str) -> torch.Tensor:
        """The token ids of ``dev`` or ``test`` as one 1-D tensor: its own file, else the tail
        of the training file held out from it. Dev is cut at ``data.max_dev_tokens``."""
        if split not in self._ids:
            d = self.config.data
            name = d.test if split == "test" and d.test else d.dev
            if name:
                text = read_text(resolve_data_path(name, self.data_dir))
                ids = torch.tensor(self.vocab.encode(self.tokens_of(text)), dtype=torch.long)
            else:  # a view of the file: only the part kept below is read and widened
                corpus = self.corpus()
                ids = torch.from_numpy(corpus.ids()[corpus.split :])
            if split == "dev" and d.max_dev_tokens:
                ids = ids[: d.max_dev_tokens]
            self._ids[split] = ids.long()
        return self._ids[split]

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> _Windows:
        """BPTT windows of up to ``data.bptt`` tokens over ``train.batch_size`` parallel streams:
        ``input`` and ``target`` ``(batch, time)``, and ``reset`` on the first window. With
        ``data.random_offset`` each epoch shifts the window grid; under several processes each
        reads its own streams."""
        d = self.config.data
        corpus = self.corpus()
        rows = StreamRows(corpus, 0, corpus.split, self.config.train.batch_size)
        if world_size > 1:  # each process reads its own streams, the same ones every epoch
            if rows.shape[0] < world_size:
                raise ConfigError(
                    f"train.batch_size {rows.shape[0]} is smaller than the {world_size} "
                    "processes: each needs a stream of its own"
                )
            rows = rows.select(rank, world_size)
        offset = 0
        if d.random_offset:
            # Never past the last predictable position, or a short text's epoch would be empty.
            g = epoch_generator(self.config.train.seed, epoch)
            offset = int(torch.randint(min(d.bptt, rows.shape[1] - 1), (1,), generator=g))
        return _Windows(rows, d.bptt, offset)

    # ------------------------------------------------------------ evaluation
    def evaluate(self, split: str = "dev") -> Evaluation:
        """Loss, perplexity (and bpc) of the model on a split."""
        return Evaluation(self._score(self.ids(split)))

    def evaluate_file(self, path: str | Path) -> Evaluation:
        """Loss, perplexity (and bpc) of the model on a text file."""
        return Evaluation(
            self._score(torch.tensor(self.vocab.encode(self.tokens_of(read_text(path)))))
        )

    @torch.no_grad()
    def _score(self, ids: torch.Tensor) -> dict[str, float]:
        """``loss`` (nats per token), ``perplexity`` and, for characters, ``bpc``."""
        device = for_inference(self.model)
        rows = as_streams(ids, min(self.config.data.eval_streams, max(1, ids.numel() // 2)))
        rows = rows.to(device)
        state, total, count = None, 0.0, 0
        for start, length in windows(rows, self.config.data.bptt):
            features, state = self.model(rows[:, start : start + length], state)
            target = rows[:, start + 1 : start + 1 + length]
            total += float(self.model.nll(features, target))
            count += target.numel()
        loss = total / max(1, count)
        metrics = {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}
        if self.level == "char":
            metrics["bpc"] = loss / math.log(2)
        return metrics

    # ------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self,
        prompt: str = "",
        length: int = 200,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> Iterator[str]:
        """Yield ``length`` tokens continuing ``prompt``, one at a time (for streaming).

        Characters come as they are; words come with a trailing space, and ``<eos>`` as a
        newline. ``temperature=0`` is greedy and needs no seed. Each token first checks the
        work budget in force where ``next`` is called (see :func:`rnnkit.budget.bound`).
        """
        device = for_inference(self.model)
        generator = torch.Generator(device=device)
        if seed is None:
            generator.seed()  # a fresh seed of its own; the caller's global RNG is left alone
        else:
            generator.manual_seed(seed)
        prompt_tokens = list(prompt) if self.level == "char" else prompt.split()
        if self.config.data.reverse:  # a backward LM reads the prompt last character first
            prompt_tokens.reverse()
        # Read a line break first. The model learned from states carried along the stream, and
        # from an all-zero state a short prompt is out of its experience (greedy "JULIET:" went
        # on "WXIW..."); after a line break it is where lines of its corpus begin.
        start = "\n" if self.level == "char" else EOS
        if start in self.vocab:
            prompt_tokens = [start, *prompt_tokens]
        if not prompt_tokens:  # no prompt, and a corpus without line breaks
            prompt_tokens = [self.vocab.itos[len(self.vocab.specials)]]  # its commonest token
        ids = torch.tensor([self.vocab.encode(prompt_tokens)], device=device)
        features, state = self.model(ids)
        banned = [self.vocab.stoi[PAD]]
        if self.level == "char" and UNK in self.vocab:
            banned.append(self.vocab.stoi[UNK])
        for _ in range(length):
            budget.check_deadline()
            logits = self.model.log_probs(features[:, -1])
            logits[:, banned] = float("-inf")
            token = sample_next(logits, temperature, top_k, top_p, generator)
            yield self._show(self.vocab.itos[int(token)])
            features, state = self.model(token.view(1, 1), state)

    def _show(self, token: str) -> str:
        if self.level == "char":
            return token
        return "\n" if token == EOS else token + " "

    def stream(self, text: str, options: Any = None, **overrides: Any) -> Iterator[str]:
        """The continuation of one prompt, a token at a time (see :class:`LMOptions`), within
        the deadline in force when it is called (:data:`rnnkit.budget.DEFAULT_SECONDS` from
        now if none is), however late its pieces are asked for."""
        (prompt,) = check_inputs([text])
        return self._continue(prompt, resolve_options(self, options, **overrides))

    def _continue(self, prompt: str, o: LMOptions) -> Iterator[str]:
        pieces = budget.bound(
            self.generate(prompt, o.length, o.temperature, o.top_k, o.top_p, o.seed)
        )
        if self.config.data.reverse:  # written last character first: shown in reading order
            return iter(["".join(pieces)[::-1]])
        return pieces

    @predictor
    def predict(self, prompts: list[str], options: LMOptions) -> list[dict[str, Any]]:
        """Continue each prompt: ``{"prompt": ..., "text": the continuation}`` per input.

        A backward LM (``data.reverse``) writes what comes *before* the prompt, in reading
        order (and :meth:`stream` gives it in one piece)."""
        return [{"prompt": p, "text": "".join(self._continue(p, options))} for p in prompts]

    def cost(self, options: LMOptions) -> int:
        """Tokens one prompt asks to have generated."""
        return options.length

    def joiner(self, prompt: str) -> str:
        """What goes between a prompt and its continuation when shown: generated words each
        carry their own trailing space, so a word prompt needs one of its own."""
        return " " if self.level == "word" and prompt and not prompt[-1].isspace() else ""

    def format(self, text: str, result: dict[str, Any]) -> str:
        """The prompt and its continuation in reading order (a backward LM's comes first)."""
        if self.config.data.reverse:
            return result["text"] + text
        return text + self.joiner(text) + result["text"]

    # --------------------------------------------------------------- scoring
    def char_ids(self, text: str) -> torch.Tensor:
        """The ids of ``text``'s characters ``(len(text),)``, unknown ones ``<unk>``'s."""
        if self.level != "char":
            raise ConfigError(f"a character-level {self.name} model is needed, not {self.level}")
        unk = self.vocab.stoi.get(UNK, 0)
        return torch.tensor([self.vocab.stoi.get(ch, unk) for ch in text], dtype=torch.long)

    @torch.no_grad()
    def next_log_probs(self, ids: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of every token at every place of texts ``(n, length)`` →
        ``(n, length, vocab)``, given what comes before (after, for a backward LM); places
        in reading order, on the model's device."""
        device = for_inference(self.model)
        ids = ids.to(device)
        if self.config.data.reverse:  # a backward LM reads the text last character first
            ids = ids.flip(1)
        first = torch.full((len(ids), 1), start_id(self.vocab), device=device)
        features, _ = self.model(torch.cat([first, ids[:, :-1]], 1))
        logp = self.model.log_probs(features)
        return logp.flip(1) if self.config.data.reverse else logp

    # ------------------------------------------------------------------------------ export
    def onnx_plan(self, data: bool = True) -> OnnxPlan:
        """One graph, ``model``, one step: ``tokens`` int64 ``(batch, 1)``, ``h`` (and ``c``
        for an LSTM) float32 ``(layers, batch, hidden)``, zeros to start → ``log_probs``
        float32 ``(batch, vocab)``, ``h_next`` (and ``c_next``). Sampling, banned tokens and
        the loop stay in Python. Checked over 12 steps, each side carrying its own state."""
        model, rnn, steps = self.model, self.model.encoder.rnn, 12
        lstm = isinstance(rnn, torch.nn.LSTM)
        names = ["h", "c"] if lstm else ["h"]
        samples = check_samples(
            lambda: [self.ids("dev")[:2000].tolist()],
            lambda: Samples([list(range(len(self.vocab))) * 3], "every id of the vocabulary"),
            data,
        )
        state_axes = (rnn.num_layers, "batch", rnn.hidden_size)
        inputs: dict[str, Axes] = {"tokens": ("batch", 1), **{n: state_axes for n in names}}
        outputs: dict[str, Axes] = {"log_probs": ("batch", len(self.vocab))}
        outputs |= {f"{n}_next": state_axes for n in names}

        def zeros(n: int) -> dict[str, torch.Tensor]:
            return {name: torch.zeros(rnn.num_layers, n, rnn.hidden_size) for name in names}

        def step(b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
            # no mask: the language model never packs, so its network runs as it is
            features, state = model(b["tokens"], (b["h"], b["c"]) if lstm else b["h"])
            return (model.log_probs(features[:, -1]), *(state if lstm else (state,)))

        def check(run: RunGraph) -> list[str]:
            shown = []
            for shift, size in enumerate(sorted({len(lengths) for lengths in CHECK_LENGTHS}), 1):
                rows = torch.tensor(samples.cut([steps] * size, shift))
                ours = theirs = zeros(size)
                for t in range(steps):
                    feeds = {"tokens": rows[:, t : t + 1]}
                    expected = dict(zip(outputs, step(feeds | theirs), strict=True))
                    got = run("model", feeds | ours, expected)
                    # each side carries its own state, so any drift would add up over the steps
                    ours = {n: got[f"{n}_next"] for n in names}
                    theirs = {n: expected[f"{n}_next"] for n in names}
                shown.append(f"{size} of {steps} steps")
            return shown

        example = {"tokens": torch.tensor(samples.cut([1, 1, 1])), **zeros(3)}
        graph = OnnxGraph("model", model, step, inputs, outputs, example)
        return OnnxPlan([graph], check, samples.source)
