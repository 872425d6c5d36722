"""The CRF against brute-force enumeration and against pytorch-crf."""

import itertools

import pytest
import torch

from rnnkit.nn.crf import CRF, bio_constraints


def _random_problem(tags: int, lengths: list[int], seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    crf = CRF(tags).to(dtype)
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
    time = max(lengths)
    emissions = torch.randn(len(lengths), time, tags, generator=g, dtype=dtype)
    mask = torch.arange(time).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return crf, emissions, mask


def _all_scores(crf, emissions, length):
    """Score of every tag sequence of one sentence, by enumeration."""
    seqs = list(itertools.product(range(crf.num_tags), repeat=length))
    tags = torch.tensor(seqs)
    em = emissions[:length].unsqueeze(0).expand(len(seqs), -1, -1)
    mask = torch.ones(len(seqs), length, dtype=torch.bool)
    return tags, crf.score(em, tags, mask)


@pytest.mark.parametrize("num_tags", [2, 3, 4])
def test_partition_and_viterbi_equal_brute_force(num_tags):
    lengths = [5, 3, 1, 4]  # padded batch: sentences of different lengths
    crf, emissions, mask = _random_problem(num_tags, lengths, seed=num_tags, dtype=torch.float64)
    log_z = crf.log_partition(emissions, mask)
    best, best_score = crf.decode(emissions, mask, pad=-1)
    for row, length in enumerate(lengths):
        tags, scores = _all_scores(crf, emissions[row], length)
        torch.testing.assert_close(log_z[row], torch.logsumexp(scores, 0))
        top = int(scores.argmax())
        assert best[row, :length].tolist() == tags[top].tolist()
        assert (best[row, length:] == -1).all()
        torch.testing.assert_close(best_score[row], scores[top])


def test_nll_and_gradients_match_pytorch_crf_in_float64():
    torchcrf = pytest.importorskip("torchcrf")
    tags, lengths = 5, [7, 4, 6, 1]
    crf, emissions, mask = _random_problem(tags, lengths, seed=11, dtype=torch.float64)
    peer = torchcrf.CRF(tags, batch_first=True).double()
    with torch.no_grad():
        peer.transitions.copy_(crf.transitions)
        peer.start_transitions.copy_(crf.start)
        peer.end_transitions.copy_(crf.end)
    g = torch.Generator().manual_seed(5)
    gold = torch.randint(tags, mask.shape, generator=g)
    ours_em = emissions.clone().requires_grad_(True)
    peer_em = emissions.clone().requires_grad_(True)
    ours = crf.nll(ours_em, gold, mask)
    theirs = -peer(peer_em, gold, mask, reduction="sum")
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours_em.grad, peer_em.grad, rtol=0, atol=1e-6)
    for mine, peers in (
        (crf.transitions, peer.transitions),
        (crf.start, peer.start_transitions),
        (crf.end, peer.end_transitions),
    ):
        torch.testing.assert_close(mine.grad, peers.grad, rtol=0, atol=1e-6)
    assert crf.decode(emissions, mask)[0].masked_fill(~mask, 0).tolist() == [
        seq + [0] * (mask.shape[1] - len(seq)) for seq in peer.decode(emissions, mask)
    ]


TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _valid_iob2(seq: list[str]) -> bool:
    previous = "O"
    for tag in seq:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


def test_constrained_decoding_never_produces_an_invalid_bio_sequence():
    allowed, start, end = bio_constraints(TAGS)
    crf = CRF(len(TAGS), allowed, start, end)
    g = torch.Generator().manual_seed(0)
    emissions = torch.randn(200, 8, len(TAGS), generator=g) * 3
    emissions[:, :, 2] += 2.0  # push hard towards I-PER, which may not start a span
    mask = torch.ones(200, 8, dtype=torch.bool)
    best, _ = crf.decode(emissions, mask)
    assert all(_valid_iob2([TAGS[i] for i in row]) for row in best.tolist())
    unconstrained, _ = CRF(len(TAGS)).decode(emissions, mask)
    assert not all(_valid_iob2([TAGS[i] for i in row]) for row in unconstrained.tolist())


def test_bioes_constraints():
    tags = ["O", "B-X", "I-X", "E-X", "S-X"]
    allowed, start, end = bio_constraints(tags, scheme="BIOES")
    index = {t: i for i, t in enumerate(tags)}
    assert allowed[index["B-X"], index["I-X"]] and allowed[index["I-X"], index["E-X"]]
    assert not allowed[index["B-X"], index["O"]] and not allowed[index["O"], index["E-X"]]
    assert not start[index["I-X"]] and not end[index["B-X"]] and end[index["E-X"]]


def test_perceptron_loss_is_zero_exactly_on_the_viterbi_path():
    crf, emissions, mask = _random_problem(4, [6, 2, 5], seed=3)
    best, _ = crf.decode(emissions, mask)
    assert crf.perceptron_loss(emissions, best, mask, reduction="none").abs().max() < 1e-5
    wrong = (best + 1) % 4
    loss = crf.perceptron_loss(emissions, wrong, mask, reduction="none")
    assert (loss > 0).all()
    loss.sum().backward()
    assert crf.transitions.grad is not None


