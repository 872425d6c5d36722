"""The work budget of a predict call (rnnkit/budget.py): batches cut by padded size so that
memory stays bounded, and a deadline that stops the work itself, in Python and on the
server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from rnnkit import budget
from rnnkit.data.batching import bucket_batches, longest_first
from rnnkit.errors import ConfigError, DeadlineError
from rnnkit.nn.search import beam_search, greedy_search
from rnnkit.serve.app import ServeConfig, create_app
from rnnkit.serve.batching import Batcher
from rnnkit.tasks import load_task
from rnnkit.tasks.base import NoOptions
from tests.serving import running

SLOW_STEP_S = 0.002  # a decode step of the fake model below
MARGIN_S = 1.0  # a loaded 2-core machine: how late a check may come, generously


# --------------------------------------------------------------------------- batching
def _before(lengths: list[int], batch_size: int) -> list[list[int]]:
    """longest_first as it was before the budget: sorted by length, cut by count alone."""
    todo = [i for i, n in enumerate(lengths) if n]
    batches = bucket_batches([lengths[i] for i in todo], batch_size, shuffle=False)
    return [[todo[j] for j in batch] for batch in batches]


def test_batches_within_the_budget_are_those_of_the_count_alone():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        n, size = int(torch.randint(0, 60, (1,), generator=g)), int(torch.randint(1, 9, (1,)))
        lengths = torch.randint(0, 12, (n,), generator=g).tolist()
        expected = _before(lengths, size)
        assert longest_first(lengths, size) == expected
        assert longest_first(lengths, size, max_tokens=size * 12 * 3, widths=[3] * n) == expected


def test_batches_are_cut_by_padded_size():
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        n = int(torch.randint(1, 60, (1,), generator=g))
        lengths = torch.randint(0, 40, (n,), generator=g).tolist()
        widths = torch.randint(1, 5, (n,), generator=g).tolist()
        batches = longest_first(lengths, 16, max_tokens=50, widths=widths)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == [i for i, x in enumerate(lengths) if x]  # each item once
        assert [lengths[i] for i in flat] == sorted((x for x in lengths if x), reverse=True)
        for b in batches:
            padded = len(b) * max(lengths[i] for i in b) * max(widths[i] for i in b)
            assert len(b) <= 16 and (padded <= 50 or len(b) == 1)


# --------------------------------------------------------------------------- deadline
def test_deadline_context_and_its_default(monkeypatch):
    budget.check_deadline()  # none in force: nothing to check
    with budget.deadline(0):
        time.sleep(0.001)
        with pytest.raises(DeadlineError, match=r"^stopped after 0 s: the work budget of"):
            budget.check_deadline()
        with budget.deadline(None):  # an inner block may lift it
            budget.check_deadline()
    budget.check_deadline()  # gone with its block
    for bad in (-1, float("nan"), "5", True):
        with pytest.raises(ConfigError):
            budget.deadline(bad)

    calls = budget.budgeted(lambda: budget.check_deadline() or "ran")
    monkeypatch.setattr(budget, "DEFAULT_SECONDS", 0.0)
    time.sleep(0.001)
    with pytest.raises(DeadlineError):  # no deadline set: the default applies
        calls()
    with budget.deadline(None):  # the caller's choice wins over the default
        assert calls() == "ran"


def test_a_bound_iterator_keeps_its_deadline_in_another_thread():
    def forever():
        while True:
            budget.check_deadline()
            yield 1
            time.sleep(SLOW_STEP_S)

    with budget.deadline(0.05):
        pieces = budget.bound(forever())
    start = time.monotonic()
    with ThreadPoolExecutor(1) as pool, pytest.raises(DeadlineError):
        # An executor thread, like the server's, knows nothing of the caller's context.
        while True:
            pool.submit(next, pieces).result()
    assert time.monotonic() - start < 0.05 + MARGIN_S


def _never_ending_step(calls: list[int]):
    """A step function over a 5-word vocabulary that never chooses </s> (id 2)."""

    def step(prev: torch.Tensor, state: dict) -> tuple:
        calls.append(1)
        time.sleep(SLOW_STEP_S)
        n = prev.shape[0]
        log_probs = torch.log_softmax(torch.tensor([[-9.0, -9.0, -9.0, 0.0, -1.0]] * n), -1)
        return log_probs, torch.ones(n, 1), state

    return step


@pytest.mark.parametrize("beam", [1, 4])
def test_the_deadline_stops_greedy_and_beam_search_mid_loop(beam):
    calls: list[int] = []
    state = {"hidden": torch.zeros(3, 4)}
    search = greedy_search if beam == 1 else beam_search
    extra = {} if beam == 1 else {"beam_size": beam}
    start = time.monotonic()
    with budget.deadline(0.05), pytest.raises(DeadlineError):
        search(_never_ending_step(calls), state, 1, 2, 100_000, **extra)
    assert time.monotonic() - start < 0.05 + MARGIN_S
    assert 0 < len(calls) < 100_000


def test_the_deadline_stops_language_model_generation(tiny_models):
    lm = load_task(tiny_models["lm"])
    start = time.monotonic()
    with budget.deadline(0.05), pytest.raises(DeadlineError):
        lm.predict(["the c"] * 50, {"length": 5000, "seed": 1})
    with budget.deadline(0.05):
        pieces = lm.stream("the c", {"length": 5000, "seed": 1})
    with pytest.raises(DeadlineError):
        list(pieces)  # asked for after the block: the stream keeps the deadline it was made in
    assert time.monotonic() - start < 2 * (0.05 + MARGIN_S)
    assert len(lm.predict(["the c"], {"length": 20, "seed": 1})[0]["text"]) == 20


# --------------------------------------------------------------------------- answers
LONG = "je suis tres fatigue . il est grand . " * 6
CHUNKED_INPUTS = {
    "translate": ["je suis fatigue .", "", LONG, "il est tres grand .", LONG[:60], "nous"],
    "tag": ["the man saw Elena Annason in Paris", "", "Zorro went to Oslo " * 9, "x"],
    "cipher": ["FUVEMVEMNMERPDRF", "", "URYYB JBEYQ " * 30, "N"],
    "classify": ["a dog near the river", "", "the cat ate fish near the river " * 8, "x"],
}
CHUNKED_OPTIONS = {"translate": {"beam": 3}, "classify": {"top": 0}}


@pytest.mark.parametrize("name", sorted(CHUNKED_INPUTS))
def test_cutting_batches_by_the_budget_leaves_answers_unchanged(tiny_models, name, monkeypatch):
    task = load_task(tiny_models[name])
    inputs, options = CHUNKED_INPUTS[name], CHUNKED_OPTIONS.get(name, {})
    whole = task.predict(inputs, options)
    monkeypatch.setattr(budget, "PREDICT_TOKENS", 1)  # every input a batch of its own
    alone = task.predict(inputs, options)
    assert _close(alone, whole)


def _close(a, b, tol=1e-5) -> bool:
    """Equal plain data, floats within ``tol`` (their last bits depend on a batch's padding)."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tol
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b, strict=True))
    return a == b


