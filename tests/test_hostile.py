"""Hostile and careless input, one test per kind of case the reliability review found: each
gets one clear line (exit 2) or a RnnkitError, loses nothing, and does not run away."""

from __future__ import annotations

import json

import pytest

import rnnkit
from rnnkit.errors import ConfigError, InputError, LimitError, RnnkitError
from tests.conftest import TINY, run_cli, spawn_cli


def one_line(run, *needles: str) -> str:
    assert run.returncode == 2, (run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def rot13(tiny_models):
    return tiny_models["cipher"]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model.hidden_size=3000000", "model.hidden_size"),
        ("data.max_length=100000000", "data.max_length"),
        ("model.embedding_dim=-3", "model.embedding_dim"),
        ("train.lr=nan", "train.lr"),
        ("train.max_minutes=nan", "train.max_minutes"),
        ("data.train_messages=0", "data.train_messages"),
        ("data.eval_messages=0", "data.eval_messages"),
        ("train.seed=100000000000000000000", "train.seed"),
        ("train.metric=acuracy", "acuracy"),
    ],
)
def test_bad_configs_stop_before_anything_runs(override, needle, tmp_path):
    out = tmp_path / "run"
    one_line(run_cli("train", "cipher", *TINY, override, "--out", str(out)), needle)
    assert not (out / "config.json").exists()


def test_force_never_deletes_files_rnnkit_did_not_write(tmp_path):
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "own settings"}')
    (mine / "labels.json").write_text('["mine"]')
    one_line(run_cli("train", "cipher", *TINY, "--out", str(mine), "--force"), "not written by")
    assert (mine / "config.json").read_text() == '{"my": "own settings"}'
    assert (mine / "labels.json").read_text() == '["mine"]'


def test_unbounded_requests_are_refused(rot13, tiny_models):
    model = rnnkit.load(rot13)
    with pytest.raises(LimitError, match="10,000,000 characters"):
        model.predict(["A" * 10_000_000])
    with pytest.raises(InputError, match="not one string"):
        model.predict("FUVEM")
    with pytest.raises(InputError, match="NoneType"):
        model.predict([None])
    with pytest.raises(ConfigError, match="options.beam"):
        rnnkit.load(tiny_models["translate"]).predict(["je suis ."], beam=1_000_000)
    run = run_cli("translate", "--model", str(tiny_models["translate"]), "--beam", "1000000", "x")
    one_line(run, "options.beam")
    run = run_cli("decrypt", "--model", str(rot13), "-", stdin="URYYB" * 200_000 + "\n")
    one_line(run, "1,000,000 characters")
    run = run_cli("generate", "--model", str(tiny_models["lm"]), "--temperature", "nan")
    one_line(run, "options.temperature")


