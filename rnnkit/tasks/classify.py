"""Text classification: one label per text, e.g. a question's type (TREC) or a language.

Two models (:mod:`rnnkit.nn.classifiers`). ``bow`` is the seed's bag-of-words logistic
regression, ``log_softmax(A x + b)``, where ``x`` holds the counts (or TF-IDF weights) of the
text's word or character n-grams; ``A x`` is an ``EmbeddingBag`` sum over the n-grams a text has,
weighted per n-gram, so a batch costs one gather however large the feature vocabulary. ``neural``
is word embeddings (optionally from a word2vec/GloVe file) → a BiLSTM or BiGRU → max, mean or
attention pooling → a linear layer. Both are trained with cross-entropy and scored by accuracy
and macro-F1 (scikit-learn's).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from rnnkit import budget
from rnnkit.config import section, setting
from rnnkit.data.batching import Epoch, bucket_batches, epoch_generator, longest_first, pad
from rnnkit.data.labeled import Example, hold_out, read_trec, read_tsv
from rnnkit.data.text import resolve_data_path
from rnnkit.data.vocab import PAD, UNK, Vocab
from rnnkit.errors import ConfigError, DataError, ModelDirError
from rnnkit.export import OnnxPlan, check_samples, one_graph_plan, vocab_samples
from rnnkit.metrics import label_scores
from rnnkit.nn.classifiers import BowClassifier, ClassifyModelConfig, NeuralClassifier
from rnnkit.nn.contextual import ContextualChars, FeatureCache
from rnnkit.tasks.base import (
    Evaluation,
    TaskBase,
    Verb,
    for_inference,
    predictor,
    shard,
)
from rnnkit.train import TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class ClassifyOptions:
    """What a classification answer lists; the same defaults in the CLI, Python and HTTP."""

    top: int = setting(
        5, "list the K likeliest labels with their probabilities (0 = all)", 0, 100_000
    )


@dataclass
class ClassifyDataConfig:
    """Where the labeled texts are, how to read them and how to cut them into tokens."""

    format: Literal["tsv", "trec"] = "tsv"  # tsv: label<TAB>text; trec: COARSE:fine text
    train: str = ""  # paths: absolute, or inside the data directory
    dev: str = ""  # "" = hold out dev_fraction of the training file (fixed by split_seed)
    test: str = ""
    trec_labels: Literal["coarse", "fine"] = "coarse"  # format=trec: LOC, or LOC:city
    dev_fraction: float = setting(
        0.1, "share of each label held out when there is no dev file", 0, 1,
        low_open=True, high_open=True,
    )  # fmt: skip
    split_seed: int = 1  # the held-out split's seed (independent of train.seed)
    lowercase: bool = True
    tokenize: Literal["whitespace", "chars"] = "whitespace"  # words, or characters
    min_freq: int = setting(
        1, "rarer training n-grams are dropped (bow) / words share <unk> (neural)", 1
    )

    def validate(self) -> None:
        """Refuse a recipe without training data."""
        if not self.train:
            raise ConfigError("data.train must name a file")


@dataclass
class ClassifyConfig:
    """A classify recipe: its data, model and training."""

    task: Literal["classify"] = "classify"
    data: ClassifyDataConfig = field(default_factory=ClassifyDataConfig)
    model: ClassifyModelConfig = field(default_factory=ClassifyModelConfig)
    train: TrainConfig = section(
        TrainConfig, epochs=20, batch_size=32, lr=2e-3, clip_norm=5.0, patience=5
    )


# ----------------------------------------------------------------------------- features
def ngrams(tokens: Sequence[str], low: int, high: int, joiner: str = " ") -> list[str]:
    """Every n-gram of ``tokens`` for ``low ≤ n ≤ high``, each joined into one string."""
    out: list[str] = []
    for n in range(low, high + 1):
        if n == 1:
            out.extend(tokens)
        else:
            out.extend(joiner.join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return out


def smoothed_idf(documents: int, document_freq: torch.Tensor) -> torch.Tensor:
    """scikit-learn's smoothed idf: ``ln((1 + N) / (1 + df)) + 1``."""
    return torch.log((1.0 + documents) / (1.0 + document_freq.double())).float() + 1.0


