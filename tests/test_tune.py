"""``rnnkit tune``: the space file, the checks made before any trial, and real searches of a
tiny cipher recipe (slow tier): the better setting found, pruning, a kill -9 and --resume, and
two workers sharing one study on a real PostgreSQL server."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rnnkit.cli import main
from rnnkit.config import parse_overrides
from rnnkit.errors import ConfigError
from rnnkit.tune import as_override, read_space

ROOT = Path(__file__).resolve().parents[1]
RECIPE = """\
task: cipher
model: {embedding_dim: 8, hidden_size: 32}
data: {train_messages: 1024, eval_messages: 128}
train: {batch_size: 32, epochs: 3, device: cpu, metric: char_accuracy}
"""
# A learning rate that learns nothing in three epochs beside one that solves ROT13.
SPACE = "train.lr: {choices: [0.00001, 0.02, 0.00002]}\n"


@pytest.fixture
def search(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "space.yaml").write_text(SPACE)
    return tmp_path / "recipe.yaml", tmp_path / "space.yaml"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train.lr: 0.1\n", "expected {low"),
        ("train.lr: {low: 0.1, hihg: 1}\n", "unknown field 'hihg'"),
        ("train.lr: {choices: []}\n", "choices must be a non-empty list"),
        ("train.lr: {low: 1, high: 0.1}\n", "needs numbers low < high"),
        ("train.lr: {low: 0, high: 1, log: true}\n", "a log range needs low > 0"),
        ("{}\n", "names no config key"),
    ],
)
def test_a_bad_space_is_one_error_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "space.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_space(tmp_path / "space.yaml")


@pytest.mark.parametrize("value", [0.01, 1e-5, 128, True, None, "lstm", "1e-3", "true", "a b"])
def test_a_sampled_value_survives_the_command_line(value: object) -> None:
    assert parse_overrides([as_override("model.x", value)]) == {"model": {"x": value}}


@pytest.mark.parametrize(
    ("space", "fixed", "message"),
    [
        ("model.hiden_size: {low: 8, high: 64}\n", [], "unknown config key 'model.hiden_size'"),
        ("model.hidden_size: {low: 0, high: 64}\n", [], "bad value 0 for model.hidden_size"),
        ("train.lr: {low: 0.001, high: 0.1}\n", ["train.lr=0.01"], "both searched .* and fixed"),
    ],
)
def test_mistakes_fail_before_any_trial(
    search: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    space: str,
    fixed: list[str],
    message: str,
) -> None:
    recipe, space_file = search
    space_file.write_text(space)
    out = tmp_path / "search"
    argv = ["tune", "--config", str(recipe), "--space", str(space_file), "--out", str(out)]
    assert main([*argv, *fixed]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error:") and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not out.exists()  # nothing written


def _tune(recipe: Path, space: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "rnnkit", "tune", "--config", str(recipe), "--space", str(space),
        "--out", str(out), "--startup-trials", "1", "--seed", "3", *extra,
    ]  # fmt: skip


def _study(out: Path, url: str | None = None) -> list:
    import optuna

    storage = url or f"sqlite:///{out / 'study.db'}"
    return optuna.load_study(study_name="rnnkit", storage=storage).get_trials(deepcopy=False)


@pytest.mark.slow
def test_a_search_finds_the_better_setting_prunes_and_keeps_the_best(
    search: tuple[Path, Path], tmp_path: Path
) -> None:
    recipe, space = search
    out = tmp_path / "search"
    # Eight epochs (an override for every trial), so that a pruned trial visibly stops early.
    command = [*_tune(recipe, space, out, "--trials", "4"), "train.epochs=8"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    trials = _study(out)
    states = [t.state.name for t in trials]
    assert len(trials) == 4  # one worker: none started over the budget
    assert states.count("COMPLETE") + states.count("PRUNED") == 4
    assert "PRUNED" in states  # a hopeless learning rate stopped early
    pruned = next(t for t in trials if t.state.name == "PRUNED")
    assert len(_lines(out, pruned.number)) < 8  # its training was stopped
    assert pruned.user_attrs["pruned_at_epoch"] < 8
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert best.params == {"train.lr": 0.02}
    assert "train.lr=0.02" in run.stdout.splitlines()[-2]
    # The best model is a model directory rnnkit eval reads, with the recipe that made it.
    assert main(["eval", "--model", str(out / "best"), "--json"]) == 0
    recipe_out = (out / "best.yaml").read_text()
    assert "lr: 0.02" in recipe_out and "task: cipher" in recipe_out
    assert "epochs: 8" in recipe_out  # the overrides are part of the recipe that made it
    assert (out / "trials.png").stat().st_size > 1000
    for t in trials:  # every trial is an ordinary model directory
        assert (out / "trials" / f"{t.number:04d}" / "config.json").exists()


def _lines(out: Path, number: int) -> list[str]:
    path = out / "trials" / f"{number:04d}" / "metrics.jsonl"
    return [line for line in path.read_text().splitlines() if line]


@pytest.mark.slow
def test_a_killed_search_resumes_the_same_study(search: tuple[Path, Path], tmp_path: Path) -> None:
    recipe, space = search
    out = tmp_path / "search"
    command = _tune(recipe, space, out, "--trials", "3", "--pruner", "none")
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (out / "trials" / "0001").exists():  # trial 0 done, trial 1 under way
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    first = (out / "trials" / "0000" / "metrics.jsonl").read_bytes()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert subprocess.run(command, cwd=ROOT, capture_output=True).returncode == 2  # no --resume
    run = subprocess.run([*command, "--resume"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    trials = _study(out)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3  # the two before the kill are not run again
    assert [t.state.name for t in trials if t.number == 1] == ["FAIL"]  # the killed one
    assert (out / "trials" / "0000" / "metrics.jsonl").read_bytes() == first
    assert main(["eval", "--model", str(out / "best"), "--json"]) == 0


def _postgres_binaries() -> Path | None:
    for bin_dir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (bin_dir / "initdb").exists():
            return bin_dir
    return None


@pytest.fixture
def postgres() -> Iterator[str]:
    """A PostgreSQL server of its own on loopback (Debian's package); its URL."""
    bin_dir = _postgres_binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
    pytest.importorskip("psycopg")
    # Outside pytest's private temporary folders, which the server's user cannot enter.
    data = Path(tempfile.mkdtemp(prefix="rnnkit-pg-")) / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(data.parent, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "tuner", "--auth=trust"]
    subprocess.run(run, check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {data}"
    ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l"]
    subprocess.run([*ctl, str(data / "log"), "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://tuner@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "stop", "-m", "fast"])
        shutil.rmtree(data.parent, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_one_study_on_postgresql(
    search: tuple[Path, Path], tmp_path: Path, postgres: str
) -> None:
    recipe, space = search
    workers = [
        subprocess.Popen(
            _tune(recipe, space, tmp_path / f"worker{i}", "--trials", "4", "--storage", postgres),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=900) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = _study(tmp_path, postgres)
    ran = [t for t in trials if not t.user_attrs.get("skipped")]
    assert len([t for t in ran if t.state.name in ("COMPLETE", "PRUNED")]) == 4
    dirs = [t.user_attrs["dir"] for t in ran]
    assert len(set(dirs)) == len(dirs)  # no trial run twice
    assert all(any(f"trial {t.number}:" in out for out, _ in outputs) for t in ran)
    by_worker = [[t for t in ran if f"worker{i}" in t.user_attrs["dir"]] for i in range(2)]
    assert all(by_worker)  # both took part


@pytest.mark.parametrize("space", sorted((ROOT / "configs").glob("*.space.yaml")), ids=str)
def test_every_shipped_space_fits_its_recipe(space: Path) -> None:
    from rnnkit.config import from_dict, merge, read_yaml
    from rnnkit.tasks import task_class

    recipe = read_yaml(space.with_name(space.name.replace(".space", "")))
    config_class = task_class(recipe["task"]).Config
    for param in read_space(space):
        for value in param.corners():
            from_dict(config_class, merge(recipe, parse_overrides([as_override(param.key, value)])))


def test_the_first_trial_runs_the_recipe_itself(
    search: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe, space = search
    recipe.write_text(RECIPE.replace("epochs: 3", "epochs: 1, lr: 0.00002"))
    # The second key's recipe value (hidden 32) lies outside its choices: it is sampled.
    space.write_text(SPACE + "model.hidden_size: {choices: [8, 16]}\n")
    out = tmp_path / "search"
    argv = ["tune", "--config", str(recipe), "--space", str(space), "--out", str(out)]
    assert main([*argv, "--trials", "1"]) == 0
    (trial,) = _study(out)
    assert trial.params["train.lr"] == 0.00002 and trial.params["model.hidden_size"] in (8, 16)
    assert "trial 0 (the recipe's own values): dev" in capsys.readouterr().out


@pytest.mark.slow
def test_workers_on_one_machine_draw_different_settings(
    search: tuple[Path, Path], tmp_path: Path
) -> None:
    recipe, space = search
    space.write_text("train.lr: {low: 0.001, high: 0.05, log: true}\n")
    out = tmp_path / "search"
    # Random draws only (five startup trials): two workers seeded alike draw the same ones.
    extra = ("--trials", "4", "--workers", "2", "--startup-trials", "5")
    command = [*_tune(recipe, space, out, *extra), "train.epochs=1"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    ran = [t for t in _study(out) if not t.user_attrs.get("skipped")]
    lrs = [t.params["train.lr"] for t in ran]
    assert len(ran) == 4 and len(set(lrs)) == 4, lrs  # alike-seeded workers drew the same
