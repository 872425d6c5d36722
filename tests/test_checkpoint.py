import json

import pytest
import torch

from rnnkit import checkpoint as ckpt
from rnnkit.errors import ModelDirError


def test_commit_replaces_all_files(tmp_path):
    ckpt.commit(tmp_path, {"a.txt": b"old-a", "b.txt": b"old-b"})
    ckpt.commit(tmp_path, {"a.txt": b"new-a", "b.txt": b"new-b"})
    assert (tmp_path / "a.txt").read_bytes() == b"new-a"
    shown = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert shown == ["a.txt", "b.txt"]


def test_crash_before_the_commit_point_keeps_the_old_checkpoint(tmp_path):
    ckpt.commit(tmp_path, {"a.txt": b"old-a", "b.txt": b"old-b"})
    # A kill while new files were still being written: .next files, no journal.
    (tmp_path / "a.txt.next").write_bytes(b"new-a")
    (tmp_path / "b.txt.next").write_bytes(b"new-")
    with ckpt.writing(tmp_path):
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
    with ckpt.writing(tmp_path):
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


def test_a_reader_reads_a_dead_writers_commit_and_changes_nothing(tmp_path):
    ckpt.commit(tmp_path, {"a.txt": b"old-a", "b.txt": b"old-b"})
    # The writer died after its commit point, before any rename.
    (tmp_path / "a.txt.next").write_bytes(b"new-a")
    (tmp_path / "b.txt.next").write_bytes(b"new-b")
    (tmp_path / ckpt.JOURNAL).write_text(json.dumps(["a.txt", "b.txt"]))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with ckpt.reading(tmp_path):
        assert ckpt.resolve(tmp_path / "a.txt").read_bytes() == b"new-a"
        assert ckpt.resolve(tmp_path / "b.txt").read_bytes() == b"new-b"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    with pytest.raises(RuntimeError, match="writer lock"):
        ckpt.recover(tmp_path)  # only the writer repairs


def test_a_journal_naming_files_outside_its_directory_is_refused(tmp_path):
    model = tmp_path / "model"
    ckpt.commit(model, {"a.txt": b"a"})
    (tmp_path / "victim").write_bytes(b"precious")
    (model / "../victim.next").write_bytes(b"overwritten")
    (model / ckpt.JOURNAL).write_text(json.dumps(["../victim"]))
    with pytest.raises(ModelDirError, match="outside its directory"):
        with ckpt.reading(model):
            pass
    with pytest.raises(ModelDirError, match="outside its directory"), ckpt.writing(model):
        ckpt.recover(model)
    assert (tmp_path / "victim").read_bytes() == b"precious"
    with pytest.raises(ValueError, match="plain file name"):
        ckpt.commit(model, {"../x": b""})


def test_flipped_bytes_in_tensor_data_fail_the_checksum(tmp_path):
    data = bytearray(ckpt.tensors_to_bytes({"w": torch.randn(20, 20)}))
    assert ckpt.read_tensors_from(bytes(data))["w"].shape == (20, 20)
    data[-100] ^= 0x10
    (tmp_path / "m.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelDirError, match="sha256"):
        ckpt.read_tensors(tmp_path / "m.safetensors")


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from rnnkit import checkpoint as c; c.acquire_writer(sys.argv[1]);"
         " print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ModelDirError, match=f"written by process {holder.pid} on"):
            ckpt.commit(tmp_path, {"a.txt": b"a"})
        assert not (tmp_path / "a.txt").exists()
    finally:
        holder.kill()
        holder.wait()
    ckpt.commit(tmp_path, {"a.txt": b"a"})  # the lock died with its holder
    assert (tmp_path / "a.txt").read_bytes() == b"a"


def test_damaged_json_shapes_are_one_line_errors(tmp_path):
    from rnnkit.data.vocab import Vocab

    for text, needle in [('{"task": [1]}', "does not name a task"), ("5", "does not name"),
                         ('{"task": "cipher", "config": 3}', "no config mapping")]:  # fmt: skip
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(ModelDirError, match=needle):
            ckpt.read_model_config(tmp_path)
    (tmp_path / "vocab.json").write_text('{"specials": [], "itos": [["a"]], "unk": null}')
    with pytest.raises(ModelDirError, match="other than strings"):
        Vocab.load(tmp_path / "vocab.json")
    (tmp_path / "model.safetensors").mkdir()
    with pytest.raises(ModelDirError, match="is a directory"):
        ckpt.read_tensors(tmp_path / "model.safetensors")