def read_examples(d: ClassifyDataConfig, path: str | Path) -> list[Example]:
    """Labeled texts of a file in the recipe ``d``'s format."""
    found = read_trec(path, d.trec_labels) if d.format == "trec" else read_tsv(path)
    if not found:
        raise DataError("no examples in file", str(path))
    return found


def split_examples(
    d: ClassifyDataConfig, data_dir: Path | None, split: str, cache: dict[str, list[Example]]
) -> list[Example]:
    """The ``train``, ``dev`` or ``test`` examples of the recipe ``d``, read once into
    ``cache``. Without a dev file, dev is ``data.dev_fraction`` of each label of the training
    file, chosen by ``data.split_seed``, and train is the rest."""
    if split not in cache:
        if split in ("train", "dev") and not d.dev:
            path = resolve_data_path(d.train, data_dir)
            train, dev = hold_out(read_examples(d, path), d.dev_fraction, d.split_seed)
            if not dev:
                raise ConfigError(
                    f"data.dev_fraction={d.dev_fraction} holds out no example of {path}"
                )
            cache["train"], cache["dev"] = train, dev
        else:
            name = getattr(d, split)
            if not name:
                raise ConfigError(f"the recipe has no data.{split} file")
            cache[split] = read_examples(d, resolve_data_path(name, data_dir))
    return cache[split]


def text_tokens(d: ClassifyDataConfig, text: str) -> list[str]:
    """The tokens of a text: words split on whitespace, or characters (whitespace runs become
    one space), lowercased if the recipe ``d`` says so."""
    if d.lowercase:
        text = text.lower()
    if d.tokenize == "chars":
        return list(" ".join(text.split()))
    return text.split()


def text_features(config: ClassifyConfig, text: str) -> list[str]:
    """The n-grams of a text the bag-of-words model counts (repeats included)."""
    m = config.model
    joiner = "" if config.data.tokenize == "chars" else " "
    return ngrams(text_tokens(config.data, text), m.ngram_min, m.ngram_max, joiner)


def classify_vocabs(config: ClassifyConfig, train: list[Example]) -> tuple[Vocab, Vocab]:
    """The features (bow: n-grams; neural: words) and the labels of the training examples."""
    labels = Vocab.build(Counter(ex.label for ex in train), specials=[], unk=None)
    m, d = config.model, config.data
    if m.kind == "bow":
        counts = Counter(f for ex in train for f in text_features(config, ex.text))
        vocab = Vocab.build(counts, d.min_freq, m.max_features, specials=[], unk=None)
    else:
        counts = Counter(t for ex in train for t in text_tokens(d, ex.text))
        vocab = Vocab.build(counts, min_freq=d.min_freq)
    if not len(vocab):
        raise ConfigError(f"no training token occurs data.min_freq={d.min_freq} times")
    return vocab, labels


