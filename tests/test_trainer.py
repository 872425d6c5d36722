import json
import shutil

import pytest
import torch

from rnnkit import checkpoint as ckpt
from rnnkit.config import from_dict, parse_overrides
from rnnkit.errors import ConfigError
from rnnkit.tasks.cipher import CipherConfig, CipherTask
from rnnkit.train import Trainer

from .conftest import TINY, run_cli


def _task(*extra: str) -> CipherTask:
    return CipherTask.build(from_dict(CipherConfig, parse_overrides([*TINY, *extra])))


def _interrupt_at(trainer: Trainer, call: int) -> None:
    """Run ``trainer.fit()`` until its ``call``-th step, which raises KeyboardInterrupt (as
    Ctrl-C would) before it trains."""
    step, calls = trainer.train_step, []

    def interrupted(batch):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return step(batch)

    trainer.train_step = interrupted
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()


def test_training_learns_rot13_and_writes_logs_and_curve(tmp_path, real_training_curve):
    task = _task("train.epochs=4")
    summary = Trainer(task, task.config.train, tmp_path, log=lambda m: None).fit()
    assert summary["best"] > 0.99
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_target_stops_training_early(tmp_path):
    task = _task("train.epochs=50", "train.target=0.95")
    summary = Trainer(task, task.config.train, tmp_path, log=lambda m: None).fit()
    assert summary["best"] >= 0.95 and summary["best_epoch"] < 50


def test_patience_stops_when_dev_metric_stalls(tmp_path):
    # At this learning rate no whole message is ever right: the metric stays at 0.
    task = _task(
        "train.epochs=30", "train.lr=1e-7", "train.patience=2", "train.metric=message_accuracy"
    )
    Trainer(task, task.config.train, tmp_path, log=lambda m: None).fit()
    # Epoch 1 sets the best (0); epochs 2 and 3 do not beat it: patience 2 stops after 3.
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3


def test_reloaded_model_predicts_exactly_what_it_predicted(tmp_path):
    from rnnkit import checkpoint as ckpt

    task = _task("train.epochs=1", "model.bidirectional=true", "model.layers=2")
    Trainer(task, task.config.train, tmp_path / "run", log=lambda m: None).fit()
    ckpt.save_model(tmp_path / "saved", task)
    loaded = CipherTask.from_dir(tmp_path / "saved")
    batch = task.heldout_batches("test")[0]
    task.model.eval()
    with torch.no_grad():
        before = task.model(batch["source"], batch["mask"])
        after = loaded.model(batch["source"], batch["mask"])
    assert torch.equal(before, after)


def test_max_minutes_stops_mid_epoch_and_still_evaluates(tmp_path):
    task = _task("train.epochs=5", "data.train_messages=200000", "train.max_minutes=0.02")
    summary = Trainer(task, task.config.train, tmp_path, log=lambda m: None).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["step"] < 200000 // 32
    assert summary["best"] is not None


def test_no_epoch_starts_when_the_budget_left_is_shorter_than_a_dev_pass(tmp_path):
    # Epochs of a few steps, and a dev pass made to take 2 s: after epoch 1 (about 2.3 s into
    # a 3 s budget) another epoch could train for a moment and then overrun by a dev pass.
    import time

    task = _task("train.epochs=5", "data.train_messages=64", "train.max_minutes=0.05")
    evaluate = task.evaluate

    def slow_evaluate(*args, **kwargs):
        time.sleep(2.0)
        return evaluate(*args, **kwargs)

    task.evaluate = slow_evaluate
    lines: list[str] = []
    Trainer(task, task.config.train, tmp_path, log=lines.append).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["step"] == len(task.train_batches(1)), "epoch 1 ended by itself"
    assert records[0]["dev_s"] >= 2.0 and records[0]["elapsed_s"] < 3.0
    assert len(records) == 1
    assert any(line.startswith("not starting epoch 2") for line in lines)