def test_a_reader_ignores_leftovers_and_writes_nothing(rot13, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(rot13, copy)
    (copy / "model.safetensors.next").write_bytes(b"half a checkpoint")  # a kill mid-write
    before = sorted((p.name, p.stat().st_mtime_ns) for p in copy.iterdir())
    run = run_cli("decrypt", "--model", str(copy), "URYYB")
    assert run.returncode == 0, run.stderr
    assert sorted((p.name, p.stat().st_mtime_ns) for p in copy.iterdir()) == before


def test_text_that_is_not_utf8_text_is_refused(tmp_path):
    trec = tmp_path / "questions.label"
    trec.write_bytes("HUM:ind Who wrote Hamlet ?\nLOC:city Where is Lima ?".encode("utf-16"))
    run = run_cli("train", "classify", "data.format=trec", f"data.train={trec}",
                  "--out", str(tmp_path / "m"))  # fmt: skip
    one_line(run, "questions.label:1", "NUL bytes")


def test_a_huge_malformed_line_is_not_quoted_whole(tmp_path):
    data = tmp_path / "train.tsv"
    data.write_text("animal\tthe dog\n" + "x" * 2_000_000 + "\n")
    run = run_cli("train", "classify", f"data.train={data}", "--out", str(tmp_path / "m"))
    line = one_line(run, "train.tsv:2")
    assert len(line) < 1_000


def test_blank_inputs_keep_their_place_in_every_verb(tiny_models):
    for verb, task in (("translate", "translate"), ("classify", "classify"), ("decrypt", "cipher")):
        run = run_cli(verb, "--model", str(tiny_models[task]), "--json", "-", stdin="a\n\nb\n")
        assert run.returncode == 0, run.stderr
        assert len([json.loads(x) for x in run.stdout.splitlines()]) == 3


def test_a_full_disk_is_one_line_and_leaves_the_directory_sound(tmp_path):
    import os
    import resource
    import signal
    import subprocess
    import sys

    def small_disk():  # every file this process writes stops at 20 kB, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rnnkit", "train", "cipher", *TINY, "--out", str(out)]
    full = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=small_disk,
                          env={**os.environ}, timeout=300)  # fmt: skip
    one_line(full, "File too large", str(out))  # the file it could not write
    assert not (out / "config.json").exists()  # nothing half-committed
    again = run_cli("train", "cipher", *TINY, "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert not list(out.glob("*.next"))


def test_argument_errors_are_one_line():
    # A real process: argparse ends it with SystemExit, and its exit status is the point.
    one_line(spawn_cli("train", "cipher", "--seed", "1e20", "--out", "x"), "--seed")


def test_a_fifo_in_a_model_directory_is_an_error_not_a_hang(rot13, tmp_path):
    import os
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(rot13, copy)
    (copy / "vocab.json").unlink()
    os.mkfifo(copy / "vocab.json")
    one_line(run_cli("decrypt", "--model", str(copy), "URYYB"), "not a regular file")


def test_neighbours_from_a_file_check_k_like_the_model_path(tmp_path):
    vectors = tmp_path / "v.txt"
    vectors.write_text("cat 1 0\ndog 0.9 0.1\nfish 0 1\n")
    one_line(run_cli("neighbors", "--vectors", str(vectors), "-k", "abc", "cat"), "options.k")
    one_line(run_cli("neighbors", "--vectors", str(vectors), "-k", "100000000", "cat"), "options.k")


def test_resume_refuses_data_whose_labels_changed(tmp_path):
    from tests.test_classify import tsv_overrides

    overrides = tsv_overrides(tmp_path, "train.epochs=2")
    out = tmp_path / "run"
    assert run_cli("train", "classify", *overrides, "--out", str(out)).returncode == 0
    train = tmp_path / "train.tsv"
    train.write_text(train.read_text().replace("animal\t", "beast\t"))  # same words, new label
    one_line(run_cli("train", "classify", "--resume", str(out)), "labels.json differs")


# ------------------------------------------------------------------ reliability II
def test_force_checks_everything_before_it_deletes_the_old_model(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "cipher", *TINY, "--out", str(out)).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for bad in ("train.metric=acuracy", "data.plaintext=text", "data.text=/no/such/file.txt"):
        one_line(run_cli("train", "cipher", *TINY, "--out", str(out), "--force", bad))
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before, bad
    assert rnnkit.load(out).predict(["URYYB"])[0]["plaintext"]


def test_a_users_own_files_are_never_overwritten_with_or_without_force(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "labels.json").write_text('{"my": "labels"}')
    for force in ([], ["--force"]):
        one_line(run_cli("train", "cipher", *TINY, "--out", str(mine), *force), "labels.json")
        assert (mine / "labels.json").read_text() == '{"my": "labels"}'
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("buy milk")
    for force in ([], ["--force"]):
        one_line(run_cli("train", "cipher", *TINY, "--out", str(notes), *force), "todo.txt")
    assert sorted(p.name for p in notes.iterdir()) == ["todo.txt"]


def test_a_refused_run_leaves_no_directory_behind(tmp_path):
    bad = tmp_path / "bad.conllu"  # found, but malformed: refused once the data is read
    bad.write_text("1\tonly\ttwo\n")
    data = [f"data.train={bad}", f"data.dev={bad}"]
    out = tmp_path / "new" / "run"
    one_line(run_cli("train", "tag", *data, "--out", str(out)), "bad.conllu:1")
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line(run_cli("train", "tag", *data, "--out", str(empty)), "bad.conllu:1")
    assert list(empty.iterdir()) == []


def test_a_misspelt_per_type_metric_stops_before_training(tmp_path):
    from tests.test_tag import ner_overrides  # a tiny IOB2 corpus with PER and LOC

    out = tmp_path / "ner"
    overrides = ner_overrides(tmp_path, "train.metric=f1_NOPE")
    run = run_cli("train", "tag", *overrides, "--out", str(out))
    one_line(run, "f1_NOPE", "f1_PER")
    assert not out.exists()


@pytest.mark.parametrize("name", ["config.json", "vocab.json", "commit.json", ".writer.lock"])
def test_deeply_nested_json_in_a_model_directory_is_one_line(rot13, tmp_path, name):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(rot13, copy)
    (copy / name).write_text("[" * 100_000 + "]" * 100_000)
    if name == ".writer.lock":  # read only to name a writer: the model still loads
        assert run_cli("decrypt", "--model", str(copy), "URYYB").returncode == 0
        return
    verbs = [["decrypt", "--model", str(copy), "URYYB"], ["eval", "--model", str(copy)]]
    if name == "config.json":  # serve loads every model before it listens
        verbs.append(["serve", "--model", str(copy), "--port", "9"])
    for verb in verbs:
        one_line(run_cli(*verb), "nested")
    with pytest.raises(RnnkitError, match="nested"):
        rnnkit.load(copy)


def test_deeply_nested_yaml_is_one_line(tmp_path):
    recipe = tmp_path / "deep.yaml"
    recipe.write_text("[" * 100_000 + "]" * 100_000)
    one_line(run_cli("train", "cipher", "--config", str(recipe), "--out", str(tmp_path / "m")),
             "deep.yaml", "nested")  # fmt: skip
    one_line(run_cli("train", "cipher", "model.layers=" + "[" * 50_000, "--out", "x"), "nested")
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200_000)
    one_line(run_cli("train", "cipher", "--config", str(big), "--out", str(tmp_path / "m")), "big")


