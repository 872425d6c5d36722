"""Text classification on small generated data: readers, features, pooling, train → use."""

import json
import math
import random

import pytest
import torch

from rnnkit import checkpoint as ckpt
from rnnkit.config import from_dict, parse_overrides, read_yaml
from rnnkit.data.labeled import Example, hold_out, read_trec, read_tsv
from rnnkit.data.vectors import write_vectors
from rnnkit.errors import ConfigError, DataError
from rnnkit.nn.classifiers import NeuralClassifier
from rnnkit.nn.pooling import Pooling
from rnnkit.tasks import build_task
from rnnkit.tasks.classify import ClassifyConfig, ClassifyTask, ngrams
from rnnkit.train import Trainer
from tests.conftest import ROOT, run_cli

TOPICS = {
    "animal": ["dog", "cat", "horse", "cow", "bird"],
    "food": ["bread", "cheese", "apple", "soup", "rice"],
    "place": ["paris", "lima", "oslo", "river", "mountain"],
}
FILLER = ["i", "saw", "a", "the", "some", "near", "we", "like", "big", "old"]


def write_tsv(path, n, seed):
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        label = rng.choice(sorted(TOPICS))
        words = rng.choices(FILLER, k=rng.randint(1, 4)) + [rng.choice(TOPICS[label])]
        rng.shuffle(words)
        lines.append(f"{label}\t{' '.join(words)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tsv_overrides(tmp_path, *extra):
    files = {s: write_tsv(tmp_path / f"{s}.tsv", n, i) for i, (s, n) in enumerate(
        [("train", 150), ("dev", 40), ("test", 40)]
    )}  # fmt: skip
    return [
        *(f"data.{s}={p}" for s, p in files.items()),
        "model.embedding_dim=16",
        "model.hidden_size=16",
        "model.attention_dim=8",
        "model.dropout=0.1",
        "train.epochs=6",
        "train.batch_size=16",
        "train.lr=0.02",
        "train.progress=false",
        "train.device=cpu",
        *extra,
    ]


def config_from(overrides):
    return from_dict(ClassifyConfig, parse_overrides(overrides))


# ---------------------------------------------------------------------------- readers
def test_read_tsv_bom_crlf_blank_lines_and_first_tab(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_bytes("\ufeffen\tHello there\r\n\r\nfr\tUn\ttab dedans\r\n".encode())
    assert read_tsv(path) == [Example("Hello there", "en", 1), Example("Un\ttab dedans", "fr", 3)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("no tab here", "expected 'label<TAB>text', found no tab: 'no tab here'"),
        ("\tsome text", "empty label before the tab"),
        ("en\t  ", "no text after the label 'en'"),
    ],
)
def test_read_tsv_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.tsv"
    path.write_text(f"en\tfine\n\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_tsv(path)
    assert str(err.value) == f"{path}:3: {message}"


def test_read_tsv_refuses_non_utf8_with_the_line(tmp_path):
    path = tmp_path / "latin.tsv"
    path.write_bytes(b"en\tok\nfr\tcaf\xe9\n")
    with pytest.raises(DataError, match=r"latin\.tsv:2: not UTF-8"):
        read_tsv(path)


def test_read_trec_coarse_fine_and_its_latin1_byte(tmp_path):
    path = tmp_path / "trec.label"
    # The real train_5500.label holds one byte 0xF0 (not UTF-8): it must be read, not refused.
    path.write_bytes(
        b"DESC:manner How did serfdom develop in and then leave Russia ?\n"
        b"LOC:city Which city has the oldest relationship as a sister\xf0city with Los Angeles ?\n"
    )
    coarse = read_trec(path)
    assert [ex.label for ex in coarse] == ["DESC", "LOC"]
    assert coarse[0].text == "How did serfdom develop in and then leave Russia ?"
    assert "sister\u00f0city" in coarse[1].text and coarse[1].line == 2
    assert [ex.label for ex in read_trec(path, "fine")] == ["DESC:manner", "LOC:city"]


EXPECTED = "expected 'COARSE:fine question ...', found label"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("LOC What is the capital of Peru ?", f"{EXPECTED} 'LOC'"),
        (":city Where is Lima ?", f"{EXPECTED} ':city'"),
        ("NUM:date", "no question after the label 'NUM:date'"),
    ],
)
def test_read_trec_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.label"
    path.write_text(f"HUM:ind Who wrote Hamlet ?\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_trec(path)
    assert str(err.value) == f"{path}:2: {message}"


def test_hold_out_is_fixed_stratified_and_keeps_duplicates_together():
    examples = [Example(f"q{i % 90}", "AB"[i % 90 < 30], i) for i in range(100)]  # q0..q9 twice
    examples.append(Example("lonely", "C", 100))
    train, dev = hold_out(examples, 0.2, seed=3)
    assert (train, dev) == hold_out(examples, 0.2, seed=3)
    assert hold_out(examples, 0.2, seed=4)[1] != dev
    assert {ex.text for ex in train}.isdisjoint(ex.text for ex in dev)
    texts = {label: {ex.text for ex in dev if ex.label == label} for label in "ABC"}
    assert (len(texts["A"]), len(texts["B"]), len(texts["C"])) == (12, 6, 0)  # 20% of 60, 30
    assert len(train) + len(dev) == len(examples)
    assert [ex.line for ex in dev] == sorted(ex.line for ex in dev)


# -------------------------------------------------------------------- bag-of-words features
def dense_vectors(task, texts):
    """The BoW model's input vectors x ``(texts, features)``, as the model computes them."""
    batch = task.collate([task.encode(t) for t in texts])
    weights = task.model.feature_weights(batch)
    out = torch.zeros(len(texts), len(task.vocab))
    bounds = [*batch["offsets"].tolist(), len(weights)]
    for row in range(len(texts)):
        for k in range(bounds[row], bounds[row + 1]):
            out[row, batch["features"][k]] += weights[k]
    return out


def bow_task(tmp_path, lines, *extra):
    path = tmp_path / "bow.tsv"
    path.write_text("".join(f"{label}\t{text}\n" for label, text in lines), encoding="utf-8")
    overrides = [f"data.train={path}", f"data.dev={path}", "model.kind=bow", *extra]
    return build_task("classify", config_from(overrides))


def test_ngrams():
    assert ngrams(["a", "b", "c"], 1, 2) == ["a", "b", "c", "a b", "b c"]
    assert ngrams(list("abc"), 2, 3, joiner="") == ["ab", "bc", "abc"]
    assert ngrams(["a"], 2, 3) == []


def test_bow_counts_by_hand(tmp_path):
    task = bow_task(tmp_path, [("x", "Hello hello world"), ("y", "world peace")])
    assert task.vocab.itos == ["hello", "world", "peace"]  # by frequency, then text
    x = dense_vectors(task, ["hello world hello HELLO", "unseen words only", "peace"])
    assert x.tolist() == [[3, 1, 0], [0, 0, 0], [0, 0, 1]]
    # Word bigrams, and character n-grams (spaces included, runs squeezed).
    task = bow_task(tmp_path, [("x", "a b a b")], "model.ngram_max=2")
    assert dense_vectors(task, ["a b a b"]).tolist() == [[2, 2, 2, 1]]  # a, b, "a b", "b a"
    assert task.vocab.itos == ["a", "a b", "b", "b a"]
    task = bow_task(tmp_path, [("x", "ab  a")], "data.tokenize=chars", "model.ngram_max=2")
    assert sorted(task.vocab.itos) == [" ", " a", "a", "ab", "b", "b "]
    assert dense_vectors(task, ["aba"])[0, task.vocab.stoi["a"]] == 2


def test_bow_tfidf_by_hand_and_like_scikit_learn(tmp_path):
    docs = [("x", "a a b"), ("y", "b c"), ("x", "a c c d")]
    task = bow_task(tmp_path, docs, "model.features=tfidf")
    n, df = 3, {"a": 2, "b": 2, "c": 2, "d": 1}
    idf = {w: math.log((1 + n) / (1 + df[w])) + 1 for w in df}
    x = dense_vectors(task, ["a a b c", "d"])
    col = task.vocab.stoi
    expected = [{"a": 2 * idf["a"], "b": idf["b"], "c": idf["c"]}, {"d": idf["d"]}]
    for row, want in enumerate(expected):
        assert x[row].tolist() == pytest.approx([want.get(w, 0.0) for w in task.vocab.itos])
    assert x[1, col["d"]] == pytest.approx(math.log(2) + 1)
    # With l2 normalisation, the vectors are scikit-learn's TfidfVectorizer's.
    from sklearn.feature_extraction.text import TfidfVectorizer

    task = bow_task(tmp_path, docs, "model.features=tfidf", "model.norm=l2", "model.ngram_max=2")
    texts = [text for _, text in docs]
    sk = TfidfVectorizer(token_pattern=r"\S+", ngram_range=(1, 2)).fit(texts)
    names = list(sk.get_feature_names_out())
    ours = dense_vectors(task, texts)[:, [task.vocab.stoi[f] for f in names]]
    assert torch.allclose(ours, torch.tensor(sk.transform(texts).toarray()).float(), atol=1e-6)
    # The idf is part of the saved model: a reloaded model computes the same vectors.
    ckpt.save_model(tmp_path / "tfidf", task)
    again = ClassifyTask.from_dir(tmp_path / "tfidf")
    assert torch.equal(dense_vectors(again, texts), dense_vectors(task, texts))


# ----------------------------------------------------------------------------- pooling
@pytest.mark.parametrize("kind", ["max", "mean", "attention"])
def test_pooling_ignores_padding(kind):
    pool = Pooling(6, kind, attention_dim=4)
    x = torch.randn(2, 5, 6)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    garbage = x.clone()
    garbage[0, 3:] = torch.tensor([1e4, -1e4, float("inf"), 7, 7, 7])  # padded positions
    alone = pool(x[:1, :3], torch.ones(1, 3, dtype=torch.bool))
    together = pool(garbage, mask)
    assert torch.allclose(together[0], alone[0], atol=1e-6)
    assert torch.isfinite(together).all()
    if kind == "mean":
        assert torch.allclose(alone[0], x[0, :3].mean(0), atol=1e-6)
    if kind == "max":
        assert torch.equal(alone[0], x[0, :3].amax(0))
    if kind == "attention":
        assert pool.weights[0, 3:].eq(0).all() and pool.weights.sum(1).allclose(torch.ones(2))


@pytest.mark.parametrize("kind", ["max", "mean", "attention"])
def test_neural_classifier_scores_a_text_the_same_alone_or_padded(kind):
    sizes = [
        "model.embedding_dim=8",
        "model.hidden_size=8",
        "model.layers=2",
        "model.attention_dim=4",
    ]
    config = config_from(["data.train=x", f"model.pooling={kind}", *sizes]).model
    model = NeuralClassifier(20, 3, config).eval()
    short = {"words": torch.tensor([[5, 6, 7]]), "mask": torch.ones(1, 3, dtype=torch.bool)}
    words = torch.tensor([[5, 6, 7, 0, 0, 0], [8, 9, 10, 11, 12, 13]])
    both = {"words": words, "mask": words != 0}
    assert torch.allclose(model.logits(short)[0], model.logits(both)[0], atol=1e-6)


# -------------------------------------------------------------------------- pretrained
def test_pretrained_vectors_found_missing_and_frozen(tmp_path, caplog):
    vectors = tmp_path / "vectors.txt"
    rows = torch.arange(3 * 16, dtype=torch.float32).reshape(3, 16) / 10
    write_vectors(vectors, ["dog", "cheese", "unrelated"], rows)
    overrides = tsv_overrides(
        tmp_path, f"model.pretrained={vectors}", "model.freeze=true", "train.epochs=1"
    )
    with caplog.at_level("INFO", logger="rnnkit"):
        task = build_task("classify", config_from(overrides))
    words = len(task.vocab) - 2
    assert task.pretrained_found == 2  # dog, cheese
    assert len(task.pretrained_missing) == words - 2 and "cat" in task.pretrained_missing
    assert f"2 of {words} words found" in caplog.text
    dog, cheese = task.vocab.stoi["dog"], task.vocab.stoi["cheese"]
    assert torch.equal(task.model.embed.weight[dog], rows[0])
    Trainer(task, task.config.train, tmp_path / "run", log=lambda _: None).fit()
    assert torch.equal(task.model.embed.weight[cheese], rows[1])  # frozen


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="model.pretrained needs model.kind=neural"):
        config_from(["data.train=x", "model.kind=bow", "model.pretrained=v.txt"])
    with pytest.raises(ConfigError, match="model.ngram_min"):
        config_from(["data.train=x", "model.kind=bow", "model.ngram_min=3", "model.ngram_max=2"])
    with pytest.raises(ConfigError, match="choices: max, mean, attention"):
        config_from(["data.train=x", "model.pooling=last"])
    with pytest.raises(ConfigError, match="data.dev_fraction"):
        config_from(["data.train=x", "data.dev_fraction=1.5"])