def test_scaled_forward_equals_log_space_and_falls_back_when_it_underflows():
    from rnnkit.nn.crf import log_partition_in_log_space

    crf = CRF(5)
    emissions = torch.randn(6, 9, 5, requires_grad=True) * 3
    mask = torch.arange(9) < torch.tensor([9, 1, 4, 9, 7, 2]).unsqueeze(1)
    scaled = crf.log_partition(emissions, mask)
    exact = log_partition_in_log_space(emissions, mask, *crf._scores())
    assert torch.allclose(scaled, exact, atol=1e-4)
    # Every path alternates between tags whose moves cost 150 nats and emissions 200 apart:
    # float32 probabilities underflow to zero, so the log-space recursion must take over.
    two = CRF(2)
    with torch.no_grad():
        two.transitions.copy_(torch.tensor([[0.0, -150.0], [-150.0, 0.0]]))
    flip = torch.tensor([[0.0, -200.0], [-200.0, 0.0]] * 3).unsqueeze(0).requires_grad_()
    full = torch.ones(1, 6, dtype=torch.bool)
    log_z = two.log_partition(flip, full)
    assert torch.isfinite(log_z).all()
    assert torch.allclose(log_z, log_partition_in_log_space(flip, full, *two._scores()))
    log_z.sum().backward()
    assert torch.isfinite(flip.grad).all() and torch.isfinite(two.transitions.grad).all()


@pytest.mark.parametrize("gap", [60.0, 90.0, 100.0, 300.0])
def test_nearly_impossible_paths_keep_exact_values_and_finite_gradients(gap):
    """Emissions insist on I-PER then I-LOC, which the IOB2 constraints forbid: forward and
    backward probabilities disagree by ``gap`` nats, past what float32 can scale."""
    from rnnkit.nn.crf import log_partition_in_log_space

    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    crf = CRF(5, *bio_constraints(tags, "IOB2"))
    with torch.no_grad():
        for p in crf.parameters():
            p.zero_()
    emissions = torch.zeros(1, 3, 5)
    emissions[0, 1, 2] = emissions[0, 2, 4] = gap
    mask = torch.ones(1, 3, dtype=torch.bool)
    ours = emissions.clone().requires_grad_()
    crf.nll(ours, torch.tensor([[1, 2, 0]]), mask).backward()
    ref = emissions.clone().requires_grad_()
    ref_z = log_partition_in_log_space(ref, mask, *crf._scores())
    (ref_grad,) = torch.autograd.grad(ref_z.sum(), ref)
    assert torch.allclose(crf.log_partition(emissions, mask), ref_z, atol=1e-4)
    assert torch.isfinite(ours.grad).all() and torch.isfinite(crf.transitions.grad).all()
    score_grad = torch.zeros(1, 3, 5)
    score_grad[0, [0, 1, 2], [1, 2, 0]] = 1.0
    assert torch.allclose(ours.grad, ref_grad - score_grad, atol=1e-5)


def test_crf_ignores_autocast():
    crf, emissions, mask = _random_problem(9, [40, 33, 21, 40], seed=3)
    emissions = emissions * 10
    rounded = emissions.bfloat16()
    exact = crf.log_partition(rounded.float(), mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = crf.log_partition(rounded, mask)
        path, _ = crf.decode(rounded, mask)
    assert half.dtype == torch.float32
    assert torch.allclose(half, exact, atol=1e-4)
    assert torch.equal(path, crf.decode(rounded.float(), mask)[0])


def test_empty_sentences_are_refused():
    crf, emissions, mask = _random_problem(3, [2, 2], seed=0)
    mask[1] = False
    with pytest.raises(ValueError, match="at least one token"):
        crf.log_partition(emissions, mask)


def test_viterbi_without_the_step_table_and_for_one_token(monkeypatch):
    import rnnkit.nn.crf as crf_module

    crf, emissions, mask = _random_problem(6, [7, 3, 1, 5], seed=11)
    tags, scores = crf.decode(emissions, mask)
    monkeypatch.setattr(crf_module, "_STEP_TABLE_LIMIT", 0)  # per-step tables instead
    again, again_scores = crf.decode(emissions, mask)
    assert torch.equal(tags, again) and torch.equal(scores, again_scores)
    assert torch.allclose(crf.score(emissions, tags, mask), scores)
    one, _ = crf.decode(emissions[:, :1], mask[:, :1])
    assert one.shape == (4, 1)


def test_viterbi_takes_emissions_of_another_dtype_than_the_crf():
    torch.manual_seed(0)
    crf = CRF(4)
    emissions = torch.randn(3, 5, 4, dtype=torch.float64)
    mask = torch.arange(5) < torch.tensor([[5], [3], [1]])
    paths, scores = crf.decode(emissions, mask)
    wide = CRF(4).double()
    wide.load_state_dict(crf.state_dict())
    expected_paths, expected_scores = wide.decode(emissions, mask)
    assert torch.equal(paths, expected_paths)
    assert torch.allclose(scores, expected_scores)
