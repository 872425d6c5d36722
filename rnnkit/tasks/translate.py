"""Translation: a sentence → a sentence, with an encoder-decoder and attention.

The model (:mod:`rnnkit.nn.seq2seq`): source words → embedding → (bi)GRU or LSTM encoder over
packed batches → a GRU or LSTM decoder that attends over the encoder outputs (Bahdanau's
additive score, or Luong's dot or general) and predicts the target one word at a time. Training
is batched and masked, with teacher forcing at a set ratio; decoding is batched greedy or beam
search. Scores are sacrebleu's BLEU and chrF (0–100, BLEU with the ``13a`` tokeniser) of each
distinct source sentence against all of its translations in the split.

Data is one tab-separated parallel file, normalised as the seed does and cut into
train/dev/test by a hash of the normalised source sentence (:func:`rnnkit.data.parallel.split_of`),
so no source sentence is in two splits.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from rnnkit import budget, export
from rnnkit.config import rate, section, setting
from rnnkit.data.batching import Epoch, bucket_batches, epoch_generator, longest_first, pad
from rnnkit.data.parallel import (
    SEED_PREFIXES,
    Pair,
    group_references,
    light_normalise,
    normalise,
    read_pairs,
    split_of,
)
from rnnkit.data.text import resolve_data_path
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError, DataError, ModelDirError
from rnnkit.metrics import corpus_scores
from rnnkit.nn.decoder import State
from rnnkit.nn.search import search
from rnnkit.nn.seq2seq import (
    BOS_ID,
    EOS,
    EOS_ID,
    SPECIALS,
    Seq2Seq,
    TranslateModelConfig,
    state_names,
)
from rnnkit.tasks.base import (
    Axes,
    Evaluation,
    TaskBase,
    Verb,
    for_inference,
    predictor,
    shard,
)
from rnnkit.train import TrainConfig

logger = logging.getLogger(__name__)

MAX_BEAM = 64  # a wider beam multiplies memory and time for no measurable gain here


@dataclass
class TranslateOptions:
    """How to search for a translation; the same defaults in the CLI, Python and HTTP."""

    beam: int | None = setting(None, "beam size; 1 = greedy; null = the recipe's", 1, MAX_BEAM)
    attention: bool = setting(False, "also return the attention weights and both token lists")


SPLITS = ("train", "dev", "test")


@dataclass
class TranslateDataConfig:
    """The parallel file, how to read it, and which pairs to keep."""

    file: str = "eng-fra/fra.txt"  # absolute, or inside the data directory
    direction: Literal["reverse", "forward"] = "reverse"  # reverse: 2nd column → 1st (fra→eng)
    normalise: bool = True  # the seed's: ASCII, lowercase, . ! ? split off, other marks dropped
    max_length: int = setting(
        10, "keep pairs with fewer words than this on both sides (0 = all)", 0
    )
    filter_prefixes: bool = True  # keep pairs whose 1st column starts with one of `prefixes`
    prefixes: list[str] = field(default_factory=lambda: list(SEED_PREFIXES))
    min_freq: int = setting(1, "rarer training words share <unk>", 1)

    def validate(self) -> None:
        """Refuse a recipe without a file, or a prefix filter without prefixes."""
        if not self.file:
            raise ConfigError("data.file must name a tab-separated parallel file")
        if self.filter_prefixes and not self.prefixes:
            raise ConfigError("data.filter_prefixes is on but data.prefixes is empty")


@dataclass
class TranslateTrainConfig(TrainConfig):
    """The Trainer's settings plus two of translation's own."""

    teacher_forcing: float = setting(
        1.0, "share of sentences fed the gold previous word (else own)", 0, 1
    )
    autoencoder_epochs: int = setting(
        0, "first epochs train encoder + a helper decoder source→source", 0
    )
    label_smoothing: float = rate(0.0)


@dataclass
class DecodeConfig:
    """How translations are searched for."""

    beam: int = setting(5, "test scores, `rnnkit translate` and `rnnkit eval` (1 = greedy)", 1)
    dev_beam: int = setting(1, "the dev scores of every epoch (early stopping)", 1)
    length_penalty: float = setting(
        1.0, "alpha of ((5 + length) / 6) ** alpha; 0 = raw log-prob", 0
    )
    max_length: int = setting(100, "words per translation, and at most 2 × source words + 10", 1)
    batch_size: int = setting(128, "sentences translated together", 1)


@dataclass
class TranslateConfig:
    """A translate recipe: its data, model, training and decoding."""

    task: Literal["translate"] = "translate"
    data: TranslateDataConfig = field(default_factory=TranslateDataConfig)
    model: TranslateModelConfig = field(default_factory=TranslateModelConfig)
    train: TranslateTrainConfig = section(
        TranslateTrainConfig, epochs=30, batch_size=64, lr=1e-3, clip_norm=1.0, patience=5
    )
    decode: DecodeConfig = field(default_factory=DecodeConfig)


def read_parallel(d: TranslateDataConfig, path: str | Path, filters: bool = True) -> list[Pair]:
    """Pairs of a parallel file in the recipe ``d``'s direction and normalisation; with
    ``filters`` also the recipe's length and prefix filter."""
    found = read_pairs(
        path,
        reverse=d.direction == "reverse",
        normalise_text=d.normalise,
        max_words=d.max_length if filters else 0,
        prefixes=d.prefixes if filters and d.filter_prefixes else None,
    )
    if not found:
        raise DataError("no sentence pairs in file (after filtering)", str(path))
    return found