@pytest.mark.parametrize("name", ["trec", "trec-bow", "langid"])
def test_recipes_parse(name):
    config = from_dict(ClassifyConfig, read_yaml(ROOT / "configs" / f"{name}.yaml"))
    assert config.data.test


# ------------------------------------------------------------------------- end to end
def test_trec_bow_with_held_out_dev_learns_and_reloads(tmp_path):
    rng = random.Random(0)
    questions = {
        "HUM:ind": "Who wrote {} ?",
        "LOC:city": "Where is {} ?",
        "NUM:date": "When was {} built ?",
    }
    lines = []
    for i in range(120):
        label = rng.choice(sorted(questions))
        lines.append(f"{label} " + questions[label].format(f"thing{i % 40}"))
    (tmp_path / "train.label").write_text("\n".join(lines) + "\n", encoding="ascii")
    config = config_from(
        [f"data.train={tmp_path / 'train.label'}", "data.format=trec", "model.kind=bow",
         "data.dev_fraction=0.25", "train.lr=0.1", "train.epochs=5", "train.progress=false"]
    )  # fmt: skip
    task = build_task("classify", config)
    assert {ex.text for ex in task.examples("dev")}.isdisjoint(
        ex.text for ex in task.examples("train")
    )
    Trainer(task, config.train, tmp_path / "run", log=lambda _: None).fit()
    found = task.evaluate("dev")
    assert found["accuracy"] == 1.0
    assert task.predict(["Where is Lima ?"])[0]["label"] == "LOC"
    assert "NUM" in found.report and found.confusion[0] == ["HUM", "LOC", "NUM"]
    ckpt.save_model(tmp_path / "saved", task)  # the weights in memory, whatever the epoch
    reloaded = ClassifyTask.from_dir(tmp_path / "saved")
    questions = ["Who wrote it ?", "When was Lima built ?", "unknown words"]
    assert reloaded.predict(questions) == task.predict(questions)