def test_a_plateau_run_resumes_to_the_same_weights_and_rates(tmp_path):
    # lr 1e-7: no whole message is ever right, so every epoch after the first cuts the rate.
    keys = ("train.epochs=4", "train.lr=1e-7", "train.schedule=plateau", "train.warmup_steps=6",
            "train.metric=message_accuracy", "train.checkpoint_every=3",
            "data.train_messages=512", "data.eval_messages=64")  # fmt: skip
    torch.manual_seed(0)
    whole = _task(*keys)
    Trainer(whole, whole.config.train, tmp_path / "whole", log=lambda m: None).fit()
    torch.manual_seed(0)
    cut = _task(*keys)
    trainer = Trainer(cut, cut.config.train, tmp_path / "cut", log=lambda m: None)
    _interrupt_at(trainer, 3 * len(cut.train_batches(1)) - 2)  # in epoch 3, after one cut
    # As written before schedules were torch's: a scale, no schedule state.
    shutil.copytree(tmp_path / "cut", tmp_path / "legacy", ignore=shutil.ignore_patterns(".*"))
    meta = json.loads((tmp_path / "legacy" / "trainer.json").read_text())
    meta["state"]["lr_scale"] = 0.5
    del meta["schedule"]
    ckpt.commit(tmp_path / "legacy", {"trainer.json": ckpt.json_bytes(meta)})
    for run in ("cut", "legacy"):
        torch.manual_seed(0)
        resumed = _task(*keys)
        Trainer(resumed, resumed.config.train, tmp_path / run, log=lambda m: None).fit(True)
        for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
            assert torch.equal(a, b), run
        rates = [json.loads(line)["lr"] for line in (tmp_path / run / "metrics.jsonl").open()]
        assert rates == pytest.approx([1e-7, 1e-7, 5e-8, 2.5e-8], rel=1e-12)  # before its cut


def _diverge_and_check_disk(tmp_path, task, break_loss, message):
    """Train with ``break_loss(loss, call)`` spoiling one call; training must stop with
    ``message`` while the files on disk hold the finished first epoch, all finite."""
    from rnnkit.errors import DivergedError

    real_loss, calls = task.model.loss, 0

    def loss(batch):
        nonlocal calls
        calls += 1
        return break_loss(real_loss(batch), calls)

    task.model.loss = loss
    with pytest.raises(DivergedError, match=message):
        Trainer(task, task.config.train, tmp_path, log=lambda m: None).fit()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    saved = CipherTask.from_dir(tmp_path)
    assert all(torch.isfinite(p).all() for p in saved.model.parameters())


def test_a_diverging_run_stops_before_its_broken_weights_reach_a_checkpoint(tmp_path):
    task = _task("train.epochs=3")
    per_epoch = len(task.train_batches(1))

    def turn_nan(value, call):
        return value * float("nan") if call > per_epoch + 2 else value

    _diverge_and_check_disk(tmp_path, task, turn_nan, r"loss is nan at step \d+ \(epoch 2\)")


@pytest.mark.parametrize(
    ("clip", "message"),
    [("null", r"non-finite weights in \S+ at step \d+"), ("1.0", r"gradient norm is (nan|inf)")],
)
def test_a_finite_loss_with_a_broken_gradient_never_reaches_a_checkpoint(tmp_path, clip, message):
    task = _task("train.epochs=3", f"train.clip_norm={clip}")
    per_epoch = len(task.train_batches(1))
    weight = next(task.model.parameters())

    def add_an_infinite_slope(value, call):
        if call != 2 * per_epoch:  # the last batch of epoch 2, just before its checkpoint
            return value
        return value + torch.sqrt((weight - weight.detach()).square().sum())  # 0, slope ∞

    _diverge_and_check_disk(tmp_path, task, add_an_infinite_slope, message)


def test_bf16_trains_under_bfloat16_autocast_and_keeps_float32_weights(tmp_path):
    task = _task("train.epochs=4", "train.precision=bf16", "train.device=cpu")
    seen: set[torch.dtype] = set()
    first_linear = next(m for m in task.model.modules() if isinstance(m, torch.nn.Linear))
    first_linear.register_forward_hook(lambda module, args, out: seen.add(out.dtype))
    summary = Trainer(task, task.config.train, tmp_path, log=lambda m: None).fit()
    assert torch.bfloat16 in seen  # the training steps ran under autocast
    assert summary["best"] > 0.99
    assert all(p.dtype == torch.float32 for p in task.model.parameters())


