from collections import Counter

import pytest

from rnnkit.checkpoint import json_bytes
from rnnkit.data import PAD, UNK, Vocab
from rnnkit.errors import DataError, ModelDirError


def test_specials_come_first_and_pad_is_zero():
    v = Vocab(["b", "a", "b"])
    assert v.itos == [PAD, UNK, "b", "a"]
    assert v.pad_id == 0 and v.unk_id == 1
    assert len(v) == 4


def test_unknown_tokens_map_to_unk_or_raise():
    open_vocab = Vocab(["a"])
    assert open_vocab.encode(["a", "zzz"]) == [2, 1]
    closed = Vocab(["a"], specials=[PAD], unk=None)
    with pytest.raises(DataError, match="'zzz' is not in the vocabulary"):
        closed.encode(["zzz"])


def test_build_orders_by_frequency_then_text_and_applies_limits():
    counts = Counter({"the": 5, "cat": 2, "a": 2, "rare": 1})
    v = Vocab.build(counts, min_freq=2)
    assert v.itos[2:] == ["the", "a", "cat"]
    assert Vocab.build(counts, max_size=4).itos == [PAD, UNK, "the", "a"]


def test_decode_strips_padding_but_keeps_unk():
    v = Vocab(list("abc"))
    ids = v.encode(list("ab?c")) + [v.pad_id, v.pad_id]
    assert v.decode(ids) == ["a", "b", UNK, "c"]
    assert v.decode(ids, strip_specials=False)[-1] == PAD


def test_json_round_trip(tmp_path):
    v = Vocab(list("xyzé"), specials=[PAD], unk=None)
    (tmp_path / "vocab.json").write_bytes(json_bytes(v.to_dict()))  # as a model directory has it
    assert Vocab.load(tmp_path / "vocab.json") == v


def test_truncated_vocab_file_is_a_clear_error(tmp_path):
    (tmp_path / "vocab.json").write_bytes(json_bytes(Vocab(list("abc")).to_dict()))
    text = (tmp_path / "vocab.json").read_text()
    (tmp_path / "vocab.json").write_text(text[: len(text) // 2])
    with pytest.raises(ModelDirError, match="not valid JSON"):
        Vocab.load(tmp_path / "vocab.json")
