import json

import pytest
import torch

from rnnkit.config import from_dict
from rnnkit.data.text import as_streams, tokenize, windows
from rnnkit.nn.sampling import filter_logits, sample_next
from rnnkit.tasks.lm import LMConfig, LMTask

from .conftest import run_cli


def _task(path, **sections) -> LMTask:
    raw = {"data": {"train": str(path), "dev": str(path), "eval_streams": 1}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    torch.manual_seed(0)
    return LMTask.build(from_dict(LMConfig, raw))


def test_streams_are_contiguous_slices_and_windows_tile_them():
    ids = torch.arange(103)
    rows = as_streams(ids, 4)
    assert rows.shape == (4, 25)
    assert rows[1].tolist() == list(range(25, 50))
    spans = windows(rows, bptt=10)
    assert spans == [(0, 10), (10, 10), (20, 4)]
    # Every position but the first of a row is predicted exactly once.
    assert sum(length for _, length in spans) == rows.shape[1] - 1
    assert windows(rows, bptt=10, offset=3)[0] == (3, 10)


def test_word_tokens_close_lines_with_eos():
    assert tokenize("a b\n\nc\n", "word") == ["a", "b", "<eos>", "<eos>", "c", "<eos>"]


def test_state_is_carried_across_windows_but_gradients_are_cut(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefgh" * 40)
    task = _task(path, data={"bptt": 8, "random_offset": False}, train={"batch_size": 2})
    model = task.model.eval()
    first, second, *_ = list(task.train_batches(1))
    assert first["reset"] and not second["reset"]
    model.loss(first).backward()
    assert all(not s.requires_grad for s in model.carry)
    carried = model.loss(second)
    carried.backward()  # would fail if the graph still reached into the first window
    model.carry = None
    fresh = model.loss({**second, "reset": True})
    assert not torch.allclose(carried, fresh)


def test_temperature_zero_is_greedy_and_needs_no_randomness():
    logits = torch.randn(5, 30)
    assert torch.equal(sample_next(logits, temperature=0), logits.argmax(-1))


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.81)).tolist() == [[False, False, False, True]]
    assert not torch.isinf(filter_logits(logits, top_p=0.1))[0, 0]
    g = torch.Generator().manual_seed(0)
    draws = sample_next(logits.expand(4000, -1), 1.0, top_k=3, generator=g)
    assert set(draws.tolist()) == {0, 1, 2}
    share = (draws == 0).float().mean()
    assert abs(share - 0.5 / 0.95) < 0.03  # renormalised over the kept tokens


def _fit(task: LMTask, steps: int, lr: float = 0.01) -> None:
    model = task.model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    done = 0
    while done < steps:
        for batch in task.train_batches(done):
            optimizer.zero_grad()
            model.loss(batch).backward()
            optimizer.step()
            done += 1
    model.eval()


SMALL = {"embedding_dim": 16, "hidden_size": 64, "layers": 1, "dropout": 0.0}


def test_seed_toy_completes_good_to_good_i_am_fine(tmp_path):
    path = tmp_path / "three.txt"
    path.write_text("hey how are you\ngood i am fine\nhave a nice day\n" * 20)
    task = _task(
        path,
        data={"bptt": 32, "random_offset": False},
        model={**SMALL, "embedding_dropout": 0.0},
        train={"batch_size": 1},
    )
    _fit(task, steps=250)
    assert task.predict(["good"], length=10, temperature=0) == [
        {"prompt": "good", "text": " i am fine"}
    ]


def test_seed_toy_hihell_to_ihello(tmp_path):
    path = tmp_path / "hihello.txt"
    path.write_text("hihello")
    task = _task(
        path,
        data={"bptt": 6, "random_offset": False},
        model={**SMALL, "embedding_dropout": 0.0},
        train={"batch_size": 1},
    )
    _fit(task, steps=100)
    ids = torch.tensor([task.vocab.encode(list("hihell"))])
    features, _ = task.model(ids)
    guess = task.model.log_probs(features).argmax(-1)[0].tolist()
    assert "".join(task.vocab.decode(guess)) == "ihello"


@pytest.mark.parametrize("variant", [{"tie_weights": True}, {"adaptive_softmax": True}])
def test_tied_and_adaptive_heads_save_and_reload_exactly(tmp_path, variant):
    from rnnkit import checkpoint as ckpt

    path = tmp_path / "w.txt"
    path.write_text(" ".join(f"w{i % 37}" for i in range(3000)))
    task = _task(path, data={"level": "word"}, model={**SMALL, **variant, "cutoffs": [5, 20]})
    ckpt.save_model(tmp_path / "m", task)
    loaded = LMTask.from_dir(tmp_path / "m")
    ids = task.ids("dev")[:50].view(1, -1)
    task.model.eval()
    with torch.no_grad():
        a = task.model.log_probs(task.model(ids)[0])
        b = loaded.model.log_probs(loaded.model(ids)[0])
        # The summed NLL agrees with the log-probabilities it is made of.
        nll = task.model.nll(task.model(ids[:, :-1])[0], ids[:, 1:])
    assert torch.equal(a, b)
    expected = -a[:, :-1].gather(-1, ids[:, 1:, None]).sum()
    torch.testing.assert_close(nll, expected, rtol=1e-4, atol=1e-3)
    if variant.get("tie_weights"):
        assert loaded.model.out.weight is loaded.model.embed.weight


