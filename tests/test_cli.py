import json
import shutil
import sys

import pytest

from .conftest import TINY, run_cli


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "rot13"
    result = run_cli("train", "cipher", *TINY, "train.epochs=4", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "best dev char_accuracy" in result.stdout
    return out


def test_decrypt_from_arguments_stdin_and_file(model_dir, tmp_path):
    result = run_cli("decrypt", "--model", str(model_dir), "FUVEMVEMNMERPDRF", "URYYA")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["THIS-IS-A-SECRET", "HELLO"]
    result = run_cli("decrypt", "--model", str(model_dir), "-", stdin="fuvemvem\n")
    assert result.stdout.strip() == "THIS-IS-"
    path = tmp_path / "in.txt"
    path.write_text("NFFNPXMNFMQNI-\n")
    result = run_cli("decrypt", "--model", str(model_dir), "--file", str(path))
    assert result.stdout.strip() == "ATTACK-AT-DAWN"


def test_empty_input_decrypts_to_empty_output(model_dir):
    result = run_cli("decrypt", "--model", str(model_dir), "")
    assert result.returncode == 0 and result.stdout == "\n"


def test_eval_json_prints_one_object_of_fractions(model_dir, tmp_path):
    result = run_cli("eval", "--model", str(model_dir), "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert set(metrics) >= {"char_accuracy", "message_accuracy"}
    assert 0.99 <= metrics["char_accuracy"] <= 1.0
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("FUVEMVEMNMERPDRF\tTHIS-IS-A-SECRET\nURYYA\tHELLO\n")
    result = run_cli("eval", "--model", str(model_dir), "--data", str(pairs), "--json")
    assert json.loads(result.stdout)["message_accuracy"] == 1.0


def test_python_api(model_dir):
    import rnnkit

    model = rnnkit.load(model_dir)
    assert model.predict(["FUVEMVEMNMERPDRF", ""]) == [
        {"plaintext": "THIS-IS-A-SECRET"},
        {"plaintext": ""},
    ]


def _assert_clean_error(result, *needles):
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_unknown_config_key_is_one_line_naming_it(tmp_path):
    result = run_cli("train", "cipher", "model.hiden=3", "--out", str(tmp_path / "x"))
    _assert_clean_error(result, "model.hiden", "hidden_size")
    result = run_cli("train", "cipher", "model.rnn=cnn", "--out", str(tmp_path / "x"))
    _assert_clean_error(result, "model.rnn", "lstm, gru, rnn")


def test_missing_model_dir(tmp_path):
    _assert_clean_error(
        run_cli("decrypt", "--model", str(tmp_path / "nope"), "ABC"), "does not exist"
    )


def test_truncated_model_file(model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[:100])
    _assert_clean_error(run_cli("decrypt", "--model", str(broken), "ABC"), "truncated")


def test_model_from_another_task(model_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    config = json.loads((other / "config.json").read_text())
    config["task"] = "tag"
    (other / "config.json").write_text(json.dumps(config))
    _assert_clean_error(run_cli("decrypt", "--model", str(other), "ABC"), "'tag' model")


def test_refuses_to_overwrite_a_model_without_force(model_dir):
    result = run_cli("train", "cipher", *TINY, "--out", str(model_dir))
    _assert_clean_error(result, "already holds a model")


def test_malformed_pairs_file_names_file_and_line(model_dir, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("ABC\tXYZ\nno tab here\n")
    result = run_cli("eval", "--model", str(model_dir), "--data", str(pairs))
    _assert_clean_error(result, "pairs.tsv:2:")


def test_overrides_may_follow_the_options(tmp_path):
    result = run_cli("train", "cipher", "--out", str(tmp_path / "m"), "model.hiden=1")
    _assert_clean_error(result, "model.hiden")


def test_demo_refuses_to_clear_a_directory_that_is_not_a_run(tmp_path):
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "mine.txt").write_text("precious")
    _assert_clean_error(run_cli("demo", "--out", str(keep)), "not an rnnkit model directory")
    assert (keep / "mine.txt").read_text() == "precious"


def test_seed_zero_is_honoured(tmp_path):
    out = tmp_path / "s0"
    result = run_cli("train", "cipher", *TINY, "train.epochs=1", "--seed", "0", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["config"]["train"]["seed"] == 0


def test_file_errors_are_one_line(model_dir, tmp_path):
    _assert_clean_error(
        run_cli("decrypt", "--model", str(model_dir), "--file", str(tmp_path)), "is a directory"
    )
    binary = tmp_path / "bad.tsv"
    binary.write_bytes(b"AB\tCD\n\xff\xfe\n")
    _assert_clean_error(
        run_cli("eval", "--model", str(model_dir), "--data", str(binary)), "not UTF-8"
    )


def test_resume_refuses_flags_that_it_would_ignore(model_dir):
    result = run_cli("train", "cipher", "--resume", str(model_dir), "--config", "x.yaml")
    _assert_clean_error(result, "--resume")


def test_a_closed_pipe_is_quiet_and_os_errors_are_one_line(model_dir, tmp_path):
    import subprocess

    lines = tmp_path / "many.txt"
    lines.write_text("URYYB-JBEYQ\n" * 20000)
    piped = subprocess.run(
        f"{sys.executable} -m rnnkit decrypt --model {model_dir} --file {lines} | head -1",
        shell=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert piped.stdout.strip() and "Traceback" not in piped.stderr, piped.stderr
    assert piped.stderr == ""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    # Refused before any data is read or any epoch runs, in one line.
    _assert_clean_error(run_cli("train", "cipher", *TINY, "--out", str(blocker / "run")),
                        "cannot write to")  # fmt: skip