def split_pairs(d: TranslateDataConfig, data_dir: Path | None) -> dict[str, list[Pair]]:
    """The recipe's file cut into ``train``, ``dev`` and ``test`` by a hash of each source."""
    path = resolve_data_path(d.file, data_dir)
    splits: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    for pair in read_parallel(d, path):
        splits[split_of(pair.source)].append(pair)
    for s in ("train", "dev"):
        if not splits[s]:
            raise DataError(f"no {s} pairs: the file is too small to split", str(path))
    return splits


def pair_vocabs(d: TranslateDataConfig, train: Sequence[Pair]) -> tuple[Vocab, Vocab]:
    """The source and target words of the training pairs (rarer than ``data.min_freq``
    left to ``<unk>``)."""
    source = Counter(w for p in train for w in p.source.split())
    target = Counter(w for p in train for w in p.target.split())
    m = d.min_freq
    return Vocab.build(source, m, specials=SPECIALS), Vocab.build(target, m, specials=SPECIALS)


class TranslateTask(TaskBase):
    """Reads a parallel file, builds the encoder-decoder, trains, translates and scores."""

    name = "translate"
    Config = TranslateConfig
    VOCABS = {"vocab.json": "vocab", "target.json": "target_vocab"}
    Options = TranslateOptions
    cpu_bf16_pays = True  # 1.1-1.4x faster in bf16 on AVX512-BF16 (bench/precision.py)
    metric_goals = {"bleu": "max", "chrf": "max"}
    verb = Verb(
        "translate", "translate sentences with a translation model", "sentences",
        label="Sentence", hint="Enter translates.", button="Translate",
    )  # fmt: skip
    attention_option = "attention"
    # What runs the network in predict: None, PyTorch; an rnnkit.backends.OnnxRunner when
    # loaded with backend onnx (its graphs "encoder" and "decoder", as rnnkit.export builds them).
    runner: Any = None

    def __init__(
        self, config: TranslateConfig, vocabs: tuple[Vocab, ...], data_dir: Path | None = None
    ):
        self.config = config
        self.data_dir = data_dir
        self._splits: dict[str, list[Pair]] | None = None
        self.vocab, self.target_vocab = vocabs
        if any(v.specials != list(SPECIALS) for v in vocabs):
            raise ModelDirError("it does not hold a translation model's vocabularies")
        auto = config.train.autoencoder_epochs > 0
        self.model = Seq2Seq(len(self.vocab), len(self.target_vocab), config.model, auto)
        self.model.teacher_forcing = config.train.teacher_forcing
        self.model.label_smoothing = config.train.label_smoothing

    @classmethod
    def build(cls, config: TranslateConfig, data_dir: Path | None = None) -> TranslateTask:
        """A new model on the training pairs' words; the parallel file is read and split now."""
        splits = split_pairs(config.data, data_dir)
        counts = {s: len(pairs) for s, pairs in splits.items()}
        logger.info(
            f"{counts['train']} training, {counts['dev']} dev and {counts['test']} test pairs "
            f"from {config.data.file}"
        )
        task = cls(config, pair_vocabs(config.data, splits["train"]), data_dir)
        task._splits = splits
        m = config.model
        for name, vocab, embed in (
            (m.pretrained_source, task.vocab, task.model.src_embed),
            (m.pretrained_target, task.target_vocab, task.model.decoder.embed),
        ):
            if name:
                task.load_vectors(embed, vocab, name)
        return task

    # ------------------------------------------------------------------ data
    def read(self, path: str | Path, filters: bool = True) -> list[Pair]:
        """Pairs of a parallel file (see :func:`read_parallel`)."""
        return read_parallel(self.config.data, path, filters)

    def pairs(self, split: str) -> list[Pair]:
        """The ``train``, ``dev`` or ``test`` pairs of the recipe's file, read once."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r} (choices: {', '.join(SPLITS)})")
        if self._splits is None:
            self._splits = split_pairs(self.config.data, self.data_dir)
        return self._splits[split]

    def _clean(self, text: str) -> str:
        return normalise(text) if self.config.data.normalise else light_normalise(text)

    def make_batch(self, pairs: Sequence[Pair | str], autoencode: bool = False) -> dict[str, Any]:
        """Pad pairs (or bare normalised sources) into tensors; see :meth:`Seq2Seq.loss`.
        Every source ends in ``</s>``."""
        sources = [p.source if isinstance(p, Pair) else p for p in pairs]
        src_ids = [self.vocab.encode(s.split()) + [EOS_ID] for s in sources]
        source, source_mask = pad(src_ids)
        batch: dict[str, Any] = {"source": source, "source_mask": source_mask}
        gold = [p for p in pairs if isinstance(p, Pair)]
        if len(gold) == len(pairs):
            if autoencode:
                targets = [ids[:-1] for ids in src_ids]
            else:
                targets = [self.target_vocab.encode(p.target.split()) for p in gold]
            batch["target_in"], _ = pad([[BOS_ID, *t] for t in targets])
            batch["target_out"], batch["target_mask"] = pad([[*t, EOS_ID] for t in targets])
            batch["autoencode"] = autoencode
        return batch

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Epoch:
        """Shuffled batches of training pairs bucketed by target length (see
        :meth:`make_batch`); in the first ``train.autoencoder_epochs`` epochs, source → source
        batches bucketed by source length."""
        train = self.pairs("train")
        generator = epoch_generator(self.config.train.seed, epoch)
        autoencode = epoch <= self.config.train.autoencoder_epochs
        lengths = [len(p.source.split()) if autoencode else len(p.target.split()) for p in train]
        order = bucket_batches(lengths, self.config.train.batch_size, True, generator)
        return Epoch(
            shard(order, rank, world_size),
            lambda rows: self.make_batch([train[i] for i in rows], autoencode=autoencode),
        )

    # ------------------------------------------------------------ prediction
    def _limits(self, batch: dict[str, Any]) -> torch.Tensor:
        lengths = batch["source_mask"].sum(1)
        return (2 * lengths + 10).clamp(max=self.config.decode.max_length)

    @torch.no_grad()
    def translate(
        self, sources: Sequence[str], beam: int | None = None, attention: bool = False
    ) -> list[tuple[list[str], float, torch.Tensor | None]]:
        """Translate normalised sources; per source ``(words, score, attention)``, attention
        ``(words + 1, source words + 1)`` (``</s>`` on both sides) when asked for."""
        d = self.config.decode
        beam = d.beam if beam is None else beam
        if not 1 <= beam <= MAX_BEAM:
            raise ConfigError(f"beam size must be from 1 to {MAX_BEAM}, not {beam}")
        device = for_inference(self.model)
        out: list[Any] = [None] * len(sources)
        # Every source counts as one word or more: an empty one is still translated. The
        # search holds each source's encoder outputs once per hypothesis, so a batch's memory
        # is sentences × beam × padded source length: that is what the budget bounds.
        words_in = [max(1, len(s.split())) + 1 for s in sources]  # + </s>
        per_beam = max(1, budget.PREDICT_TOKENS // beam)
        for rows in longest_first(words_in, d.batch_size, per_beam):
            budget.check_deadline()
            batch = self.make_batch([sources[i] for i in rows])
            batch = {k: v.to(device) for k, v in batch.items()}
            found = search(
                self.step, self.start(batch), BOS_ID, EOS_ID, self._limits(batch), beam,
                d.length_penalty, keep_attention=attention,
            )  # fmt: skip
            tokens, lengths = found.tokens.cpu(), found.lengths.cpu()
            for j, i in enumerate(rows):
                ids = tokens[j, : int(lengths[j])].tolist()
                words = self.target_vocab.decode(ids)
                weights = None
                if found.attention is not None:
                    n_src = int(batch["source_mask"][j].sum())
                    weights = found.attention[j, : int(lengths[j]), :n_src].float().cpu()
                out[i] = (words, float(found.scores[j]), weights)
        return out

    def start(self, batch: dict[str, Any]) -> State:
        """The predict path's encoder call: the search's start state (``memory``, ``keys``,
        ``mask``, ``hidden``, and ``cell``, ``feed`` where the decoder has them; batch first)
        for a :meth:`make_batch` batch, by PyTorch or by :attr:`runner`'s ``encoder`` graph."""
        if self.runner is None:
            return self.model.start(batch)
        state = self.runner.run("encoder", batch)
        return {**state, "mask": batch["source_mask"]}

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor, State]:
        """The search's step (see :mod:`rnnkit.nn.search`): log-probabilities ``(n, vocab)``
        with ``<pad>``, ``<unk>`` and ``<s>`` at -inf, attention ``(n, source)`` and the next
        state, by PyTorch or by :attr:`runner`'s ``decoder`` graph."""
        if self.runner is None:
            return self.model.log_probs_step(tokens, state)
        feeds = {**state, "token": tokens, "source_mask": state["mask"]}
        out = self.runner.run("decoder", feeds)
        new = {k: out.get(f"{k}_next", v) for k, v in state.items()}
        return out["log_probs"], out["attention"], new

    @predictor
    def predict(self, texts: list[str], o: TranslateOptions) -> list[dict[str, Any]]:
        """Translate raw sentences (normalised as the training data was).

        Returns one dict per input: ``source`` (the normalised input), ``translation``,
        ``score`` (summed log-probability), and with ``attention`` also ``source_tokens``,
        ``target_tokens`` (each closed by ``</s>``) and ``attention``, a list of rows, one per
        target token, of weights over the source tokens. A blank input gets a blank
        translation of score 0.
        """
        sources = [self._clean(t) for t in budget.paced(texts)]
        todo = [i for i, s in enumerate(sources) if s.strip()]
        found = dict(
            zip(todo, self.translate([sources[i] for i in todo], o.beam, o.attention), strict=True)
        )
        results = []
        for i, source in enumerate(sources):
            words, score, weights = found.get(i, ([], 0.0, None))
            result: dict[str, Any] = {
                "source": source, "translation": " ".join(words), "score": score,
            }  # fmt: skip
            if o.attention:
                result["source_tokens"] = [*source.split(), EOS]
                result["target_tokens"] = [*words, EOS]
                rows = [] if weights is None else weights.tolist()
                result["target_tokens"] = result["target_tokens"][: len(rows)]
                result["attention"] = [[round(x, 5) for x in row] for row in rows]
            results.append(result)
        return results

    def format(self, text: str, result: dict[str, Any]) -> str:
        """The translation alone."""
        return result["translation"]

    def use_beam(self, beam: int) -> None:
        """Decode with ``beam`` from now on (``rnnkit eval --beam``); 1 is greedy."""
        self.config.decode.beam = beam

    # ------------------------------------------------------------ evaluation
    def evaluate(self, split: str = "dev") -> Evaluation:
        """Scores on a split (see :meth:`_score`); dev with ``decode.dev_beam``."""
        beam = self.config.decode.dev_beam if split == "dev" else None
        return self._score(self.pairs(split), beam)

    def evaluate_file(self, path: str | Path) -> Evaluation:
        """Scores on another parallel file (normalised the recipe's way, not filtered)."""
        return self._score(self.read(path, filters=False))

    def _score(self, pairs: Sequence[Pair], beam: int | None = None) -> Evaluation:
        """BLEU and chrF (sacrebleu, 0–100) of each distinct source once against all of its
        targets in ``pairs`` as reference streams; the report has sample translations."""
        if not pairs:
            raise DataError("no sentence pairs to score")
        sources, references = group_references(pairs)
        found = self.translate(sources, beam)
        hypotheses = [" ".join(words) for words, _, _ in found]
        metrics = corpus_scores(hypotheses, references)
        beam = self.config.decode.beam if beam is None else beam
        lines = [
            f"{len(sources)} distinct sources, {len(pairs)} references; beam {beam}; "
            "BLEU: sacrebleu, tokenize=13a, multiple reference streams; chrF: sacrebleu defaults",
            "samples (source → translation | a reference):",
        ]
        for i in range(min(8, len(sources))):
            lines.append(f"  {sources[i]} → {hypotheses[i]} | {references[i][0]}")
        return Evaluation(metrics, "\n".join(lines))

    # ------------------------------------------------------------------------------ export
    def onnx_plan(self, data: bool = True) -> export.OnnxPlan:
        """Two graphs, ``encoder`` and ``decoder`` (one step); the search stays in Python.

        The encoder takes ``source`` int64 and ``source_mask`` bool ``(batch, source)`` (word
        ids closed by ``</s>``, as :meth:`make_batch` encodes them) and returns ``memory``
        ``(batch, source, memory_size)``, the attention ``keys`` ``(batch, source, key_size)``
        computed once per sentence, and the decoder's start state: ``hidden`` ``(batch,
        layers, size)``, ``cell`` (LSTM decoder) and ``feed`` ``(batch, size)`` (input
        feeding). The decoder takes ``token`` int64 ``(batch,)`` (``<s>`` first), that state,
        ``memory``, ``keys`` and ``source_mask`` and returns ``log_probs`` ``(batch, vocab)``
        (``<pad>``, ``<unk>`` and ``<s>`` at -inf, as the search sees them), ``attention``
        ``(batch, source)`` and the new state as ``hidden_next``, ``cell_next``,
        ``feed_next``. The check runs 6 decoder steps, both sides reading PyTorch's word."""
        model, decoder, states = self.model, self.model.decoder, state_names(self.model.decoder)
        samples = export.check_samples(
            lambda: [p.source.split() for p in self.pairs("dev")],
            lambda: export.vocab_samples(self.vocab.itos, 4, ["zqxjvorth"]),
            data,
        )
        layered = ("batch", decoder.layers, decoder.hidden_size)
        kinds = {"hidden": layered, "cell": layered, "feed": ("batch", decoder.hidden_size)}
        state = {n: kinds[n] for n in states}
        keys, width = decoder.attention.key_layer, model.encoder.output_size
        memory = {
            "memory": ("batch", "source", width),
            "keys": ("batch", "source", width if keys is None else keys.out_features),
        }
        source = {"source": ("batch", "source"), "source_mask": ("batch", "source")}

        def batch(lengths: Sequence[int], shift: int = 0) -> dict[str, Any]:
            # make_batch closes each source with </s>: a row of n words is n + 1 long
            rows = samples.cut([max(1, n - 1) for n in lengths], shift)
            return self.make_batch([" ".join(r) for r in rows])

        def encode(b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
            start = model.start(b)
            return tuple(start[n] for n in [*memory, *states])

        def step(b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
            state = {n: b[n] for n in [*states, *memory]} | {"mask": b["source_mask"]}
            log_probs, weights, new = model.log_probs_step(b["token"], state)
            return (log_probs, weights, *(new[n] for n in states))

        example = batch(export.TRACE_LENGTHS)
        step_example = dict(zip([*memory, *states], encode(example), strict=True)) | example
        step_example["token"] = torch.full((len(export.TRACE_LENGTHS),), BOS_ID)
        step_inputs = {"token": ("batch",), **state, **memory, "source_mask": source["source_mask"]}
        step_outputs: dict[str, Axes] = {"log_probs": ("batch", len(self.target_vocab))}
        step_outputs |= {"attention": ("batch", "source")}
        step_outputs |= {f"{n}_next": axes for n, axes in state.items()}
        encoder = export.OnnxGraph("encoder", model, encode, source, memory | state, example)
        decoder_step = export.OnnxGraph(
            "decoder", model, step, step_inputs, step_outputs, step_example
        )
        decoder_step.greedy = ("log_probs",)  # argmax reported

        def check(run: export.RunGraph) -> list[str]:
            shown = []
            for shift, lengths in enumerate(export.CHECK_LENGTHS, 1):
                b = batch(lengths, shift)
                theirs = dict(zip(encoder.outputs, encode(b), strict=True))
                ours = run("encoder", b, theirs)
                prev = torch.full((len(lengths),), BOS_ID)
                for _ in range(6):
                    found = step(theirs | b | {"token": prev})
                    expected = dict(zip(step_outputs, found, strict=True))
                    got = run("decoder", ours | b | {"token": prev}, expected)
                    ours |= {n: got[f"{n}_next"] for n in states}
                    theirs |= {n: expected[f"{n}_next"] for n in states}
                    prev = expected["log_probs"].argmax(-1)  # both sides read the same next word
                shown.append(export.batch_shape([int(n) for n in b["source_mask"].sum(1)]))
            return shown

        return export.OnnxPlan([encoder, decoder_step], check, samples.source)


__all__ = ["TranslateConfig", "TranslateTask"]
