import json

import pytest
import torch

from rnnkit import checkpoint as ckpt
from rnnkit.errors import ModelDirError


def test_commit_replaces_all_files(tmp_path):
    ckpt.commit(tmp_path, {"a.txt": b"old-a", "b.txt": b"old-b"})
    ckpt.commit(tmp_path, {"a.txt": b"new-a", "b.txt": b"new-b"})
    assert (tmp_path / "a.txt").read_bytes() == b"new-a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_crash_before_the_commit_point_keeps_the_old_checkpoint(tmp_path):
    ckpt.commit(tmp_path, {"a.txt": b"old-a", "b.txt": b"old-b"})
    # A kill while new files were still being written: .next files, no journal.
    (tmp_path / "a.txt.next").write_bytes(b"new-a")
    (tmp_path / "b.txt.next").write_bytes(b"new-")
    ckpt.recover(tmp_path)
    assert (tmp_path / "a.txt").read_bytes() == b"old-a"
    assert (tmp_path / "b.txt").read_bytes() == b"old-b"
    assert not list(tmp_path.glob("*.next"))


def test_crash_after_the_commit_point_rolls_forward(tmp_path):
    ckpt.commit(tmp_path, {"a.txt": b"old-a", "b.txt": b"old-b"})
    # A kill between renames: the journal exists, a.txt already renamed, b.txt not yet.
    (tmp_path / "a.txt").write_bytes(b"new-a")
    (tmp_path / "b.txt.next").write_bytes(b"new-b")
    (tmp_path / ckpt.JOURNAL).write_text(json.dumps(["a.txt", "b.txt"]))
    ckpt.recover(tmp_path)
    assert (tmp_path / "b.txt").read_bytes() == b"new-b"
    assert not (tmp_path / ckpt.JOURNAL).exists()


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    data = ckpt.tensors_to_bytes({"w": torch.randn(50, 50)})
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelDirError, match="truncated or not a safetensors file"):
        ckpt.read_tensors(tmp_path / "model.safetensors")


def test_model_dir_checks(tmp_path):
    with pytest.raises(ModelDirError, match="does not exist"):
        ckpt.read_model_config(tmp_path / "nope")
    with pytest.raises(ModelDirError, match="no config.json"):
        ckpt.read_model_config(tmp_path)
    (tmp_path / "config.json").write_text('{"task": "cip')
    with pytest.raises(ModelDirError, match="not valid JSON"):
        ckpt.read_model_config(tmp_path)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    small, big = torch.nn.Linear(3, 4), torch.nn.Linear(3, 5)
    (tmp_path / "m.safetensors").write_bytes(ckpt.tensors_to_bytes(small.state_dict()))
    with pytest.raises(ModelDirError, match="has shape"):
        ckpt.load_weights(big, tmp_path / "m.safetensors")