def test_cli_train_classify_eval_and_reload(tmp_path):
    out = tmp_path / "model"
    overrides = tsv_overrides(tmp_path, "model.pooling=attention", "model.rnn=gru")
    run = run_cli("train", "classify", "--out", str(out), *overrides)
    assert run.returncode == 0, run.stderr
    assert (out / "labels.json").exists() and (out / "vocab.json").exists()

    task = ClassifyTask.from_dir(out)
    texts = [line.split("\t")[1] for line in (tmp_path / "test.tsv").read_text().splitlines()]
    texts += ["a dog near the river", "nothing known here", ""]
    before = task.predict(texts)
    assert task.evaluate("test")["accuracy"] > 0.9
    assert before[0]["label"] == max(before[0]["probabilities"], key=before[0]["probabilities"].get)
    assert list(before[0]["probabilities"]) == sorted(
        before[0]["probabilities"], key=lambda k: -before[0]["probabilities"][k]
    )
    assert sum(before[0]["probabilities"].values()) == pytest.approx(1.0)
    assert ClassifyTask.from_dir(out).predict(texts) == before  # exactly the same floats

    run = run_cli("classify", "--model", str(out), "the cat", "-", stdin="some rice\n\nparis\n")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    shown = [ln.split("\t") for ln in lines if not ln.startswith(" ")]
    # A blank line is an input too: it gets its answer, so outputs line up with inputs.
    assert [shown[0], shown[1], shown[3]] == [
        ["animal", "the cat"],
        ["food", "some rice"],
        ["place", "paris"],
    ]
    assert shown[2][1] == ""
    assert len(lines) == 4 * 4  # each text: its label line and the 3 labels there are

    (tmp_path / "in.txt").write_text("we like soup\n", encoding="utf-8")
    run = run_cli("classify", "--model", str(out), "--json", "--top", "2", "--file",
                  str(tmp_path / "in.txt"))  # fmt: skip
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    assert record["label"] == "food"
    assert list(record["probabilities"])[0] == "food" and len(record["probabilities"]) == 2
    expected = task.predict(["we like soup"])[0]["probabilities"]["food"]
    assert record["probabilities"]["food"] == expected

    run = run_cli("eval", "--model", str(out), "--json")
    assert run.returncode == 0, run.stderr
    metrics = json.loads(run.stdout)
    assert set(metrics) == {"accuracy", "macro_f1"} and 0.9 < metrics["accuracy"] <= 1
    # A reader never writes into the model directory: no picture unless --confusion asks.
    assert not list(out.glob("confusion-*")) and "confusion matrix" not in run.stderr
    png = tmp_path / "figs" / "dev.png"
    run = run_cli("eval", "--model", str(out), "--data", str(tmp_path / "dev.tsv"),
                  "--confusion", str(png))  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "macro_f1" in run.stdout and "precision" in run.stdout and "animal" in run.stdout
    assert "confusion (rows: gold" in run.stdout and png.exists()
    assert f"confusion matrix: {png}" in run.stderr