def test_a_vocabulary_of_the_wrong_shape_names_its_file(rot13, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(rot13, copy)
    (copy / "vocab.json").write_text("5")
    one_line(run_cli("decrypt", "--model", str(copy), "URYYB"), "vocab.json", "JSON object")


def test_a_ten_million_word_line_is_refused_by_file_and_line(tmp_path):
    trec = tmp_path / "huge.label"
    with trec.open("w") as f:
        f.write("HUM:ind Who wrote Hamlet ?\n")
        f.write("DESC:def " + "what " * 10_000_000 + "?\n")
    run = run_cli("train", "classify", "data.format=trec", f"data.train={trec}",
                  "--out", str(tmp_path / "m"))  # fmt: skip
    one_line(run, "huge.label:2", "50,000,010 characters")


def test_a_cli_predict_call_stops_at_its_deadline(tiny_models):
    long = " ".join(["le chat est sur la table"] * 30)
    run = run_cli("translate", "--model", str(tiny_models["translate"]), "--beam", "64",
                  "--deadline", "0.001", long, long)  # fmt: skip
    one_line(run, "stopped after", "work budget")
    one_line(run_cli("translate", "--model", str(tiny_models["translate"]), "--deadline", "-1",
                     "x"), "--deadline")  # fmt: skip
    quick = run_cli("translate", "--model", str(tiny_models["translate"]), "--deadline", "0", "x")
    assert quick.returncode == 0, quick.stderr