# ------------------------------------------------------------------- the worst case
WORST_PYTHON = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # fail, not swap, if unbounded
import torch
torch.set_num_threads(1)
import rnnkit
from rnnkit import budget
from rnnkit.errors import DeadlineError
from rnnkit.tasks.base import DEFAULT_LIMITS
task = rnnkit.load(sys.argv[1])
text = ("je suis tres fatigue . " * 500)[: DEFAULT_LIMITS.max_chars]
inputs = [text] * DEFAULT_LIMITS.max_inputs
start = time.monotonic()
try:
    with budget.deadline(float(sys.argv[2])):
        task.predict(inputs, {"beam": 64})
    outcome = "answered"
except DeadlineError as err:
    outcome = str(err)
seconds = time.monotonic() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"outcome": outcome, "seconds": seconds, "peak": peak}))
"""


@pytest.mark.slow
def test_the_worst_case_of_every_bound_stops_in_time_within_bounded_memory(tiny_models):
    """1,024 inputs of 10,000 characters at beam 64: before the budget, 8 GB and minutes."""
    deadline = 3.0
    run = subprocess.run(
        [sys.executable, "-c", WORST_PYTHON, str(tiny_models["translate"]), str(deadline)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.splitlines()[-1])
    assert got["outcome"] == "answered" or got["outcome"].startswith("stopped after 3 s")
    assert got["seconds"] < deadline + MARGIN_S
    assert got["peak"] < 1 << 30, f"{got['peak'] / 2**20:.0f} MiB at its peak"


# ------------------------------------------------------------------------- the server
def test_the_server_gives_504_when_predict_ran_out_of_time(tiny_models):
    task = load_task(tiny_models["cipher"])

    def predict(inputs, options):
        raise DeadlineError("stopped after 1 s: the work budget of this call ran out")

    task.predict = predict  # the server's batcher calls it
    with running(create_app({"cipher": task})) as base:
        reply = httpx.post(f"{base}/v1/models/cipher/predict", json={"inputs": ["X"]}, timeout=30)
    assert reply.status_code == 504, reply.text
    assert reply.json()["error"]["message"] == "no answer within 30 s"


def test_the_batcher_runs_each_group_under_its_latest_deadline():
    seen: list[float] = []

    def predict(inputs, options):
        start = time.monotonic()
        while True:  # work that never ends by itself
            try:
                budget.check_deadline()
            except DeadlineError:
                seen.append(time.monotonic() - start)
                raise
            time.sleep(SLOW_STEP_S)

    async def main():
        batcher = Batcher(predict, wait_s=0.05)
        batcher.start()
        now = time.monotonic()
        options = NoOptions()
        calls = [
            batcher.submit(["a"], options, now + 0.1),
            batcher.submit(["b"], options, now + 0.3),
        ]
        try:
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await batcher.stop()

    results = asyncio.run(main())
    assert all(isinstance(r, DeadlineError) for r in results)
    # One call for both, stopped at the later deadline (it began after the 0.05 s wait).
    assert len(seen) == 1 and 0.15 < seen[0] < 0.3 + MARGIN_S


@pytest.mark.slow
def test_a_request_at_every_bound_frees_the_model_for_the_next(tiny_models):
    """Defaults of every bound but the time (2 s here): the worst request gets its answer or a
    504 in time, and the model, freed, answers a small request right after in under 1 s."""
    config = ServeConfig(timeout_s=2.0)
    models = {name: load_task(tiny_models[name]) for name in ("translate", "lm")}
    text = ("je suis tres fatigue . " * 100)[: config.max_chars]
    lm_inputs = config.max_generated // 5000
    worst = {
        "translate": {"inputs": [text] * config.max_inputs, "options": {"beam": 64}},
        "lm": {"inputs": [text] * lm_inputs, "options": {"length": 5000, "temperature": 0}},
    }
    small = {
        "translate": {"inputs": ["je suis fatigue ."], "options": {"beam": 2}},
        "lm": {"inputs": ["the c"], "options": {"length": 5, "seed": 1}},
    }
    with running(create_app(models, config)) as base, httpx.Client(timeout=60) as client:
        for name in models:
            url = f"{base}/v1/models/{name}/predict"
            start = time.monotonic()
            reply = client.post(url, json=worst[name])
            assert reply.status_code in (200, 504), reply.text
            assert time.monotonic() - start < config.timeout_s + MARGIN_S
            start = time.monotonic()
            reply = client.post(url, json=small[name])
            assert reply.status_code == 200, reply.text
            assert time.monotonic() - start < 1.0, f"{name}: the model was still busy"
        body = {"input": text, "options": {"length": 5000, "temperature": 0}}
        start = time.monotonic()
        with client.stream("POST", f"{base}/v1/models/lm/stream", json=body) as events:
            assert events.status_code == 200
            lines = list(events.iter_lines())
        assert {"event: done", "event: error"} & set(lines), lines[-4:]
        assert time.monotonic() - start < config.timeout_s + MARGIN_S
