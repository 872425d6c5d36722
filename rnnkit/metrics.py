"""Scores the tasks report, as pure functions of gold and predicted answers.

Tags and entities (seqeval's strict IOB2 mode), labels (scikit-learn's macro-F1), translations
(sacrebleu's BLEU and chrF), and the confusion table ``rnnkit eval`` prints. The scoring
libraries are imported on first use, so importing this module costs nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from rnnkit.data.parallel import reference_streams
from rnnkit.data.tagged import convert


# ----------------------------------------------------------------------- tags and entities
def token_pairs(gold: list[list[str]], predicted: list[list[str]]) -> list[tuple[str, str]]:
    """(gold, predicted) for every token; the sentences must match in length."""
    return [
        pair for gs, ps in zip(gold, predicted, strict=True) for pair in zip(gs, ps, strict=True)
    ]


def token_accuracy(gold: list[list[str]], predicted: list[list[str]]) -> float:
    """The share of tokens whose predicted tag is the gold one (0 for no tokens)."""
    right = sum(g == p for g, p in token_pairs(gold, predicted))
    total = sum(len(g) for g in gold)
    return right / max(1, total)


def entity_scores(
    gold: list[list[str]], predicted: list[list[str]], scheme: str
) -> tuple[dict[str, float], str]:
    """seqeval in strict IOB2 mode: micro precision/recall/F1, per-type F1, and its table.

    ``gold`` and ``predicted`` are tag sequences in ``scheme`` (IOB1, IOB2 or BIOES), converted
    to IOB2 before scoring. Returns ``precision``, ``recall``, ``f1`` and ``f1_TYPE`` for each
    entity type, and seqeval's text report.
    """
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    gold2 = [convert(g, scheme, "IOB2") for g in gold]
    pred2 = [convert(p, scheme, "IOB2") for p in predicted]
    options = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    report = classification_report(gold2, pred2, output_dict=True, **options)
    micro = report["micro avg"]
    metrics = {"precision": micro["precision"], "recall": micro["recall"], "f1": micro["f1-score"]}
    for kind, row in report.items():
        if not kind.endswith(" avg"):
            metrics[f"f1_{kind}"] = row["f1-score"]
    table = classification_report(gold2, pred2, digits=4, **options)
    return {k: float(v) for k, v in metrics.items()}, table


def confusion_table(gold: list[list[str]], predicted: list[list[str]], top: int = 12) -> str:
    """Token-level confusion counts as text: the ``top`` commonest tags (in gold or predicted)
    as rows and columns, rarer ones folded into "other"; gold down, predicted across."""
    pairs = Counter(token_pairs(gold, predicted))
    seen = Counter()  # how often each tag occurs, in gold or predicted
    for (g, p), n in pairs.items():
        seen[g] += n
        seen[p] += n
    shown = [t for t, _ in seen.most_common(top)]
    labels = [*shown, "other"] if len(seen) > top else shown
    fold = {t: t for t in shown}
    grid = Counter()
    for (g, p), n in pairs.items():
        grid[fold.get(g, "other"), fold.get(p, "other")] += n
    width = max(7, *(len(t) + 1 for t in labels))
    lines = ["confusion (rows: gold, columns: predicted)"]
    lines.append(" " * width + "".join(f"{t:>{width}}" for t in labels))
    for g in labels:
        lines.append(f"{g:<{width}}" + "".join(f"{grid[g, p]:>{width}}" for p in labels))
    return "\n".join(lines)


# -------------------------------------------------------------------------------- labels
def label_scores(
    gold: list[str], predicted: list[str]
) -> tuple[dict[str, float], str, tuple[list[str], list[list[int]]]]:
    """Accuracy and macro-F1 (fractions) of one label per text, a report, and the matrix.

    Macro-F1 is scikit-learn's: the unweighted mean F1 over every label that occurs in the gold
    labels or the predictions. The report is scikit-learn's per-label precision, recall and F1,
    then :func:`confusion_table`; the matrix is ``(labels, counts)``, every label in gold or
    predicted sorted, counts ``(labels, labels)`` gold down, predicted across.
    """
    from sklearn.metrics import classification_report, confusion_matrix, f1_score

    right = sum(g == p for g, p in zip(gold, predicted, strict=True))
    metrics = {
        "accuracy": right / max(1, len(gold)),
        "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
    }
    labels = sorted(set(gold) | set(predicted))
    report = classification_report(gold, predicted, labels=labels, digits=4, zero_division=0)
    report = report + "\n" + confusion_table([gold], [predicted])
    matrix = confusion_matrix(gold, predicted, labels=labels)
    return metrics, report, (labels, matrix.tolist())


# -------------------------------------------------------------------------- translations
def corpus_scores(hypotheses: list[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """sacrebleu BLEU (13a tokenisation) and chrF, 0–100, with one reference list per
    hypothesis (of any lengths ≥ 1; see :func:`rnnkit.data.parallel.reference_streams`)."""
    import sacrebleu

    streams = reference_streams(references)
    # force: the seed's normalisation splits punctuation off on both sides, which sacrebleu
    # would otherwise warn about on every call; 13a leaves such text as it is.
    bleu = sacrebleu.corpus_bleu(hypotheses, streams, tokenize="13a", force=True)
    chrf = sacrebleu.corpus_chrf(hypotheses, streams)
    return {"bleu": float(bleu.score), "chrf": float(chrf.score)}


__all__ = [
    "confusion_table",
    "corpus_scores",
    "entity_scores",
    "label_scores",
    "token_accuracy",
    "token_pairs",
]
