"""Sequence tagging: one tag per token, for part-of-speech tags or named entities.

The model (:mod:`rnnkit.nn.tagger`) is word embeddings (optionally from a word2vec/GloVe file)
concatenated with character-level features of each word, then a BiLSTM, then per-token scores
read by a softmax or by a linear-chain CRF. Entity tags may be learned in another scheme than the
files use (BIOES from IOB2 files, say); predictions come back in the files' scheme, and entity
scores are seqeval's strict IOB2 precision, recall and F1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch

from rnnkit import budget
from rnnkit.config import section, setting
from rnnkit.data.batching import Epoch, bucket_batches, epoch_generator, longest_first, pad
from rnnkit.data.tagged import (
    Scheme,
    Sentence,
    check_tag,
    convert,
    read_columns,
    read_conllu,
    spans,
)
from rnnkit.data.text import resolve_data_path
from rnnkit.data.vocab import PAD, UNK, Vocab
from rnnkit.errors import ConfigError, DataError, ModelDirError
from rnnkit.export import OnnxPlan, check_samples, one_graph_plan, vocab_samples
from rnnkit.metrics import confusion_table, entity_scores, token_accuracy
from rnnkit.nn.contextual import ContextualChars, FeatureCache
from rnnkit.nn.crf import scripted_viterbi
from rnnkit.nn.tagger import Tagger, TagModelConfig
from rnnkit.tasks.base import (
    Evaluation,
    NoOptions,
    TaskBase,
    Verb,
    for_inference,
    predictor,
    shard,
)
from rnnkit.train import TrainConfig

_SEPARATORS = {"whitespace": None, "tab": "\t", "space": " "}


@dataclass
class TagDataConfig:
    """Where the tagged sentences are and how to read them."""

    format: Literal["conllu", "columns"] = "conllu"
    train: str = ""  # paths: absolute, or inside the data directory
    dev: str = ""
    test: str = ""
    conllu_tags: Literal["upos", "xpos"] = "upos"  # format=conllu: which tag column
    token_column: int = 0  # format=columns: numbered from 0; negative counts from the end
    tag_column: int = -1
    separator: Literal["whitespace", "tab", "space"] = "whitespace"
    comment: str = "#"  # format=columns: lines starting with this are skipped ("" = none)
    scheme: Literal["none", "IOB1", "IOB2", "BIOES"] = "none"  # none: plain tags, e.g. POS
    lowercase: bool = True  # word embeddings see lowercased words (characters keep the case)
    min_freq: int = setting(1, "rarer training words share the <unk> embedding", 1)
    max_word_length: int = setting(30, "characters per word read by the character features", 1)

    def validate(self) -> None:
        """Refuse a recipe without training and dev files."""
        if not self.train or not self.dev:
            raise ConfigError("data.train and data.dev must name files")


@dataclass
class TagConfig:
    """A tag recipe: its data, model and training."""

    task: Literal["tag"] = "tag"
    data: TagDataConfig = field(default_factory=TagDataConfig)
    model: TagModelConfig = field(default_factory=TagModelConfig)
    train: TrainConfig = section(
        TrainConfig, epochs=30, batch_size=32, lr=2e-3, clip_norm=5.0, patience=5
    )


def schemes(config: TagConfig) -> tuple[Scheme | None, Scheme | None]:
    """The entity scheme of the files and the one the model learns (None for plain tags)."""
    file_scheme = None if config.data.scheme == "none" else config.data.scheme
    if file_scheme and config.model.tag_scheme != "same":
        return file_scheme, config.model.tag_scheme
    return file_scheme, file_scheme


def read_sentences(d: TagDataConfig, path: str | Path) -> list[Sentence]:
    """Tagged sentences of a file in the recipe ``d``'s format, tags in the files' scheme."""
    scheme = None if d.scheme == "none" else d.scheme
    if d.format == "conllu":
        found = read_conllu(path, d.conllu_tags)
        if scheme:  # entity tags in a CoNLL-U column must follow the scheme too
            for sentence in found:
                for offset, tag in enumerate(sentence.tags):
                    check_tag(tag, scheme, path, sentence.line + offset)
    else:
        separator, comment = _SEPARATORS[d.separator], d.comment or None
        found = read_columns(path, d.token_column, d.tag_column, separator, comment, scheme)
    if not found:
        raise DataError("no sentences in file", str(path))
    return found


def model_tags(config: TagConfig, sentence: Sentence) -> list[str]:
    """A sentence's tags in the scheme the model learns."""
    file_scheme, model_scheme = schemes(config)
    if file_scheme and model_scheme and model_scheme != file_scheme:
        return convert(sentence.tags, file_scheme, model_scheme)
    return sentence.tags


