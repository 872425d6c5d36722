"""word2vec's fast path: the hand-written negative-sampling gradient and its row updates, and
the vectorised example generation, each against a plain reference (autograd, a loop)."""

import random

import pytest
import torch

from rnnkit.config import from_dict
from rnnkit.data import contexts as ctx
from rnnkit.nn.word_embedder import EmbedModelConfig, RowGrad, WordEmbedder
from rnnkit.tasks.embed import EmbedConfig, EmbedTask


def _model(method: str, vocab: int = 30, dim: int = 7) -> WordEmbedder:
    torch.manual_seed(0)
    model = WordEmbedder(vocab, EmbedModelConfig(method=method, embedding_dim=dim), sparse=True)
    model = model.double()
    with torch.no_grad():  # word2vec starts the output vectors at 0: make every term count
        model.embed.weight.normal_()
        model.out.weight.normal_()
    return model


def _batch(method: str, flat: bool = False, size: int = 9, vocab: int = 30) -> dict:
    g = torch.Generator().manual_seed(1)
    target = torch.randint(2, vocab, (size,), generator=g)
    negatives = torch.randint(2, vocab, (size, 5), generator=g)
    negatives[0, 1] = target[0]  # a noise word equal to the target does not count
    negatives[2, :] = target[3]  # a word repeated in the batch: its rows add up
    if method == "skipgram":
        inputs = torch.randint(2, vocab, (size,), generator=g)
        inputs[4] = inputs[5]
        return {"input": inputs, "target": target, "negatives": negatives}
    inputs = torch.randint(2, vocab, (size, 4), generator=g)
    inputs[1, 2:] = 0  # <pad>: empty context slots
    inputs[3, 1:] = 0
    if not flat:
        return {"input": inputs, "target": target, "negatives": negatives}
    kept = inputs != 0
    sizes = kept.sum(1)
    return {
        "input": inputs[kept],
        "offsets": sizes.cumsum(0) - sizes,
        "target": target,
        "negatives": negatives,
    }


def _grads(model: WordEmbedder) -> list[torch.Tensor]:
    return [p.grad.to_dense().clone() for p in (model.embed.weight, model.out.weight)]


