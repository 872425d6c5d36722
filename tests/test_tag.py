"""The tagging task end to end on small generated data: train, save, reload, tag, evaluate."""

import json
import random

import pytest
import torch

from rnnkit import checkpoint as ckpt
from rnnkit.config import from_dict
from rnnkit.data.vectors import write_vectors
from rnnkit.metrics import confusion_table
from rnnkit.tasks import build_task
from rnnkit.tasks.tag import TagConfig, TagTask
from rnnkit.train import Trainer
from tests.conftest import run_cli

PEOPLE = ["Anna", "Boris", "Carla", "Dmitri", "Elena", "Farid"]
PLACES = ["Paris", "Lima", "Oslo", "Quito", "Hanoi"]
FILLER = ["the", "a", "man", "saw", "went", "to", "and", "then", "left", "yesterday", "we"]


def ner_sentence(rng):
    tokens, tags = [], []
    for _ in range(rng.randint(1, 3)):
        for _ in range(rng.randint(1, 3)):
            tokens.append(rng.choice(FILLER))
            tags.append("O")
        kind = rng.random()
        if kind < 0.4:
            tokens += [rng.choice(PEOPLE), rng.choice(PEOPLE) + "son"]
            tags += ["B-PER", "I-PER"]
        elif kind < 0.8:
            tokens.append(rng.choice(PLACES))
            tags.append("B-LOC")
    return tokens, tags


def write_ner(path, n, seed):
    rng = random.Random(seed)
    lines = []
    for s in range(n):
        tokens, tags = ner_sentence(rng)
        lines.append(f"# sent_id = {s}")
        lines += [
            f"{i}\t{t}\t{g}\t-\t-" for i, (t, g) in enumerate(zip(tokens, tags, strict=True), 1)
        ]
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ner_overrides(tmp_path, *extra):
    files = {s: write_ner(tmp_path / f"{s}.iob2", n, i) for i, (s, n) in enumerate(
        [("train", 300), ("dev", 60), ("test", 60)]
    )}  # fmt: skip
    return [
        "data.format=columns",
        *(f"data.{s}={p}" for s, p in files.items()),
        "data.token_column=1",
        "data.tag_column=2",
        "data.separator=tab",
        "data.scheme=IOB2",
        "model.embedding_dim=16",
        "model.char_dim=8",
        "model.char_hidden=8",
        "model.hidden_size=16",
        "model.layers=1",
        "model.dropout=0.1",
        "train.epochs=6",
        "train.batch_size=16",
        "train.lr=0.01",
        "train.progress=false",
        "train.device=cpu",
        *extra,
    ]


def config_from(overrides):
    from rnnkit.config import parse_overrides

    return from_dict(TagConfig, parse_overrides(overrides))


def test_crf_tagger_trains_saves_reloads_and_predicts_the_same(tmp_path):
    config = config_from(ner_overrides(tmp_path, "model.head=crf"))
    task = build_task("tag", config)
    Trainer(task, config.train, tmp_path / "run", log=lambda _: None).fit()
    assert task.evaluate("test")["f1"] > 0.9
    ckpt.save_model(tmp_path / "saved", task)  # the weights in memory, whatever the epoch
    sentences = [s.tokens for s in task.sentences("test")] + [["Zorro", "saw", "Oslo"]]
    before = task.tag(sentences)
    batch = task.make_batch(sentences[:8], with_tags=False)
    emissions = task.model.emissions(batch)
    reloaded = TagTask.from_dir(tmp_path / "saved")
    assert reloaded.tag(sentences) == before
    assert torch.equal(reloaded.model.emissions(batch), emissions)
    # The CRF never predicts an I- tag that does not continue its entity.
    for tags in before:
        for previous, tag in zip(["O", *tags], tags, strict=False):
            if tag.startswith("I-"):
                assert previous[2:] == tag[2:], tags


def test_bioes_inside_iob2_outside(tmp_path):
    config = config_from(ner_overrides(tmp_path, "model.head=crf", "model.tag_scheme=BIOES"))
    task = build_task("tag", config)
    assert "S-LOC" in task.tag_vocab and "E-PER" in task.tag_vocab
    Trainer(task, config.train, tmp_path / "run", log=lambda _: None).fit()
    result = task.predict(["we saw Anna Borisson and Lima"])[0]
    assert set(result["tags"]) <= {"O", "B-PER", "I-PER", "B-LOC", "I-LOC"}
    assert {"start": 2, "end": 4, "type": "PER", "text": "Anna Borisson"} in result["spans"]


