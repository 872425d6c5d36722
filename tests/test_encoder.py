import pytest
import torch

from rnnkit.nn import RecurrentEncoder


@pytest.mark.parametrize("rnn", ["lstm", "gru", "rnn"])
def test_padding_does_not_change_real_positions(rnn):
    enc = RecurrentEncoder(4, 6, rnn=rnn, layers=2, bidirectional=True).eval()
    x = torch.randn(2, 7, 4)
    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    out, _ = enc(x, mask)
    alone, _ = enc(x[1:, :3], None)
    assert out.shape == (2, 7, 12)
    torch.testing.assert_close(out[1, :3], alone[0], rtol=1e-5, atol=1e-6)
    assert (out[1, 3:] == 0).all()