# --------------------------------------------------------------------------------- task
class ClassifyTask(TaskBase):
    """Reads labeled texts, builds a BoW or neural classifier, trains, predicts and scores."""

    name = "classify"
    Config = ClassifyConfig
    VOCABS = {"vocab.json": "vocab", "labels.json": "label_vocab"}
    Options = ClassifyOptions
    cpu_bf16_pays = False  # 0.9-1.0x in bf16 (bench/precision.py)
    metric_goals = {"accuracy": "max", "macro_f1": "max"}
    verb = Verb(
        "classify", "label texts with a classification model", "texts", label="Text",
        hint="Enter classifies.", button="Classify",
    )  # fmt: skip
    # What runs the network in predict: None, PyTorch; an rnnkit.backends.OnnxRunner when
    # loaded with backend onnx (its graph "model", as rnnkit.export builds it).
    runner: Any = None

    def __init__(
        self,
        config: ClassifyConfig,
        vocabs: tuple[Vocab, ...],
        data_dir: Path | None = None,
        contextual: ContextualChars | None = None,
    ):
        self.config = config
        self.data_dir = data_dir
        self.bow = config.model.kind == "bow"
        self._examples: dict[str, list[Example]] = {}
        self._encoded: dict[str, tuple[list[Any], torch.Tensor]] = {}
        self.pretrained_found: int | None = None
        self.pretrained_missing: list[str] = []
        self.vocab, self.label_vocab = vocabs
        want = [] if self.bow else [PAD, UNK]
        if self.vocab.specials != want or self.label_vocab.specials or not len(self.label_vocab):
            raise ModelDirError("vocab.json or labels.json does not fit the config")
        labels = len(self.label_vocab)
        self._context = FeatureCache()
        self.model: BowClassifier | NeuralClassifier
        self.contextual = None if self.bow else contextual  # the model's character LMs
        if self.bow:
            self.model = BowClassifier(len(self.vocab), labels, config.model)
        else:
            self.model = NeuralClassifier(len(self.vocab), labels, config.model, contextual)

    @classmethod
    def build(cls, config: ClassifyConfig, data_dir: Path | None = None) -> ClassifyTask:
        """A new classifier on the training examples' features and labels. Every split is read
        now: a malformed dev or test file stops training before it starts."""
        d, m = config.data, config.model
        found: dict[str, list[Example]] = {}
        for split in ("train", "dev", "test"):
            if split != "test" or d.test:
                split_examples(d, data_dir, split, found)
        if not d.dev:
            held, kept = len(found["dev"]), len(found["train"])
            logger.info(
                f"dev: {held} of {held + kept} training examples held out "
                f"(data.dev_fraction={d.dev_fraction}, data.split_seed={d.split_seed})"
            )
        contextual = None
        if m.kind == "neural" and m.contextual:
            if d.tokenize != "whitespace":
                raise ConfigError("model.contextual needs data.tokenize=whitespace (words)")
            contextual = ContextualChars.load(m.contextual, m.contextual_tune, data_dir)
        task = cls(config, classify_vocabs(config, found["train"]), data_dir, contextual)
        task._examples = found
        if isinstance(task.model, BowClassifier) and m.features == "tfidf":
            task.model.idf.copy_(task._idf())
        if isinstance(task.model, NeuralClassifier) and m.pretrained:
            vectors = task.load_vectors(task.model.embed, task.vocab, m.pretrained)
            task.pretrained_found, task.pretrained_missing = vectors
        return task

    # ------------------------------------------------------------------ data
    def read(self, path: str | Path) -> list[Example]:
        """Labeled texts of a file in the recipe's format."""
        return read_examples(self.config.data, path)

    def examples(self, split: str) -> list[Example]:
        """The ``train``, ``dev`` or ``test`` examples of the recipe (see
        :func:`split_examples`)."""
        return split_examples(self.config.data, self.data_dir, split, self._examples)

    def tokens(self, text: str) -> list[str]:
        """The tokens of a text (see :func:`text_tokens`)."""
        return text_tokens(self.config.data, text)

    def features(self, text: str) -> list[str]:
        """The n-grams of a text the bag-of-words model counts (repeats included)."""
        return text_features(self.config, text)

    def _idf(self) -> torch.Tensor:
        """Smoothed idf of every feature over the training texts ``(features,)``."""
        train = self.examples("train")
        df = torch.zeros(len(self.vocab), dtype=torch.long)
        for ex in train:
            ids = {self.vocab.stoi[f] for f in self.features(ex.text) if f in self.vocab.stoi}
            df[list(ids)] += 1
        return smoothed_idf(len(train), df)

    def encode(self, text: str) -> Any:
        """One text as the model reads it: for bow a pair of tensors (distinct n-gram ids,
        their counts), for neural a list of word ids (``[<unk>]`` for a text with no words),
        paired with the words as written when the model has contextual features."""
        if self.bow:
            stoi = self.vocab.stoi
            counts = Counter(stoi[f] for f in self.features(text) if f in stoi)
            return (
                torch.tensor(list(counts), dtype=torch.long),
                torch.tensor(list(counts.values()), dtype=torch.float32),
            )
        ids = self.vocab.encode(self.tokens(text)) or [self.vocab.stoi[UNK]]
        if self.contextual is not None:  # the LMs read the words as written
            return ids, tuple(text.split()) or ("",)
        return ids

    def encoded(self, split: str) -> tuple[list[Any], torch.Tensor]:
        """Every example of a split encoded once, and the label ids ``(examples,)``; labels
        the training data never showed get id -1 (they are only ever scored, not learned)."""
        if split not in self._encoded:
            examples = self.examples(split)
            stoi = self.label_vocab.stoi
            labels = torch.tensor([stoi.get(ex.label, -1) for ex in examples], dtype=torch.long)
            self._encoded[split] = ([self.encode(ex.text) for ex in examples], labels)
        return self._encoded[split]

    def collate(self, encoded: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Batch encoded texts; see :meth:`BowClassifier.feature_weights` and
        :meth:`NeuralClassifier.logits` for the tensors."""
        if self.bow:
            sizes = torch.tensor([len(ids) for ids, _ in encoded], dtype=torch.long)
            return {
                "features": torch.cat([ids for ids, _ in encoded]),
                "counts": torch.cat([counts for _, counts in encoded]),
                "offsets": torch.cumsum(sizes, 0) - sizes,
            }
        if self.contextual is None:
            words, mask = pad(encoded)
            return {"words": words, "mask": mask}
        words, mask = pad([ids for ids, _ in encoded])
        batch = {"words": words, "mask": mask}
        return batch | self._context.batch(self.contextual, [t for _, t in encoded])

    def length(self, encoded: Any) -> int:
        """Tokens of an encoded text (0 for a bag of words, which has no order)."""
        if self.bow:
            return 0
        return len(encoded[0] if self.contextual is not None else encoded)

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Epoch:
        """Shuffled batches of training texts with their ``labels`` ``(batch,)`` (see
        :meth:`collate`); length-bucketed for the neural model."""
        encoded, labels = self.encoded("train")
        generator = epoch_generator(self.config.train.seed, epoch)
        # Similar lengths share a batch for the recurrent model; a bag has no length.
        lengths = [self.length(item) for item in encoded]
        order = bucket_batches(lengths, self.config.train.batch_size, True, generator)

        def make(rows: list[int]) -> dict[str, torch.Tensor]:
            batch = self.collate([encoded[i] for i in rows])
            batch["labels"] = labels[rows]
            return batch

        return Epoch(shard(order, rank, world_size), make)

    # ------------------------------------------------------------ prediction
    @torch.no_grad()
    def probabilities(self, encoded: Sequence[Any], batch_size: int = 256) -> torch.Tensor:
        """Label probabilities ``(texts, labels)`` of encoded texts (see :meth:`encode`)."""
        device = for_inference(self.model)
        out = torch.empty(len(encoded), len(self.label_vocab))
        # Every text counts as length 1 or more here: an empty one still gets probabilities.
        lengths = [max(1, self.length(e)) for e in encoded]
        widths = None  # positions per word: 1, or the characters contextual LMs read
        if not self.bow and self.contextual is not None:
            widths = [1 + max(len(w) for w in words) for _, words in encoded]
        for rows in longest_first(lengths, batch_size, budget.PREDICT_TOKENS, widths):
            budget.check_deadline()
            items = [encoded[i] for i in rows]
            batch = self.collate(items)
            out[rows] = self.class_probabilities(
                {k: v.to(device) for k, v in batch.items()}, items
            ).cpu()
        return out

    def class_probabilities(
        self, batch: dict[str, torch.Tensor], encoded: Sequence[Any]
    ) -> torch.Tensor:
        """The predict path's call of the network: label probabilities ``(batch, labels)`` of
        a :meth:`collate` batch of ``encoded`` texts, by PyTorch or by :attr:`runner`'s graph
        (which computes contextual features itself, from the LMs' inputs)."""
        if self.runner is None:
            return torch.softmax(self.model.logits(batch).float(), dim=-1)
        if not self.bow and self.contextual is not None:
            batch = batch | self.contextual.inputs([words for _, words in encoded])
        return self.runner.run("model", batch)["probabilities"]

    @predictor
    def predict(self, texts: list[str], options: ClassifyOptions) -> list[dict[str, Any]]:
        """Classify raw texts (an empty text too: it gets the label of an empty bag).

        Returns one dict per input: ``label``, the likeliest label, and ``probabilities``,
        ``{label: probability}`` for the ``top`` likeliest labels (all with 0), likeliest
        first.
        """
        top = options.top or len(self.label_vocab)
        probs = self.probabilities([self.encode(t) for t in texts])
        values, order = torch.sort(probs, dim=1, descending=True, stable=True)
        itos = self.label_vocab.itos
        results = []
        for row_values, row_order in zip(
            values[:, :top].tolist(), order[:, :top].tolist(), strict=True
        ):
            ranked = {itos[j]: p for p, j in zip(row_values, row_order, strict=True)}
            results.append({"label": itos[row_order[0]], "probabilities": ranked})
        return results

    def labels(self) -> list[str]:
        """The labels the model picks from."""
        return self.label_vocab.itos[len(self.label_vocab.specials) :]

    def format(self, text: str, result: dict[str, Any]) -> str:
        """The label and the text, then one line per listed label and its probability."""
        width = max(len(label) for label in result["probabilities"])
        lines = [f"{result['label']}\t{text}"]
        lines += [f"  {label:<{width}}  {p:.4f}" for label, p in result["probabilities"].items()]
        return "\n".join(lines)

    # ------------------------------------------------------------ evaluation
    def evaluate(self, split: str = "dev") -> Evaluation:
        """Scores on a split of the recipe (see :meth:`_score`)."""
        encoded, _ = self.encoded(split)
        return self._score(encoded, [ex.label for ex in self.examples(split)])

    def evaluate_file(self, path: str | Path) -> Evaluation:
        """Scores on a file in the recipe's format (see :meth:`_score`)."""
        examples = self.read(path)
        return self._score([self.encode(ex.text) for ex in examples], [ex.label for ex in examples])

    def _score(self, encoded: Sequence[Any], gold: list[str]) -> Evaluation:
        """Accuracy and macro-F1 (fractions) of the model on encoded texts of labels ``gold``,
        with per-label precision, recall and F1 and a confusion table in the report, and the
        confusion matrix.

        Macro-F1 is scikit-learn's: the unweighted mean F1 over every label that occurs in the
        gold labels or the predictions.
        """
        best = self.probabilities(encoded).argmax(dim=1).tolist()
        predicted = [self.label_vocab.itos[i] for i in best]
        return Evaluation(*label_scores(gold, predicted))

    # ------------------------------------------------------------------------------ export
    def onnx_plan(self, data: bool = True) -> OnnxPlan:
        """One graph, ``model`` → ``probabilities`` float32 ``(batch, labels)``. It reads what
        :meth:`collate` makes: neural, ``words`` int64 and ``mask`` bool ``(batch, time)``
        (with contextual features also the LMs' inputs, :meth:`ContextualChars.inputs`, the LMs
        running in the graph); bag of n-grams, ``features`` int64 ``(entries,)``, ``counts``
        float32 ``(entries,)`` and ``offsets`` int64 ``(batch,)``."""
        model: Any = self.model  # a BowClassifier or a NeuralClassifier, by the recipe
        joiner = "" if self.config.data.tokenize == "chars" else " "
        itos = self.vocab.itos
        if self.bow and not joiner:  # character n-grams: only single characters join back
            itos = [t for t in itos if len(t) == 1]
        samples = check_samples(
            lambda: [self.tokens(ex.text) for ex in self.examples("dev")],
            lambda: vocab_samples(itos, 0 if self.bow else 2, ["zqxjvorth"]),
            data,
        )

        def batch(rows: list[list[str]]) -> dict[str, torch.Tensor]:
            texts = [joiner.join(row) for row in rows]
            found = self.collate([self.encode(t) for t in texts])
            if self.bow or model.contextual is None:
                return found
            return found | model.contextual.inputs([t.split() or [""] for t in texts])

        def probabilities(b: dict[str, torch.Tensor]) -> torch.Tensor:
            return torch.softmax(model.logits(b).float(), -1)

        outputs = {"probabilities": ("batch", len(self.label_vocab))}
        if self.bow:  # the check compares its dense sums with EmbeddingBag's
            inputs: dict[str, Any] = {"features": ("entries",), "counts": ("entries",)}
            inputs["offsets"] = ("batch",)
            forward = model.dense_probabilities
        else:
            inputs = {"words": ("batch", "time"), "mask": ("batch", "time")}
            inputs |= model.contextual.onnx_axes() if model.contextual else {}
            forward = probabilities
        return one_graph_plan(model, forward, inputs, outputs, samples, batch, (), probabilities)


__all__ = ["ClassifyConfig", "ClassifyTask", "ngrams", "smoothed_idf"]
