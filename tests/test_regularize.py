"""AWD-LSTM's regularisers (rnnkit/nn/regularize.py), checked against what each one means, and
the language model that uses them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnkit.nn.language_model import LanguageModel, LMModelConfig
from rnnkit.nn.regularize import (
    LockedDropout,
    activation_penalty,
    drop_connect,
    embedding_dropout,
)


def test_locked_dropout_keeps_one_mask_for_every_step() -> None:
    drop = LockedDropout(0.5).train()
    out = drop(torch.ones(4, 30, 8))
    kept = out != 0
    assert torch.equal(kept, kept[:, :1].expand_as(kept))  # the same units at every step
    assert set(out.unique().tolist()) <= {0.0, 2.0}  # kept ones scaled by 1 / (1 - p)
    assert 0 < kept.float().mean() < 1
    assert torch.equal(drop.eval()(out), out)


def test_embedding_dropout_drops_whole_words_for_the_batch() -> None:
    torch.manual_seed(1)
    embed = nn.Embedding(50, 6).train()
    tokens = torch.randint(0, 50, (8, 40))
    out = embedding_dropout(embed, tokens, 0.5)
    zero = (out == 0).all(dim=-1)  # (batch, time)
    for word in tokens.unique():
        where = zero[tokens == word]
        assert where.all() or not where.any()  # a word is dropped everywhere or nowhere
    kept = ~zero
    assert torch.allclose(out[kept], 2 * embed(tokens)[kept])
    assert torch.equal(embedding_dropout(embed.eval(), tokens, 0.5), embed(tokens))


def test_drop_connect_drops_recurrent_weights_only_while_training() -> None:
    torch.manual_seed(2)
    lstm = nn.LSTM(5, 7, num_layers=2, batch_first=True)
    x = torch.randn(3, 9, 5)
    plain, _ = lstm(x)
    lstm.eval()
    assert torch.equal(drop_connect(lstm, 0.5, x)[0], plain)
    lstm.train()
    torch.manual_seed(3)
    dropped, _ = drop_connect(lstm, 0.5, x)
    assert not torch.allclose(dropped, plain)
    # The same masks applied by hand to a copy give the same outputs.
    copy = nn.LSTM(5, 7, num_layers=2, batch_first=True)
    copy.load_state_dict(lstm.state_dict())
    torch.manual_seed(3)
    with torch.no_grad():
        for name, weight in copy.named_parameters():
            if name.startswith("weight_hh"):
                weight.copy_(nn.functional.dropout(weight, 0.5, training=True))
    assert torch.allclose(copy(x)[0], dropped, atol=1e-6)
    dropped.sum().backward()
    assert lstm.weight_hh_l0.grad is not None and lstm.weight_ih_l0.grad is not None
    masked = copy.weight_hh_l0 == 0
    assert torch.all(lstm.weight_hh_l0.grad[masked] == 0)  # dropped entries learn nothing


def test_activation_penalty_is_the_two_mean_squares() -> None:
    dropped, raw = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    ar = 2 * dropped.pow(2).mean()
    tar = (raw[:, 1:] - raw[:, :-1]).pow(2).mean()
    assert torch.allclose(activation_penalty(dropped, raw, 2.0, 1.0), ar + tar)
    assert activation_penalty(dropped, raw, 0.0, 0.0) == 0
    assert activation_penalty(dropped[:, :1], raw[:, :1], 0.0, 1.0) == 0  # one step: no change


def test_the_language_model_adds_the_penalty_in_training_only() -> None:
    torch.manual_seed(4)
    config = LMModelConfig(
        embedding_dim=8, hidden_size=8, layers=2, dropout=0.3, embedding_dropout=0.2,
        locked_dropout=True, word_dropout=0.1, weight_drop=0.3, activation_reg=2.0,
        temporal_reg=1.0, tie_weights=True,
    )  # fmt: skip
    model = LanguageModel(20, config)
    batch = {"input": torch.randint(0, 20, (4, 12)), "target": torch.randint(0, 20, (4, 12))}
    model.eval()
    plain = model.loss({**batch, "reset": True})
    features, _ = model(batch["input"])
    assert torch.allclose(plain, model.nll(features, batch["target"]) / 48)
    model.train()
    loss = model.loss({**batch, "reset": True})
    loss.backward()
    assert torch.isfinite(loss) and model.embed.weight.grad is not None
    assert isinstance(model.drop, LockedDropout)
    # Training with the penalties on still learns: a few steps lower the loss on one batch.
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    model.eval()
    before = model.loss({**batch, "reset": True}).item()
    model.train()
    for _ in range(30):
        optimizer.zero_grad()
        model.loss({**batch, "reset": True}).backward()
        optimizer.step()
    model.eval()
    assert model.loss({**batch, "reset": True}).item() < before


@pytest.mark.parametrize("key", ["word_dropout", "weight_drop"])
def test_bad_rates_name_the_key(key: str) -> None:
    from rnnkit.config import from_dict
    from rnnkit.errors import ConfigError

    with pytest.raises(ConfigError, match=f"model.{key}"):
        from_dict(LMModelConfig, {key: 1.0}, prefix="model.")