@pytest.mark.parametrize(("method", "flat"), [("skipgram", False), ("cbow", False), ("cbow", True)])
def test_hand_gradient_equals_autograd_in_float64(method, flat):
    model, batch = _model(method), _batch(method, flat)
    loss = model.loss(batch)  # the hand-written path (sparse SGD, negative sampling)
    loss.backward()
    assert type(model.embed.weight.grad) is RowGrad and type(model.out.weight.grad) is RowGrad
    hand = _grads(model)
    model.zero_grad()
    reference = model.example_losses(batch)  # autograd through the ordinary forward
    assert float(loss.detach()) == pytest.approx(float(reference.detach().mean()), rel=1e-12)
    reference.sum().backward()  # the loss's gradient is that of the sum
    for mine, theirs in zip(hand, _grads(model), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    assert hand[1].abs().sum() > 0 and hand[0].abs().sum() > 0


@pytest.mark.parametrize("method", ["skipgram", "cbow"])
def test_sgd_step_with_row_gradients_equals_the_dense_step(method):
    model, batch = _model(method), _batch(method)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    model.loss(batch).backward()
    dense = _grads(model)
    opt.step()  # RowGrad: adds the rows into the tables in place, once
    assert model.embed.weight.grad is None and model.out.weight.grad is None
    model.to(torch.float64)  # a conversion walks the gradients too: nothing left to convert
    for p, b, g in zip(model.parameters(), before, dense, strict=True):
        torch.testing.assert_close(p.detach(), b - 0.1 * g, rtol=0, atol=1e-12)
    # Rows never used stay bit-for-bit what they were.
    untouched = torch.ones(30, dtype=torch.bool)
    untouched[batch["target"]] = False
    untouched[batch["negatives"].flatten()] = False
    assert torch.equal(model.out.weight.detach()[untouched], before[1][untouched])


def test_row_gradients_accumulate_and_scale_as_autograd_does():
    model, batch = _model("skipgram"), _batch("skipgram")
    (model.loss(batch) * 3).backward()
    model.loss(batch).backward()  # a second backward adds to the first
    hand, grad = _grads(model), model.out.weight.grad
    model.zero_grad()
    (model.example_losses(batch).sum() * 4).backward()
    for mine, theirs in zip(hand, _grads(model), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    assert type(grad) is RowGrad
    grad.mul_(0.5)  # a scaling acts on the rows; other in-place changes are refused
    torch.testing.assert_close(grad.to_dense(), hand[1] * 0.5)
    with pytest.raises(TypeError, match="in place"):
        grad.add_(1.0)
    assert grad.shape == model.out.weight.shape and not grad.is_sparse
    torch.testing.assert_close(grad.norm(), (hand[1] * 0.5).norm())  # others see it dense


def test_no_gradient_path_without_grad_mode():
    model, batch = _model("cbow"), _batch("cbow")
    with torch.no_grad():
        value = model.loss(batch)
    reference = model.example_losses(batch).detach().mean()
    assert float(value) == pytest.approx(float(reference), rel=1e-12)
    assert model.embed.weight.grad is None


def test_padded_and_flat_cbow_batches_score_alike():
    model = _model("cbow")
    padded, flat = _batch("cbow"), _batch("cbow", flat=True)
    with torch.no_grad():
        torch.testing.assert_close(model.example_losses(padded), model.example_losses(flat))


# ----------------------------------------------------------------------- examples
def _brute_pairs(sentences: list[int], sizes: list[int], start: int, stop: int) -> list:
    n = len(sentences)
    return [
        (i, j)
        for i in range(start, stop)
        for j in range(i - sizes[i], i + sizes[i] + 1)
        if j != i and 0 <= j < n and sentences[j] == sentences[i]
    ]


def test_window_pairs_equal_a_loop_over_each_centre():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(0, 30)
        sentences = sorted(rng.randint(0, 5) for _ in range(n))
        sizes = [rng.randint(1, 3) for _ in range(n)]
        start = rng.randint(0, n)
        stop = rng.randint(start, n)
        left, right = ctx.spans(torch.tensor(sentences, dtype=torch.long), torch.tensor(sizes))
        centres, contexts = ctx.window_pairs(left, right, start, stop)
        got = list(zip(centres.tolist(), contexts.tolist(), strict=True))
        assert got == _brute_pairs(sentences, sizes, start, stop)  # same pairs, same order
        if n:  # the per-offset maker used for held-out examples agrees on the set
            c, x = ctx.skipgram_pairs(torch.tensor(sentences), torch.tensor(sizes), start, stop)
            assert sorted(zip(c.tolist(), x.tolist(), strict=True)) == sorted(got)


@pytest.mark.parametrize("method", ["skipgram", "cbow"])
def test_epoch_batches_are_the_windows_of_each_centre_in_text_order(tmp_path, method):
    rng = random.Random(0)
    words = "a b c d e f g h".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 9))) for _ in range(150)]
    path = tmp_path / "c.txt"
    path.write_text("\n".join(lines) + "\n")
    config = from_dict(
        EmbedConfig,
        {
            "data": {"train": str(path), "min_freq": 1, "subsample": 0.05, "eval_examples": 50},
            "model": {"method": method, "embedding_dim": 4},
            "train": {"batch_size": 7},
        },
    )
    epoch = EmbedTask.build(config).train_batches(1)
    plan = epoch.kept.plan  # a text of one segment: its plan is kept
    ids, sentences, sizes = plan.ids.tolist(), plan.sentences.tolist(), plan.sizes.tolist()
    pairs = _brute_pairs(sentences, sizes, 0, len(ids))  # after subsampling, given the windows
    got = []
    for batch in epoch:
        assert batch["negatives"].shape == (batch["target"].numel(), 5)
        if method == "skipgram":
            got += list(zip(batch["input"].tolist(), batch["target"].tolist(), strict=True))
            continue
        starts = batch["offsets"].tolist()
        ends = [*starts[1:], batch["input"].numel()]
        for begin, end, target in zip(starts, ends, batch["target"].tolist(), strict=True):
            got.append((tuple(batch["input"][begin:end].tolist()), target))
    if method == "skipgram":
        want = [(ids[i], ids[j]) for i, j in pairs]
    else:
        by_centre: dict[int, list[int]] = {}
        for i, j in pairs:
            by_centre.setdefault(i, []).append(ids[j])
        want = [(tuple(c), ids[i]) for i, c in sorted(by_centre.items())]
    assert got == want and len(got) == plan.count