def test_tensorboard_scalars_for_every_step_and_dev_metric(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = tmp_path / "board"
    run = run_cli("train", "cipher", *TINY, f"train.tensorboard={board}", "--out",
                  str(tmp_path / "m"))  # fmt: skip
    assert run.returncode == 0, run.stderr
    events = EventAccumulator(str(board))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/terms_per_s"} <= tags
    assert {"dev/char_accuracy", "dev/message_accuracy", "dev/loss"} <= tags
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == 3 * 64
    assert [e.step for e in events.Scalars("dev/char_accuracy")] == [1, 2, 3]


@pytest.mark.slow  # inductor compiles C++ for the step: tens of seconds
def test_compiled_training_step_matches_eager(tmp_path):
    runs = {}
    for mode in ("false", "true"):
        out = tmp_path / mode
        # fp32: bf16 rounds differently where the compiler fuses, beyond this tolerance
        run = run_cli("train", "cipher", *TINY, "train.max_steps=6", f"train.compile={mode}",
                      "train.precision=fp32", "--deterministic", "--out", str(out))  # fmt: skip
        assert run.returncode == 0, run.stderr
        runs[mode] = ckpt.read_tensors(out / "trainer.safetensors")
    eager, compiled = runs["false"], runs["true"]
    for name in (k for k in eager if k.startswith("model.")):
        assert torch.allclose(eager[name], compiled[name], atol=1e-5), name


def test_precision_fp32_never_autocasts_and_auto_follows_the_cpu(tmp_path):
    from rnnkit.train import autocast_dtype, native_bf16

    cpu = torch.device("cpu")
    for precision, want in (("fp32", None), ("bf16", torch.bfloat16)):
        task = _task(f"train.precision={precision}")
        assert autocast_dtype(task.config.train, cpu) == want
    auto = _task().config.train
    assert auto.precision == "auto"
    assert autocast_dtype(auto, cpu, cpu_bf16_pays=True) == (
        torch.bfloat16 if native_bf16() else None
    )
    assert autocast_dtype(auto, cpu, cpu_bf16_pays=False) is None  # a tagger, a classifier
    seen: set[torch.dtype] = set()  # and the Trainer asks the task
    task = _task("train.max_steps=1")
    first_linear = next(m for m in task.model.modules() if isinstance(m, torch.nn.Linear))
    first_linear.register_forward_hook(lambda module, args, out: seen.add(out.dtype))
    task.cpu_bf16_pays = False
    Trainer(task, task.config.train, tmp_path, log=lambda m: None).fit()
    assert seen == {torch.float32}


def test_the_old_amp_switches_name_the_new_setting_and_old_directories_upgrade():
    from rnnkit.config import upgrade

    with pytest.raises(ConfigError, match="'train.cpu_amp' is now called 'train.precision'"):
        _task("train.cpu_amp=true")
    for old, want in (({"cpu_amp": True}, "bf16"), ({"amp": False}, "fp32"), ({}, None)):
        got = upgrade({"train": {"lr": 0.1, **old}})["train"]
        assert got.get("precision") == want and "amp" not in got and "cpu_amp" not in got


@pytest.mark.parametrize("average", ["mean", "ema"])
def test_averaged_weights_are_scored_and_saved_and_resume(tmp_path, average):
    keys = ("train.epochs=2", f"train.average={average}", "train.average_start=0.5",
            "train.average_decay=0.9", "train.checkpoint_every=2", "train.lr=0.01",
            "data.train_messages=256", "data.eval_messages=64")  # fmt: skip
    torch.manual_seed(0)
    task = _task(*keys)
    trainer = Trainer(task, task.config.train, tmp_path / "whole", log=lambda m: None)
    step, seen = trainer.train_step, []

    def recorded(batch):
        value = step(batch)
        seen.append([p.detach().clone() for p in task.model.parameters()])
        return value

    trainer.train_step = recorded
    trainer.fit()
    total = len(seen)
    start = next(i for i in range(total) if (i + 1) / total >= 0.5)  # steps counted from 1
    want = [w.clone() for w in seen[start]]  # the first step averaged: its weights as they are
    for n, later in enumerate(seen[start + 1 :], start=2):
        for w, new in zip(want, later, strict=True):
            w.lerp_(new, 1 / n if average == "mean" else 0.1)
    saved = ckpt.read_tensors(tmp_path / "whole" / "model.safetensors")
    names = [n for n, _ in task.model.named_parameters()]
    for name, w in zip(names, want, strict=True):  # epoch 2 is the best (a higher accuracy)
        torch.testing.assert_close(saved[name], w, rtol=1e-5, atol=1e-6)
    assert not torch.equal(saved[names[0]], seen[-1][0])  # not the last step's own weights
    # Interrupted after the average started, and resumed: the same averaged weights.
    torch.manual_seed(0)
    cut = _task(*keys)
    stopped = Trainer(cut, cut.config.train, tmp_path / "cut", log=lambda m: None)
    _interrupt_at(stopped, total - 1)
    torch.manual_seed(0)
    again = _task(*keys)
    Trainer(again, again.config.train, tmp_path / "cut", log=lambda m: None).fit(True)
    resumed = ckpt.read_tensors(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(resumed[k], saved[k]) for k in saved)