def test_bad_files_stop_training_before_it_starts(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("animal\tthe dog\nfood the soup\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.tsv:2: expected 'label<TAB>text'"):
        build_task("classify", config_from(tsv_overrides(tmp_path, f"data.test={bad}")))
    with pytest.raises(ConfigError, match="no data.test file"):
        task = build_task("classify", config_from(tsv_overrides(tmp_path, "data.test=")))
        task.evaluate("test")


def test_python_callers_find_recipe_data_in_rnnkit_data(tmp_path, monkeypatch):
    """rnnkit.load and build_task look up a recipe's relative paths as the CLI does."""
    import rnnkit

    data = tmp_path / "data"
    (data / "mini").mkdir(parents=True)
    for i, split in enumerate(("train", "dev", "test")):
        write_tsv(data / "mini" / f"{split}.tsv", 150 if split == "train" else 40, i)
    monkeypatch.setenv("RNNKIT_DATA", str(data))
    monkeypatch.chdir(tmp_path)  # mini/ is not here: only $RNNKIT_DATA has it
    config = config_from(
        ["data.format=tsv", "data.train=mini/train.tsv", "data.dev=mini/dev.tsv",
         "data.test=mini/test.tsv", "model.kind=bow", "train.lr=0.1", "train.epochs=5",
         "train.progress=false"]
    )  # fmt: skip
    Trainer(build_task("classify", config), config.train, tmp_path / "run", log=print).fit()
    assert rnnkit.load(tmp_path / "run").evaluate("test")["accuracy"] > 0.9