def test_train_generate_and_eval_through_the_cli(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("the cat sat on the mat. " * 200)
    out = tmp_path / "lm"
    result = run_cli(
        "train", "lm", "--out", str(out), f"data.train={text}", "data.bptt=32",
        "model.embedding_dim=16", "model.hidden_size=48", "model.layers=1",
        "train.epochs=6", "train.batch_size=8", "train.lr=0.01",
        "train.progress=false", "train.device=cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    greedy = [
        run_cli("generate", "--model", str(out), "--prompt", "the ", "--length", "40",
                "--temperature", "0").stdout
        for _ in range(2)
    ]  # fmt: skip
    assert greedy[0] == greedy[1] and greedy[0].startswith("the ")
    assert len(greedy[0]) == len("the ") + 40 + 1
    sampled = [
        run_cli("generate", "--model", str(out), "--length", "30", "--temperature", "3",
                "--seed", str(s)).stdout
        for s in (1, 1, 2)
    ]  # fmt: skip
    assert sampled[0] == sampled[1] != sampled[2]
    result = run_cli("eval", "--model", str(out), "--json")
    metrics = json.loads(result.stdout)
    assert set(metrics) == {"loss", "perplexity", "bpc"}
    assert metrics["bpc"] < 2.0  # the text is very repetitive
    result = run_cli("eval", "--model", str(out), "--data", str(text), "--json")
    assert json.loads(result.stdout)["loss"] < 1.4


def test_generate_refuses_bad_options(tmp_path):
    result = run_cli("generate", "--model", str(tmp_path), "--top-p", "0")
    assert result.returncode == 2 and "options.top_p" in result.stderr


def test_generation_starts_as_if_after_a_line_break(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("ab\nba\n" * 50)
    task = _task(path, model=SMALL)
    task.model.eval()
    ids = torch.tensor([task.vocab.encode(list("\nab"))])
    with torch.no_grad():
        features, _ = task.model(ids)
        first = task.model.log_probs(features[:, -1])
    first[:, task.vocab.stoi["<pad>"]] = float("-inf")
    first[:, task.vocab.stoi["<unk>"]] = float("-inf")
    expected = task.vocab.itos[int(first.argmax())]
    assert next(task.generate("ab", length=1, temperature=0)) == expected


def test_unseeded_generation_leaves_the_global_rng_alone(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abc " * 100)
    task = _task(path, model=SMALL)
    torch.manual_seed(123)
    expected = torch.rand(3)  # what the caller's next draw is without any generation between
    torch.manual_seed(123)
    before = torch.get_rng_state()
    assert len("".join(task.generate("ab", length=5))) == 5  # seed None: freshly seeded
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(torch.rand(3), expected)


def test_empty_prompt_works_on_a_corpus_without_line_breaks(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abc " * 100)
    task = _task(path, model=SMALL)
    assert len("".join(task.generate("", length=7, seed=0))) == 7


def test_every_epoch_of_a_short_text_has_windows(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("a short text. " * 40)  # rows of about 7 tokens, far below bptt=128
    task = _task(path, train={"batch_size": 64})
    assert all(len(task.train_batches(epoch)) > 0 for epoch in range(1, 50))


def test_relative_paths_are_found_here_first_then_in_the_data_dir(tmp_path, monkeypatch):
    from rnnkit.data.text import resolve_data_path

    (tmp_path / "here.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    assert resolve_data_path("here.txt", tmp_path / "data") == tmp_path.joinpath(
        "here.txt"
    ).relative_to(tmp_path)
    assert resolve_data_path("there.txt", tmp_path / "data") == tmp_path / "data" / "there.txt"


def test_word_lm_takes_pretrained_embeddings(tmp_path, caplog):
    from rnnkit.data.vectors import write_vectors

    path = tmp_path / "w.txt"
    path.write_text("the cat sat\nthe dog ran\n" * 20)
    vectors = tmp_path / "v.txt"
    write_vectors(vectors, ["cat", "dog"], torch.tensor([[1.0] * 8, [2.0] * 8]))
    model = {**SMALL, "embedding_dim": 8, "pretrained": str(vectors), "freeze": True}
    with caplog.at_level("INFO", logger="rnnkit"):
        task = _task(path, data={"level": "word"}, model=model)
    assert "2 of 6 tokens found" in caplog.text  # the, cat, sat, dog, ran, <eos>
    assert task.model.embed.weight[task.vocab.stoi["dog"]].tolist() == [2.0] * 8
    assert not task.model.embed.weight.requires_grad


def test_a_tiny_temperature_samples_the_best_token_instead_of_nan():
    logits = torch.tensor([[2.0, 1.0, float("-inf"), 0.5]])
    for temperature in (1e-300, 1e-30, 5e-324):
        assert sample_next(logits, temperature).tolist() == [0]


def test_two_processes_read_disjoint_streams_that_make_up_the_one_process_batch(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(" ".join(f"w{i}" for i in range(3000)))  # every position its own word
    task = _task(path, data={"level": "word", "bptt": 16}, train={"batch_size": 6})
    whole = list(task.train_batches(1))
    shares = [list(task.train_batches(1, rank, 2)) for rank in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == len(whole)
    for batch, mine, theirs in zip(whole, *shares, strict=True):
        assert torch.equal(mine["input"], batch["input"][0::2])
        assert torch.equal(theirs["input"], batch["input"][1::2])
    read = [{int(i) for b in share for i in b["input"].flatten()} for share in shares]
    assert not read[0] & read[1]  # no position of the text is read by both processes
    assert read[0] | read[1] == {int(i) for b in whole for i in b["input"].flatten()}
