import json
import random

import pytest
import torch

from rnnkit import checkpoint as ckpt
from rnnkit.config import from_dict
from rnnkit.data import contexts as ctx
from rnnkit.data.vectors import read_vectors, write_vectors
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError, DataError
from rnnkit.nn.similarity import WordVectors
from rnnkit.tasks import embed
from rnnkit.tasks.embed import EmbedConfig, EmbedTask

from .conftest import run_cli

WORDS = "cat dog cow fish meat milk eats drinks the a big small".split()


def _corpus(path, lines=300, seed=0):
    """Sentences from a tiny grammar: animals eat foods, with some filler words."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        animal = rng.choice(["cat", "dog", "cow"])
        food = rng.choice(["fish", "meat", "milk"])
        verb = "drinks" if food == "milk" else "eats"
        out.append(
            f"the {rng.choice(['big', 'small'])} {animal} {verb} {rng.choice(['a', 'the'])} {food}"
        )
    path.write_text("\n".join(out) + "\n")
    return path


def _task(path, **sections) -> EmbedTask:
    raw = {
        "data": {"train": str(path), "min_freq": 1, "subsample": 0, "eval_examples": 500},
        "model": {"embedding_dim": 8},
        "train": {"batch_size": 64, "device": "cpu", "progress": False},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    torch.manual_seed(0)
    return EmbedTask.build(from_dict(EmbedConfig, raw))


# ------------------------------------------------------------------ vector files
@pytest.mark.parametrize("fmt", ["word2vec", "glove"])
def test_vector_files_round_trip_to_printed_precision(tmp_path, fmt):
    words = ["the", "King", "naïve", "3", "<unk>"]
    vectors = torch.randn(5, 7) * 10
    path = tmp_path / f"v.{fmt}.txt"
    write_vectors(path, words, vectors, format=fmt)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert (first == "5 7") == (fmt == "word2vec")
    read_words, read = read_vectors(path)
    assert read_words == words
    torch.testing.assert_close(read, vectors, rtol=1e-5, atol=1e-6)


def test_vector_files_refuse_bad_words_and_name_bad_lines(tmp_path):
    with pytest.raises(DataError, match="whitespace"):
        write_vectors(tmp_path / "x.txt", ["two words"], torch.zeros(1, 2))
    bad = tmp_path / "bad.txt"
    bad.write_text("2 3\nthe 1 2 3\ncat 1 2\n")
    with pytest.raises(DataError, match=r"bad\.txt:3: vector has 2 numbers, expected 3"):
        read_vectors(bad)


# ------------------------------------------------------------------------ queries
def test_neighbours_rank_by_cosine_and_leave_the_query_out():
    vectors = WordVectors(
        ["east", "northeast", "north", "west", "France"],
        torch.tensor([[1.0, 0.0], [3.0, 3.2], [0.0, 0.5], [-2.0, 0.0], [1.0, 0.1]]),
    )
    (ranked,) = vectors.neighbors(["east"], k=10)
    assert [w for w, _ in ranked] == ["France", "northeast", "north", "west"]
    assert ranked[-1][1] == pytest.approx(-1.0)
    assert ranked[0][1] == pytest.approx(1 / (1.01**0.5), abs=1e-6)
    # Case-insensitive fallback, several queries in one product, k bounds the list.
    a, b = vectors.neighbors(["france", "north"], k=2)
    assert [w for w, _ in a] == ["east", "northeast"]
    assert [w for w, _ in b] == ["northeast", "France"]
    with pytest.raises(DataError, match="nowhere, nothing"):
        vectors.neighbors(["east", "nowhere", "nothing"])


def test_analogy_finds_the_fourth_word_and_leaves_the_three_out():
    royal, male, female, other = torch.eye(4)
    table = {
        "king": royal + male,
        "queen": royal + female,
        "man": male,
        "woman": female,
        "prince": 0.5 * royal + male + other,
        "apple": other,
    }
    vectors = WordVectors(list(table), torch.stack(list(table.values())))
    (ranked,) = vectors.analogy([("king", "man", "woman")], k=3)
    assert ranked[0][0] == "queen"
    assert not {"king", "man", "woman"} & {w for w, _ in ranked}
    # Two analogies in one batch (one matrix product): queen - woman + man = king.
    first, second = vectors.analogy([("king", "man", "woman"), ("queen", "woman", "man")], k=1)
    assert first[0][0] == "queen" and second[0][0] == "king"


# ----------------------------------------------------------------------- examples
def test_skipgram_pairs_are_exact_on_a_tiny_corpus():
    # Sentence 0: positions 0-3, sentence 1: positions 4-5. Fixed window 2, no subsampling.
    sentences = torch.tensor([0, 0, 0, 0, 1, 1])
    sizes = torch.full((6,), 2)
    centres, contexts = ctx.skipgram_pairs(sentences, sizes)
    got = sorted(zip(centres.tolist(), contexts.tolist(), strict=True))
    want = sorted(
        (i, j)
        for i in range(6)
        for j in range(6)
        if i != j and abs(i - j) <= 2 and sentences[i] == sentences[j]
    )
    assert got == want
    assert ctx.count_skipgram_pairs(sentences, sizes) == len(want)
    # Per-centre windows (word2vec's reduced window) and a chunk of centres.
    sizes = torch.tensor([1, 2, 1, 1, 2, 1])
    centres, contexts = ctx.skipgram_pairs(sentences, sizes, start=1, stop=3)
    got = sorted(zip(centres.tolist(), contexts.tolist(), strict=True))
    assert got == [(1, 0), (1, 2), (1, 3), (2, 1), (2, 3)]


def test_cbow_and_ngram_rows_are_exact():
    sentences = torch.tensor([0, 0, 0, 1, 1])
    centres, slots = ctx.cbow_rows(sentences, torch.tensor([1, 2, 1, 1, 1]), window=2)
    assert centres.tolist() == [0, 1, 2, 3, 4]
    # Offsets in the order -1, +1, -2, +2; -1 marks an empty slot.
    assert slots.tolist() == [
        [-1, 1, -1, -1],
        [0, 2, -1, -1],
        [1, -1, -1, -1],
        [-1, 4, -1, -1],
        [3, -1, -1, -1],
    ]
    assert ctx.count_cbow_rows(sentences, torch.tensor([1, 2, 1, 1, 1]), 2) == 5
    # A one-word sentence has no context and gives no row.
    centres, _ = ctx.cbow_rows(torch.tensor([0, 1, 1]), torch.ones(3, dtype=torch.long), 1)
    assert centres.tolist() == [1, 2]
    targets, before = ctx.ngram_rows(torch.tensor([0, 0, 0, 0, 1, 1, 1]), context=2)
    assert targets.tolist() == [2, 3, 6]
    assert before.tolist() == [[0, 1], [1, 2], [4, 5]]
    keep = torch.tensor([True, True, True, False, True, True, True])
    assert ctx.ngram_rows(torch.tensor([0, 0, 0, 0, 1, 1, 1]), 2, keep)[0].tolist() == [2, 6]


def test_encode_lines_drops_unknown_words_and_numbers_sentences():
    vocab = Vocab(["a", "b"])  # <pad>, <unk>, a, b
    ids, sentences = ctx.encode_lines(["a x b", "", "<unk> b"], vocab)
    assert ids.tolist() == [2, 3, 3]
    assert sentences.tolist() == [0, 0, 2]


def test_subsampling_follows_mikolovs_formula():
    counts = torch.tensor([0, 0, 9000, 900, 100])
    keep = ctx.keep_probabilities(counts, 1e-2)
    f = counts[2:].double() / 10_000
    want = ((f / 1e-2).sqrt() + 1) * 1e-2 / f
    torch.testing.assert_close(keep[2:].double(), want.clamp(max=1), rtol=1e-6, atol=0)
    assert keep[4] == 1.0 and keep[2] < keep[3] < 1
    assert torch.all(ctx.keep_probabilities(counts, 0) == 1)
    g = torch.Generator().manual_seed(0)
    ids = torch.full((20_000,), 2)
    kept, _ = ctx.subsample(ids, torch.zeros_like(ids), keep, g)
    assert kept.numel() / ids.numel() == pytest.approx(float(keep[2]), abs=0.02)


def test_noise_table_is_proportional_to_count_power():
    counts = torch.tensor([0, 0, 1000, 100, 10, 1])
    table = ctx.noise_table(counts, power=0.75, size=1_000_000)
    share = torch.bincount(table.long(), minlength=6).double() / table.numel()
    want = counts.double() ** 0.75
    want /= want.sum()
    torch.testing.assert_close(share, want, atol=2e-6, rtol=0)
    assert share[0] == 0 and share[1] == 0
    negatives = ctx.draw_negatives(table, (3, 4), torch.Generator().manual_seed(0))
    assert negatives.shape == (3, 4) and negatives.dtype == torch.long


# -------------------------------------------------------------------------- task
@pytest.mark.parametrize("method", ["skipgram", "cbow", "ngram"])
def test_epoch_batches_cover_every_example_once_and_repeat(tmp_path, method):
    train = {"optimizer": "adam"} if method == "ngram" else {}
    task = _task(_corpus(tmp_path / "c.txt", lines=80), model={"method": method}, train=train)
    epoch = task.train_batches(1)
    batches = list(epoch)
    assert len(batches) == len(epoch)
    assert sum(b["target"].numel() for b in batches) == epoch.examples
    assert all(b["target"].numel() == 64 for b in batches[:-1])
    assert all(b["negatives"].shape == (b["target"].numel(), 5) for b in batches)
    again = list(task.train_batches(1))
    assert all(torch.equal(a["input"], b["input"]) for a, b in zip(batches, again, strict=True))
    other = list(task.train_batches(2))[0]  # another epoch: other windows and noise words
    assert not all(torch.equal(other[k], batches[0][k]) for k in ("input", "negatives"))


@pytest.mark.parametrize(
    ("method", "loss", "optimizer"),
    [("skipgram", "negative", "sgd"), ("cbow", "negative", "sgd"), ("ngram", "softmax", "adam")],
)
def test_training_lowers_the_held_out_loss(tmp_path, method, loss, optimizer):
    lr = 0.01 if optimizer == "adam" else 0.05
    task = _task(
        _corpus(tmp_path / "c.txt"),
        model={"method": method, "loss": loss},
        train={"optimizer": optimizer, "lr": lr},
    )
    params = [p for p in task.model.parameters()]
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(params, lr=lr)
    before = task.evaluate()
    for epoch in (1, 2, 3):
        for batch in task.train_batches(epoch):
            opt.zero_grad()
            task.model.loss(batch).backward()
            opt.step()
    after = task.evaluate()
    assert after["loss"] < before["loss"] - 0.1
    assert after["coverage"] == 1.0
    assert ("perplexity" in after) == (loss == "softmax")


def test_loss_value_is_the_mean_and_its_gradient_the_sum(tmp_path):
    task = _task(_corpus(tmp_path / "c.txt", lines=40))
    batch = next(iter(task.train_batches(1)))
    per = task.model.example_losses(batch)
    value = task.model.loss(batch)
    assert float(value.detach()) == pytest.approx(float(per.mean().detach()), rel=1e-6)
    value.backward()
    by_loss = task.model.embed.weight.grad.to_dense().clone()
    task.model.zero_grad()
    task.model.example_losses(batch).sum().backward()
    torch.testing.assert_close(by_loss, task.model.embed.weight.grad.to_dense())


def test_config_refuses_what_sparse_sgd_cannot_do():
    base = {"data": {"train": "x.txt"}}
    with pytest.raises(ConfigError, match="clip_norm"):
        from_dict(EmbedConfig, {**base, "train": {"clip_norm": 1.0}})
    with pytest.raises(ConfigError, match="adam"):
        from_dict(EmbedConfig, {**base, "model": {"method": "ngram"}})
    from_dict(EmbedConfig, {**base, "model": {"method": "ngram"}, "train": {"optimizer": "adam"}})
    with pytest.raises(ConfigError, match="data.window"):
        from_dict(EmbedConfig, {"data": {"train": "x.txt", "window": 0}})


def test_saved_model_gives_the_same_vectors_and_scores(tmp_path):
    path = _corpus(tmp_path / "c.txt", lines=60)
    task = _task(path, data={"dev": str(path)})
    for batch in task.train_batches(1):
        task.model.loss(batch).backward()
        with torch.no_grad():
            for p in task.model.parameters():
                p.add_(p.grad.to_dense(), alpha=-0.05)
                p.grad = None
    ckpt.save_model(tmp_path / "m", task)
    again = EmbedTask.from_dir(tmp_path / "m")
    assert again.vocab == task.vocab and torch.equal(again.counts, task.counts)
    mine, theirs = task.word_vectors(), again.word_vectors()
    assert mine.words == theirs.words and "<unk>" not in mine.words
    assert torch.equal(mine.vectors, theirs.vectors)
    assert again.evaluate_file(path) == task.evaluate("dev")
    assert again.predict(["cat"], k=2)[0]["neighbors"][0]["word"] in WORDS


def test_train_export_and_query_through_the_cli(tmp_path):
    corpus = _corpus(tmp_path / "c.txt")
    out = tmp_path / "model"
    run = run_cli(
        "train", "embed", "--out", str(out), f"data.train={corpus}", "data.min_freq=1",
        "model.method=cbow", "model.embedding_dim=8", "train.epochs=2", "train.batch_size=128",
        "train.progress=false", "train.device=cpu", "data.eval_examples=300",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "best dev loss" in run.stdout and "coverage" in run.stderr
    vectors = tmp_path / "v.txt"
    run = run_cli(
        "embed", "export", "--model", str(out), "--out", str(vectors), "--format", "glove"
    )
    assert run.returncode == 0, run.stderr
    first = vectors.read_text(encoding="utf-8").splitlines()[0].split()
    assert len(first) == 9 and first[0] in WORDS  # GloVe: no header line
    run = run_cli("neighbors", "--vectors", str(vectors), "cat", "milk", "-k", "3", "--json")
    assert run.returncode == 0, run.stderr
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    assert [a["word"] for a in answers] == ["cat", "milk"]
    assert all(len(a["neighbors"]) == 3 for a in answers)
    assert "cat" not in {n["word"] for n in answers[0]["neighbors"]}
    run = run_cli("analogy", "--model", str(out), "cat", "fish", "milk", "-k", "2")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "cat - fish + milk"
    run = run_cli("neighbors", "--model", str(out), "unicorn", "cat", "--json")
    assert run.returncode == 0, run.stderr  # an unknown word is an answer, not an error
    unknown, cat = (json.loads(line) for line in run.stdout.splitlines())
    assert unknown == {"word": "unicorn", "known": False, "neighbors": []}
    assert cat["known"] and len(cat["neighbors"]) == 10


@pytest.mark.parametrize("method", ["skipgram", "cbow"])
def test_a_text_of_several_segments_and_each_process_share(tmp_path, monkeypatch, method):
    monkeypatch.setattr(embed, "SEGMENT", 200)  # whole lines, about 30 of them each
    task = _task(_corpus(tmp_path / "c.txt"), model={"method": method})
    epoch = task.train_batches(1)
    assert len(epoch.parts) > 5
    batches = list(epoch)
    assert len(batches) == len(epoch)
    assert sum(b["target"].numel() for b in batches) == epoch.examples
    sizes = [b["target"].numel() for b in batches]
    assert sizes.count(64) >= len(batches) - len(epoch.parts)  # one short batch a segment
    again = list(task.train_batches(1))
    assert all(torch.equal(a["target"], b["target"]) for a, b in zip(batches, again, strict=True))
    shares = [list(task.train_batches(1, rank, 2)) for rank in (0, 1)]
    whole = [b for b in batches if b["target"].numel() >= 2]
    for batch, *parts in zip(whole, *shares, strict=True):  # contiguous halves, in rank order
        for key in ("target", "negatives", "input"):
            assert torch.equal(torch.cat([p[key] for p in parts]), batch[key])


def test_an_epoch_started_at_a_batch_skips_the_segments_before_it(tmp_path, monkeypatch):
    monkeypatch.setattr(embed, "SEGMENT", 200)
    task = _task(_corpus(tmp_path / "c.txt"))
    epoch = task.train_batches(1)
    batches = list(epoch)
    for first in (0, 1, epoch.parts[0][2], epoch.parts[0][2] + 3, len(batches) - 1):
        rest = list(epoch.starting_at(first))
        assert len(rest) == len(batches) - first
        assert all(
            torch.equal(a["target"], b["target"])
            for a, b in zip(rest, batches[first:], strict=True)
        )