def test_noise_sampler_draws_counts_to_the_power():
    counts = torch.tensor([0, 0, 1000, 100, 10, 1])
    sampler = ctx.NoiseSampler(counts, power=0.75)
    draws = sampler.draw((200_000,), torch.Generator().manual_seed(0))
    share = torch.bincount(draws, minlength=6).double() / draws.numel()
    want = counts.double() ** 0.75
    want /= want.sum()
    torch.testing.assert_close(share, want, atol=3e-3, rtol=0)
    assert share[0] == 0 and share[1] == 0 and draws.dtype == torch.long


def test_subsampling_keeps_each_word_with_word2vecs_probability():
    counts = torch.tensor([0, 0, 50_000, 5_000, 500, 50])
    keep = ctx.keep_probabilities(counts, 1e-3)
    ids = torch.repeat_interleave(torch.arange(6), counts)
    kept = torch.zeros(6)
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        out, _ = ctx.subsample(ids, torch.zeros_like(ids), keep, g)
        kept += torch.bincount(out, minlength=6)
    share = kept[2:] / (20 * counts[2:])
    f = counts[2:].double() / counts.sum()
    want = (((f / 1e-3).sqrt() + 1) * 1e-3 / f).clamp(max=1)
    torch.testing.assert_close(share.double(), want, atol=0.01, rtol=0)


@pytest.mark.parametrize("method", ["skipgram", "cbow"])
def test_a_seeded_run_repeats_bit_for_bit(tmp_path, method):
    path = tmp_path / "c.txt"
    rng = random.Random(0)
    path.write_text(
        "\n".join(" ".join(rng.choice("abcdefghij") for _ in range(12)) for _ in range(200))
    )
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        config = from_dict(
            EmbedConfig,
            {
                "data": {"train": str(path), "min_freq": 1, "eval_examples": 50},
                "model": {"method": method, "embedding_dim": 16},
                "train": {"batch_size": 64},
            },
        )
        task = EmbedTask.build(config)
        opt = torch.optim.SGD(task.model.parameters(), lr=0.05)
        for batch in task.train_batches(1):
            opt.zero_grad(set_to_none=True)
            task.model.loss(batch).backward()
            opt.step()
        weights.append([p.detach().clone() for p in task.model.parameters()])
    for a, b in zip(*weights, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("method", ["skipgram", "cbow"])
def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch, method):
    from rnnkit.tasks import embed
    from rnnkit.train import Trainer

    from .test_embed import _corpus

    monkeypatch.setattr(embed, "SEGMENT", 150)  # the prepared lines read in several segments

    path = _corpus(tmp_path / "c.txt", lines=100)

    def make() -> tuple[EmbedTask, EmbedConfig]:
        torch.manual_seed(0)
        config = from_dict(
            EmbedConfig,
            {
                "data": {"train": str(path), "min_freq": 1, "subsample": 0, "eval_examples": 200},
                "model": {"method": method, "embedding_dim": 8},
                "train": {"batch_size": 64, "epochs": 2, "progress": False, "checkpoint_every": 3},
            },
        )
        return EmbedTask.build(config), config

    task, config = make()
    Trainer(task, config.train, tmp_path / "whole", log=lambda _: None).fit()
    task_b, config = make()
    trainer = Trainer(task_b, config.train, tmp_path / "cut", log=lambda _: None)
    step, calls = trainer.train_step, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:  # mid-epoch, two steps after a checkpoint
            raise KeyboardInterrupt
        return step(*args, **kwargs)

    trainer.train_step = interrupted
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    task_c, config = make()
    Trainer(task_c, config.train, tmp_path / "cut", log=lambda _: None).fit(resume=True)
    for a, b in zip(task.model.parameters(), task_c.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_row_updates_do_not_depend_on_the_number_of_threads():
    g = torch.Generator().manual_seed(0)
    vocab, entries = 50, 20_000  # words repeat a lot
    index = torch.randint(vocab, (entries,), generator=g)
    vectors = torch.randn(entries // 6, 16, generator=g)
    source = torch.randint(vectors.shape[0], (entries,), generator=g)
    weights = torch.randn(entries, generator=g)
    grad = RowGrad(torch.Size([vocab, 16]), index, vectors, weights, source)
    start = torch.randn(vocab, 16, generator=g)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(grad.add_into(start.clone(), alpha=-0.3))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1])
    want = start.clone().index_add_(0, index, weights.unsqueeze(1) * vectors[source], alpha=-0.3)
    torch.testing.assert_close(results[0], want, rtol=1e-5, atol=1e-5)