def word_form(config: TagConfig, token: str) -> str:
    """What the word embeddings see of a token."""
    return token.lower() if config.data.lowercase else token


def tag_vocabs(config: TagConfig, train: list[Sentence]) -> tuple[Vocab, Vocab, Vocab]:
    """Words, characters and tags of the training sentences (every tag the model's scheme can
    form for the entity types seen, seen or not)."""
    words = Counter(word_form(config, t) for s in train for t in s.tokens)
    chars = Counter(ch for s in train for t in s.tokens for ch in t)
    tags = Counter(tag for s in train for tag in model_tags(config, s))
    _, model_scheme = schemes(config)
    if model_scheme:
        kinds = {t.split("-", 1)[1] for t in tags if t != "O"}
        prefixes = "BIES" if model_scheme == "BIOES" else "BI"
        tags.update({f"{p}-{k}": 0 for p in prefixes for k in kinds} | {"O": 0})
    return (
        Vocab.build(words, min_freq=config.data.min_freq),
        Vocab.build(chars),
        Vocab.build(tags, min_freq=0, specials=[], unk=None),
    )


class TagTask(TaskBase):
    """Reads tagged sentences, builds the tagger, trains via the Trainer, tags and evaluates."""

    name = "tag"
    Config = TagConfig
    VOCABS = {"vocab.json": "vocab", "chars.json": "char_vocab", "tags.json": "tag_vocab"}
    Options = NoOptions
    cpu_bf16_pays = False  # 0.9x in bf16: the CRF and small character LSTMs gain nothing
    metric_goals = {"accuracy": "max", "precision": "max", "recall": "max", "f1": "max"}
    verb = Verb(
        "tag", "tag sentences with a tagging model (POS, NER)", "sentences (whitespace tokens)",
        label="Sentence", hint="Words are split on spaces. Enter tags.", button="Tag",
        output_format="conll", file_flag="conll",
        file_help="a file in the model's training format (tags ignored)",
    )  # fmt: skip
    # Character ids of word forms, kept for speed; cleared when full, so that a server that
    # meets endless new forms holds a bounded amount.
    CHAR_CACHE_SIZE = 100_000
    # What runs the network in predict: None, PyTorch; an rnnkit.backends.OnnxRunner when
    # loaded with backend onnx (its graph "model", as rnnkit.export builds it).
    runner: Any = None

    def __init__(
        self,
        config: TagConfig,
        vocabs: tuple[Vocab, ...],
        data_dir: Path | None = None,
        contextual: ContextualChars | None = None,
    ):
        self.config = config
        self.data_dir = data_dir
        self.file_scheme, self.model_scheme = schemes(config)
        self._sentences: dict[str, list[Sentence]] = {}
        self._char_cache: dict[str, list[int]] = {}
        self._context = FeatureCache()
        self.vocab, self.char_vocab, self.tag_vocab = vocabs
        if self.vocab.specials != [PAD, UNK]:
            raise ModelDirError("vocab.json is not a tagger's word vocabulary")
        self.model = Tagger(
            len(self.vocab), len(self.char_vocab), self.tag_vocab.itos, config.model,
            self.model_scheme, contextual,
        )  # fmt: skip
        self.pretrained_found: int | None = None

    @classmethod
    def build(cls, config: TagConfig, data_dir: Path | None = None) -> TagTask:
        """A new tagger on the training sentences' words, characters and tags. Every split is
        read now: a malformed dev or test file stops training before it starts."""
        d, m = config.data, config.model
        found = {
            split: read_sentences(d, resolve_data_path(getattr(d, split), data_dir))
            for split in ("train", "dev", "test")
            if getattr(d, split)
        }
        contextual = None
        if m.contextual:
            contextual = ContextualChars.load(m.contextual, m.contextual_tune, data_dir)
        task = cls(config, tag_vocabs(config, found["train"]), data_dir, contextual)
        task._sentences = found
        if m.pretrained:
            task.pretrained_found, _ = task.load_vectors(task.model.embed, task.vocab, m.pretrained)
        return task

    @property
    def default_metric(self) -> str:
        """Entity F1 for entity tags, token accuracy for plain ones."""
        return "f1" if self.file_scheme else "accuracy"

    @property
    def metric_kinds(self) -> set[str]:
        """The entity types that per-type metrics (``f1_PER``) may name: none for plain tags."""
        if not self.file_scheme:
            return set()
        return {tag.split("-", 1)[1] for tag in self.tag_vocab.itos if "-" in tag}

    # ------------------------------------------------------------------ data
    def read(self, path: str | Path) -> list[Sentence]:
        """Tagged sentences of a file in the recipe's format, tags in the files' scheme."""
        return read_sentences(self.config.data, path)

    def read_tokens(self, path: str | Path) -> list[Sentence]:
        """Sentences of a file in the recipe's format whose tags may be missing (``_``, or no
        tag column): for tagging new text. The tags of the result are not to be used."""
        d = self.config.data
        if d.format == "columns":
            # The token column stands in for the tag column, which such a file may lack.
            column = d.token_column
            found = read_columns(path, column, column, _SEPARATORS[d.separator], d.comment or None)
        else:
            found = read_conllu(path, d.conllu_tags, require_tags=False)
        if not found:
            raise DataError("no sentences in file", str(path))
        return found

    def sentences(self, split: str) -> list[Sentence]:
        """The ``train``, ``dev`` or ``test`` sentences of the recipe, read once."""
        if split not in self._sentences:
            name = getattr(self.config.data, split)
            if not name:
                raise ConfigError(f"the recipe has no data.{split} file")
            self._sentences[split] = self.read(resolve_data_path(name, self.data_dir))
        return self._sentences[split]

    def _chars(self, form: str) -> list[int]:
        ids = self._char_cache.get(form)
        if ids is None:
            ids = self.char_vocab.encode(form[: self.config.data.max_word_length])
            if len(self._char_cache) >= self.CHAR_CACHE_SIZE:
                self._char_cache.clear()
            self._char_cache[form] = ids
        return ids

    def make_batch(
        self, sentences: Sequence[Sentence | Sequence[str]], with_tags: bool = True
    ) -> dict[str, torch.Tensor]:
        """Pad sentences (or bare token lists) into tensors; see :meth:`Tagger.emissions`."""
        token_lists = [s.tokens if isinstance(s, Sentence) else list(s) for s in sentences]
        seen = [[word_form(self.config, t) for t in tokens] for tokens in token_lists]
        words, mask = pad([self.vocab.encode(s) for s in seen])
        batch = {"words": words, "mask": mask}
        if self.model.chars is not None:
            form_ids: dict[str, int] = {}
            forms = [[form_ids.setdefault(t, len(form_ids)) for t in ts] for ts in token_lists]
            batch["forms"], _ = pad(forms)
            chars, char_mask = pad([self._chars(f) or [1] for f in form_ids])
            batch["chars"], batch["char_lengths"] = chars, char_mask.sum(1)
        if self.model.contextual is not None:
            batch.update(self._context.batch(self.model.contextual, token_lists))
        if with_tags:
            gold = [cast(Sentence, s) for s in sentences]  # with_tags: sentences, not tokens
            ids = [self.tag_vocab.encode(model_tags(self.config, s)) for s in gold]
            batch["tags"], _ = pad(ids)
        return batch

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Epoch:
        """Shuffled, length-bucketed batches of training sentences (see :meth:`make_batch`)."""
        train = self.sentences("train")
        generator = epoch_generator(self.config.train.seed, epoch)
        lengths = [len(s.tokens) for s in train]
        order = bucket_batches(lengths, self.config.train.batch_size, True, generator)
        return Epoch(
            shard(order, rank, world_size), lambda rows: self.make_batch([train[i] for i in rows])
        )

    # ------------------------------------------------------------ prediction
    @torch.no_grad()
    def tag(self, token_lists: Sequence[Sequence[str]], batch_size: int = 256) -> list[list[str]]:
        """Tags (in the files' scheme) for each token list; an empty list gets no tags."""
        device = for_inference(self.model)
        out: list[list[str]] = [[] for _ in token_lists]
        lengths, widths = [len(t) for t in token_lists], self._char_widths(token_lists)
        for rows in longest_first(lengths, batch_size, budget.PREDICT_TOKENS, widths):
            budget.check_deadline()
            lists = [token_lists[i] for i in rows]
            batch = self.make_batch(lists, with_tags=False)
            best = self.decode({k: v.to(device) for k, v in batch.items()}, lists).cpu()
            for row, i in enumerate(rows):
                tags = [self.tag_vocab.itos[j] for j in best[row, : len(token_lists[i])]]
                if self.file_scheme and self.model_scheme and self.model_scheme != self.file_scheme:
                    tags = convert(tags, self.model_scheme, self.file_scheme)
                out[i] = tags
        return out

    def _char_widths(self, token_lists: Sequence[Sequence[str]]) -> list[int] | None:
        """For the batch budget, the positions each word takes where contextual LMs read the
        sentence's characters: its longest word and a space. None otherwise: character
        features read at most ``data.max_word_length`` per word, a constant factor."""
        if self.model.contextual is None:
            return None
        return [1 + max((len(t) for t in tokens), default=0) for tokens in token_lists]

    def decode(
        self, batch: dict[str, torch.Tensor], token_lists: Sequence[Sequence[str]]
    ) -> torch.Tensor:
        """The predict path's call of the network: the best tag ids ``(batch, time)`` (0 on
        padding) of a :meth:`make_batch` batch of ``token_lists``, by PyTorch or by
        :attr:`runner`'s graph (which computes contextual features itself, from the LMs'
        inputs)."""
        if self.runner is None:
            return self.model.decode(batch)
        if self.model.contextual is not None:
            batch = batch | self.model.contextual.inputs(token_lists)
        return self.runner.run("model", batch)["tags"]

    @predictor
    def predict(self, texts: list[str], options: NoOptions) -> list[dict[str, Any]]:
        """Tag raw sentences, tokens split on whitespace (see :meth:`predict_tokens`)."""
        return self.predict_tokens([t.split() for t in texts])

    def predict_tokens(self, token_lists: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
        """Tag token lists. Returns one dict per input: ``tokens``, ``tags``, and for entity
        models ``spans`` — ``{"start", "end" (exclusive), "type", "text"}`` over token
        positions."""
        token_lists = [list(t) for t in token_lists]
        results = []
        for tokens, tags in zip(token_lists, self.tag(token_lists), strict=True):
            result: dict[str, Any] = {"tokens": tokens, "tags": tags}
            if self.file_scheme:
                result["spans"] = [
                    {"start": a, "end": b, "type": k, "text": " ".join(tokens[a:b])}
                    for a, b, k in spans(tags, self.file_scheme)
                ]
            results.append(result)
        return results

    def labels(self) -> list[str]:
        """The tags the model picks from (in its own scheme)."""
        return self.tag_vocab.itos[len(self.tag_vocab.specials) :]

    def format(self, text: str, result: dict[str, Any]) -> str:
        """CoNLL-style columns (index, token, tag) and a blank line after the sentence."""
        pairs = zip(result["tokens"], result["tags"], strict=True)
        return "".join(f"{i}\t{token}\t{tag}\n" for i, (token, tag) in enumerate(pairs, 1))

    # ------------------------------------------------------------ evaluation
    def evaluate(self, split: str = "dev") -> Evaluation:
        """Scores on a split of the recipe (see :meth:`_score`)."""
        return self._score(self.sentences(split))

    def evaluate_file(self, path: str | Path) -> Evaluation:
        """Scores on a file in the recipe's format (see :meth:`_score`)."""
        return self._score(self.read(path))

    def _score(self, sentences: Sequence[Sentence]) -> Evaluation:
        """Token accuracy; for entity tags also seqeval's strict micro P/R/F1 and per type; the
        report holds the tables ``rnnkit eval`` prints."""
        predicted = self.tag([s.tokens for s in sentences])
        gold = [s.tags for s in sentences]
        metrics = {"accuracy": token_accuracy(gold, predicted)}
        tables = []
        if self.file_scheme:
            entity_metrics, table = entity_scores(gold, predicted, self.file_scheme)
            metrics.update(entity_metrics)
            tables.append(table)
        tables.append(confusion_table(gold, predicted))
        return Evaluation(metrics, "\n".join(tables))

    # ------------------------------------------------------------------------------ export
    def onnx_plan(self, data: bool = True) -> OnnxPlan:
        """One graph, ``model``: the tensors of :meth:`make_batch` — ``words``, ``mask``
        ``(batch, time)``; with character features also ``forms`` ``(batch, time)``, ``chars``
        ``(forms, letters)`` and ``char_lengths`` ``(forms,)``; with contextual features the
        LMs' inputs (:meth:`ContextualChars.inputs`), the LMs running in the graph — → ``tags``
        int64 ``(batch, time)`` (0 on padding) and ``emissions`` float32 ``(batch, time,
        tags)``. A CRF head runs Viterbi inside the graph; a softmax head takes the argmax."""
        model, text = self.model, ("batch", "time")
        inputs: dict[str, Any] = {"words": text, "mask": text}
        if model.chars is not None:
            inputs |= {"forms": text, "chars": ("forms", "letters"), "char_lengths": ("forms",)}
        if model.contextual is not None:
            inputs |= model.contextual.onnx_axes()
        samples = check_samples(
            lambda: [s.tokens for s in self.sentences("dev")],
            lambda: vocab_samples(self.vocab.itos, 2, ["Zqxjvorth", "Kwambe", "ÉTÉ"]),
            data,
        )

        def batch(rows: list[list[str]]) -> dict[str, torch.Tensor]:
            found = self.make_batch(rows, with_tags=False)
            return found | (model.contextual.inputs(rows) if model.contextual else {})

        def forward(b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            emissions, mask = model.emissions(b), b["mask"]
            if model.crf is None:
                return emissions.argmax(-1).masked_fill(~mask, 0), emissions
            # a loop of fixed size in the graph for sentences of any length (see viterbi)
            tags = scripted_viterbi()(emissions, mask, *model.crf._scores())
            return tags.masked_fill(~mask, 0), emissions

        def reference(b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            return model.decode(b), model.emissions(b)  # CRF.decode, not the graph's Viterbi

        outputs = {"tags": text, "emissions": (*text, len(self.tag_vocab))}
        return one_graph_plan(model, forward, inputs, outputs, samples, batch, ("tags",), reference)


__all__ = ["TagConfig", "TagTask"]
