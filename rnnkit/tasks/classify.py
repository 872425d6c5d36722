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
from torch import nn

from rnnkit import budget
from rnnkit.config import section, setting
from rnnkit.data.batching import Epoch, bucket_batches, epoch_generator, longest_first, pad
from rnnkit.data.labeled import Example, hold_out, read_trec, read_tsv
from rnnkit.data.text import resolve_data_path
from rnnkit.data.vectors import load_pretrained
from rnnkit.data.vocab import PAD, UNK, Vocab
from rnnkit.errors import ConfigError, DataError, ModelDirError
from rnnkit.metrics import label_scores
from rnnkit.nn.classifiers import BowClassifier, ClassifyModelConfig, NeuralClassifier
from rnnkit.nn.contextual import ContextualChars, FeatureCache
from rnnkit.tasks import storage
from rnnkit.tasks.base import check_inputs, for_inference, resolve_options, shard
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


# --------------------------------------------------------------------------------- task
class ClassifyTask:
    """Reads labeled texts, builds a BoW or neural classifier, trains, predicts and scores."""

    name = "classify"
    Config = ClassifyConfig
    VOCABS = {"vocab.json": "vocab", "labels.json": "label_vocab"}
    Options = ClassifyOptions
    cpu_bf16_pays = False  # 0.9-1.0x in bf16 (bench/precision.py)
    metric_goals = {"accuracy": "max", "macro_f1": "max"}
    # What runs the network in predict: None, PyTorch; an rnnkit.backends.OnnxRunner when
    # loaded with backend onnx (its graph "model", as rnnkit.export builds it).
    runner: Any = None

    def __init__(
        self,
        config: ClassifyConfig,
        data_dir: Path | None = None,
        vocabs: tuple[Vocab, Vocab] | None = None,
        contextual: ContextualChars | None = None,
    ):
        self.config = config
        self.data_dir = data_dir
        self.bow = config.model.kind == "bow"
        self._examples: dict[str, list[Example]] = {}
        self._encoded: dict[str, tuple[list[Any], torch.Tensor]] = {}
        self.report = ""  # the text report of the last evaluation (tables)
        self.confusion: tuple[list[str], list[list[int]]] | None = None  # of the last one
        self.pretrained_found: int | None = None
        self.pretrained_missing: list[str] = []
        if vocabs is None:
            # Read every split now: a malformed dev or test file should stop training before
            # it starts, not after the first epoch.
            for split in ("train", "dev", "test"):
                if split != "test" or config.data.test:
                    self.examples(split)
            if not config.data.dev:
                held, kept = len(self.examples("dev")), len(self.examples("train"))
                logger.info(
                    f"dev: {held} of {held + kept} training examples held out "
                    f"(data.dev_fraction={config.data.dev_fraction}, "
                    f"data.split_seed={config.data.split_seed})"
                )
            self.vocab, self.label_vocab = self._build_vocabs()
        else:
            self.vocab, self.label_vocab = vocabs
            want = [] if self.bow else [PAD, UNK]
            if self.vocab.specials != want or self.label_vocab.specials or not len(vocabs[1]):
                raise ModelDirError("vocab.json or labels.json does not fit the config")
        labels = len(self.label_vocab)
        if self.bow:
            self.model: nn.Module = BowClassifier(len(self.vocab), labels, config.model)
            if vocabs is None and config.model.features == "tfidf":
                self.model.idf.copy_(self._idf())
        else:
            m = config.model
            if m.contextual and config.data.tokenize != "whitespace":
                raise ConfigError("model.contextual needs data.tokenize=whitespace (words)")
            if contextual is None and m.contextual:
                contextual = ContextualChars.load(m.contextual, m.contextual_tune, data_dir)
            self._context = FeatureCache()
            self.model = NeuralClassifier(len(self.vocab), labels, config.model, contextual)
            if vocabs is None and m.pretrained:
                self.pretrained_found, self.pretrained_missing = load_pretrained(
                    self.model.embed.weight, self.vocab.itos, m.pretrained, data_dir,
                    len(self.vocab.specials), m.freeze,
                )  # fmt: skip

    @property
    def default_metric(self) -> str:
        return "accuracy"

    # ------------------------------------------------------------------ data
    def read(self, path: str | Path) -> list[Example]:
        """Labeled texts of a file in the recipe's format."""
        d = self.config.data
        found = read_trec(path, d.trec_labels) if d.format == "trec" else read_tsv(path)
        if not found:
            raise DataError("no examples in file", str(path))
        return found

    def examples(self, split: str) -> list[Example]:
        """The ``train``, ``dev`` or ``test`` examples of the recipe, read once.

        Without a dev file, dev is ``data.dev_fraction`` of each label of the training file,
        chosen by ``data.split_seed``, and train is the rest.
        """
        if split not in self._examples:
            d = self.config.data
            if split in ("train", "dev") and not d.dev:
                path = resolve_data_path(d.train, self.data_dir)
                train, dev = hold_out(self.read(path), d.dev_fraction, d.split_seed)
                if not dev:
                    raise ConfigError(
                        f"data.dev_fraction={d.dev_fraction} holds out no example of {path}"
                    )
                self._examples["train"], self._examples["dev"] = train, dev
            else:
                name = getattr(d, split)
                if not name:
                    raise ConfigError(f"the recipe has no data.{split} file")
                self._examples[split] = self.read(resolve_data_path(name, self.data_dir))
        return self._examples[split]

    def tokens(self, text: str) -> list[str]:
        """The tokens of a text: words split on whitespace, or characters (whitespace runs
        become one space), lowercased if the recipe says so."""
        d = self.config.data
        if d.lowercase:
            text = text.lower()
        if d.tokenize == "chars":
            return list(" ".join(text.split()))
        return text.split()

    def features(self, text: str) -> list[str]:
        """The n-grams of a text the bag-of-words model counts (repeats included)."""
        m = self.config.model
        joiner = "" if self.config.data.tokenize == "chars" else " "
        return ngrams(self.tokens(text), m.ngram_min, m.ngram_max, joiner)

    def _build_vocabs(self) -> tuple[Vocab, Vocab]:
        train = self.examples("train")
        labels = Vocab.build(Counter(ex.label for ex in train), specials=[], unk=None)
        m, d = self.config.model, self.config.data
        if self.bow:
            counts = Counter(f for ex in train for f in self.features(ex.text))
            vocab = Vocab.build(counts, d.min_freq, m.max_features, specials=[], unk=None)
        else:
            counts = Counter(t for ex in train for t in self.tokens(ex.text))
            vocab = Vocab.build(counts, min_freq=d.min_freq)
        if not len(vocab):
            raise ConfigError(f"no training token occurs data.min_freq={d.min_freq} times")
        return vocab, labels

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
        ids = self.vocab.encode(self.tokens(text)) or [self.vocab.unk_id]
        if self.model.contextual is not None:  # the LMs read the words as written
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
        if self.model.contextual is None:
            words, mask = pad(encoded)
            return {"words": words, "mask": mask}
        words, mask = pad([ids for ids, _ in encoded])
        batch = {"words": words, "mask": mask}
        return batch | self._context.batch(self.model.contextual, [t for _, t in encoded])

    def length(self, encoded: Any) -> int:
        """Tokens of an encoded text (0 for a bag of words, which has no order)."""
        if self.bow:
            return 0
        return len(encoded[0] if self.model.contextual is not None else encoded)

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
        if not self.bow and self.model.contextual is not None:
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
        if not self.bow and self.model.contextual is not None:
            batch = batch | self.model.contextual.inputs([words for _, words in encoded])
        return self.runner.run("model", batch)["probabilities"]

    @budget.budgeted
    def predict(
        self, inputs: Sequence[str], options: Any = None, **overrides: Any
    ) -> list[dict[str, Any]]:
        """Classify raw texts (an empty text too: it gets the label of an empty bag).

        Returns one dict per input: ``label``, the likeliest label, and ``probabilities``,
        ``{label: probability}`` for the ``top`` likeliest labels (all with 0), likeliest
        first.
        """
        texts = check_inputs(inputs)
        top = resolve_options(self, options, **overrides).top or len(self.label_vocab)
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
        return self.label_vocab.itos[len(self.label_vocab.specials) :]

    def format(self, text: str, result: dict[str, Any]) -> str:
        """The label and the text, then one line per listed label and its probability."""
        width = max(len(label) for label in result["probabilities"])
        lines = [f"{result['label']}\t{text}"]
        lines += [f"  {label:<{width}}  {p:.4f}" for label, p in result["probabilities"].items()]
        return "\n".join(lines)

    # ------------------------------------------------------------ evaluation
    def evaluate(self, split: str = "dev") -> dict[str, float]:
        encoded, _ = self.encoded(split)
        return self._score(encoded, [ex.label for ex in self.examples(split)])

    def evaluate_file(self, path: str | Path) -> dict[str, float]:
        return self.score(self.read(path))

    def score(self, examples: Sequence[Example]) -> dict[str, float]:
        """Accuracy and macro-F1 (fractions) of the model on ``examples``.

        Macro-F1 is scikit-learn's: the unweighted mean F1 over every label that occurs in the
        gold labels or the predictions. Sets :attr:`report` (per-label precision, recall, F1,
        and a confusion table) and :attr:`confusion` (for :meth:`plot_confusion`).
        """
        return self._score([self.encode(ex.text) for ex in examples], [ex.label for ex in examples])

    def _score(self, encoded: Sequence[Any], gold: list[str]) -> dict[str, float]:
        best = self.probabilities(encoded).argmax(dim=1).tolist()
        predicted = [self.label_vocab.itos[i] for i in best]
        metrics, self.report, self.confusion = label_scores(gold, predicted)
        return metrics

    def plot_confusion(self, path: str | Path, title: str = "") -> None:
        """Draw the confusion matrix of the last evaluation as a PNG at ``path``."""
        from rnnkit.plots import plot_confusion_matrix

        if self.confusion is None:
            raise RuntimeError("evaluate the model before plotting its confusion matrix")
        plot_confusion_matrix(*self.confusion, path, title=title)

    # --------------------------------------------------------------- storage
    model_files = storage.model_files
    from_dir = classmethod(storage.from_dir)


__all__ = ["ClassifyConfig", "ClassifyTask", "ngrams", "smoothed_idf"]