def test_cli_train_tag_eval(tmp_path):
    out = tmp_path / "model"
    run = run_cli("train", "tag", "--out", str(out), *ner_overrides(tmp_path, "model.chars=cnn"))
    assert run.returncode == 0, run.stderr
    assert (out / "tags.json").exists() and (out / "chars.json").exists()

    run = run_cli("tag", "--model", str(out), "--format", "json", "the man saw Elena Annason")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["tokens"] == ["the", "man", "saw", "Elena", "Annason"]
    assert result["spans"] == [{"start": 3, "end": 5, "type": "PER", "text": "Elena Annason"}]

    stdin = "the man saw Elena\n\nAnna left\x0cthen\n"  # a blank line; a form feed is no break
    run = run_cli("tag", "--model", str(out), "--format", "json", "-", stdin=stdin)
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["tokens"] for r in results] == [
        ["the", "man", "saw", "Elena"],
        [],
        ["Anna", "left", "then"],
    ]

    run = run_cli("tag", "--model", str(out), "--conll", str(tmp_path / "test.iob2"))
    assert run.returncode == 0, run.stderr
    first = run.stdout.split("\n\n")[0].splitlines()
    assert first[0].split("\t")[:2] == ["1", (tmp_path / "test.iob2").read_text().split("\t")[1]]

    run = run_cli("eval", "--model", str(out), "--json")
    metrics = json.loads(run.stdout)
    assert {"accuracy", "precision", "recall", "f1", "f1_PER", "f1_LOC"} <= set(metrics)
    run = run_cli("eval", "--model", str(out), "--data", str(tmp_path / "dev.iob2"))
    assert "confusion" in run.stdout and "B-PER" in run.stdout and "micro avg" in run.stdout


def test_cli_errors_are_one_line(tmp_path):
    overrides = ner_overrides(tmp_path)
    bad = tmp_path / "bad.iob2"
    bad.write_text("1\tAnna\tB-PER\t-\t-\n2\tsays\n", encoding="utf-8")
    run = run_cli("train", "tag", "--out", str(tmp_path / "m"), *overrides, f"data.dev={bad}")
    assert run.returncode == 2
    message = (
        f"rnnkit: error: {bad}:2: expected 5 columns like the first token line, found 2: '2\\tsays'"
    )
    assert run.stderr.strip() == message
    assert not (tmp_path / "m" / "model.safetensors").exists()  # refused before training
    run = run_cli("tag", "--model", str(tmp_path / "nothing"), "a b")
    assert run.returncode == 2 and "does not exist" in run.stderr


def write_conllu(path, n, seed):
    rng = random.Random(seed)
    kinds = {"the": "DET", "a": "DET", "dog": "NOUN", "cat": "NOUN", "runs": "VERB"}
    kinds |= {"sees": "VERB", "quickly": "ADV", ".": "PUNCT"}
    blocks = []
    for s in range(n):
        words = [rng.choice(["the", "a"]), rng.choice(["dog", "cat"]), rng.choice(["runs", "sees"])]
        words += ["quickly"] * rng.randint(0, 1) + ["."]
        rows = [f"# sent_id = {s}"]
        rows += [f"{i}\t{w}\t{w}\t{kinds[w]}\t_\t_\t0\tdep\t_\t_" for i, w in enumerate(words, 1)]
        blocks.append("\n".join(rows))
    path.write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    return path


def test_pos_softmax_on_conllu_with_pretrained_vectors(tmp_path, caplog):
    files = {s: write_conllu(tmp_path / f"{s}.conllu", 80, i) for i, s in enumerate(["a", "b"])}
    vectors = tmp_path / "vectors.txt"
    write_vectors(vectors, ["dog", "cat"], torch.tensor([[0.5] * 8, [-0.5] * 8]))
    config = config_from(
        [f"data.train={files['a']}", f"data.dev={files['b']}", "model.embedding_dim=8",
         f"model.pretrained={vectors}", "model.freeze=true", "model.chars=none",
         "model.hidden_size=16", "model.layers=1", "train.epochs=10", "train.lr=0.02",
         "train.batch_size=16", "train.progress=false"]
    )  # fmt: skip
    with caplog.at_level("INFO", logger="rnnkit"):
        task = build_task("tag", config)
    assert "2 of 8 words found" in caplog.text
    dog = task.vocab.stoi["dog"]
    assert task.model.embed.weight[dog].tolist() == [0.5] * 8
    Trainer(task, config.train, tmp_path / "run", log=lambda _: None).fit()
    assert task.model.embed.weight[dog].tolist() == [0.5] * 8  # frozen
    assert task.evaluate()["accuracy"] == 1.0
    assert task.default_metric == "accuracy"


def test_confusion_table_counts():
    table = confusion_table([["A", "B", "B"]], [["A", "A", "B"]])
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[2:]}
    assert rows == {"A": ["1", "0"], "B": ["1", "1"]}
    # A tag that only the predictions use still gets its column.
    table = confusion_table([["O", "B-PER", "O"]], [["B-LOC", "B-PER", "B-LOC"]])
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[2:]}
    header = table.splitlines()[1].split()
    assert rows["O"][header.index("B-LOC")] == "2"


@pytest.mark.parametrize("chars", ["lstm", "cnn"])
def test_char_features_ignore_padding(chars):
    from rnnkit.nn.embeddings import CharFeatures

    model = CharFeatures(10, 4, 5, kind=chars).eval()
    word = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[3, 4, 5, 0, 0, 0], [6, 0, 0, 0, 0, 0]])
    alone = model(word, torch.tensor([3]))
    together = model(padded, torch.tensor([3, 1]))
    assert torch.allclose(alone[0], together[0], atol=1e-6)
