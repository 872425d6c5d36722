"""The HTTP API against a real uvicorn server on loopback, for every task and every error."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest

from rnnkit.errors import RnnkitError
from rnnkit.serve.app import ServeConfig, create_app
from rnnkit.serve.command import parse_models
from rnnkit.tasks import TASKS, load_task
from tests.conftest import run_cli
from tests.serving import free_port, running, wait_until_up
from tests.tiny import SAMPLE_INPUTS

OPTIONS = {"lm": {"seed": 3, "length": 30}, "classify": {"top": 0}, "embed": {"k": 3},
           "translate": {"beam": 2, "attention": True}}  # fmt: skip


@pytest.fixture(scope="module")
def loaded(tiny_models):
    return {name: load_task(d) for name, d in tiny_models.items()}


@pytest.fixture(scope="module")
def server(loaded):
    config = ServeConfig(max_inputs=8, max_chars=200, max_body=20_000)
    app = create_app(loaded, config)
    with running(app) as base:
        yield base, app


def post(base: str, path: str, body, **kw) -> httpx.Response:
    if isinstance(body, (bytes, str)):
        return httpx.post(base + path, content=body, timeout=30, **kw)
    return httpx.post(base + path, json=body, timeout=30, **kw)


def assert_error(response: httpx.Response, status: int, *needles: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status
    for needle in needles:
        assert needle in error["message"]


def test_health_and_models(server, loaded):
    base, _ = server
    assert httpx.get(base + "/health").json() == {"status": "ok", "models": len(TASKS)}
    models = {m["name"]: m for m in httpx.get(base + "/v1/models").json()["models"]}
    assert set(models) == set(TASKS)
    assert {n: m["task"] for n, m in models.items()} == {n: n for n in TASKS}
    assert [n for n, m in models.items() if m["streaming"]] == ["lm"]
    assert sorted(models["classify"]["labels"]) == ["animal", "food", "place"]
    assert "B-PER" in models["tag"]["labels"]
    assert models["translate"]["options"]["properties"]["beam"]["maximum"] == 64
    assert models["lm"]["options"]["properties"]["temperature"]["default"] == 1.0
    # What the page needs to know of each model comes with it, not from the task's name.
    assert {n: m["attention_option"] for n, m in models.items() if m["attention_option"]} == {
        "translate": "attention"
    }
    assert models["cipher"]["form"]["button"] is None  # answered as one types
    assert models["lm"]["form"]["prompt"] and models["lm"]["form"]["multiline"]
    assert models["tag"]["form"] == {
        "label": "Sentence", "hint": "Words are split on spaces. Enter tags.", "button": "Tag",
        "multiline": False, "prompt": False,
    }  # fmt: skip


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_answers_over_http_as_it_does_in_python(server, loaded, name):
    base, _ = server
    inputs, options = SAMPLE_INPUTS[name], OPTIONS.get(name, {})
    response = post(base, f"/v1/models/{name}/predict", {"inputs": inputs, "options": options})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "outputs": json.loads(json.dumps(loaded[name].predict(inputs, options)))
    }


def test_language_model_streams_what_predict_returns(server, loaded):
    base, _ = server
    body = {"input": "the c", "options": {"seed": 5, "length": 25, "temperature": 0.8}}
    with httpx.stream("POST", base + "/v1/models/lm/stream", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [e for e in r.read().decode().split("\n\n") if e]
    assert events[-1] == "event: done\ndata: {}"
    pieces = [json.loads(e.removeprefix("data: "))["text"] for e in events[:-1]]
    assert len(pieces) == 25
    assert "".join(pieces) == loaded["lm"].predict(["the c"], body["options"])[0]["text"]
    assert_error(post(base, "/v1/models/tag/stream", {"input": "a b"}), 422, "does not stream")


def test_errors_are_json_with_real_status_codes_and_the_server_keeps_serving(server):
    base, _ = server
    predict = "/v1/models/cipher/predict"
    assert_error(post(base, "/v1/models/nope/predict", {"inputs": []}), 404, "nope")
    assert_error(httpx.get(base + "/no/such/path"), 404)
    assert_error(httpx.get(base + predict), 405)
    assert_error(post(base, predict, b"{not json", headers={"content-type": "application/json"}),
                 422, "not valid JSON")  # fmt: skip
    assert_error(post(base, predict, {"inputs": "URYYB"}), 422, "inputs")
    assert_error(post(base, predict, {"inputs": [1, None]}), 422, "inputs")
    assert_error(post(base, predict, {"inputs": [], "extra": 1}), 422, "extra")
    surrogate = json.dumps({"inputs": ["\ud800"]})  # escaped in ASCII JSON, as a client may
    assert_error(post(base, predict, surrogate, headers={"content-type": "application/json"}),
                 422, "Unicode")  # fmt: skip
    assert_error(
        post(base, predict, {"inputs": ["A"], "options": {"beam": 2}}), 422, "options.beam"
    )
    translate = "/v1/models/translate/predict"
    assert_error(post(base, translate, {"inputs": ["a"], "options": {"beam": 0}}), 422, "beam")
    assert_error(post(base, translate, {"inputs": ["a"], "options": {"beam": "x"}}), 422, "beam")
    lm = "/v1/models/lm/predict"
    assert_error(post(base, lm, {"inputs": ["a"], "options": {"length": 10**9}}), 422, "length")
    assert_error(post(base, lm, {"inputs": ["a"], "options": {"top_p": 0}}), 422, "top_p")
    assert_error(post(base, predict, {"inputs": ["A"] * 9}), 413, "9 inputs", "limit is 8")
    assert_error(post(base, predict, {"inputs": ["A" * 201]}), 413, "201 characters")
    assert_error(post(base, predict, {"inputs": ["A" * 100] * 300}), 413, "body over 20,000 bytes")
    chunked = httpx.post(base + predict, content=iter([b'{"inputs": ["', b"A" * 30_000, b'"]}']),
                         headers={"content-type": "application/json"})  # fmt: skip
    assert_error(chunked, 413, "body over")
    # After all of that, the server still answers.
    ok = post(base, predict, {"inputs": ["URYYB"]})
    assert ok.status_code == 200 and len(ok.json()["outputs"]) == 1


def test_requests_that_arrive_together_are_batched_and_answered_in_order(server, loaded):
    base, app = server
    batcher = app.state.served["cipher"].batcher
    texts = [f"URYYB-{'N' * (i % 7)}" for i in range(48)]
    expected = [r["plaintext"] for r in loaded["cipher"].predict(texts)]
    calls = batcher.calls

    async def fire():
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            bodies = [{"inputs": [t]} for t in texts]
            replies = await asyncio.gather(
                *(client.post("/v1/models/cipher/predict", json=b) for b in bodies)
            )
        return [r.json()["outputs"][0]["plaintext"] for r in replies]

    assert asyncio.run(fire()) == expected
    assert batcher.calls - calls < len(texts)  # fewer predict calls than requests


def test_slow_answers_get_504_and_a_full_queue_503(loaded):
    config = ServeConfig(timeout_s=1e-6)
    with running(create_app({"translate": loaded["translate"]}, config)) as base:
        body = {"inputs": ["je suis fatigue ."] * 4, "options": {"beam": 8}}
        assert_error(post(base, "/v1/models/translate/predict", body), 504, "no answer within")
    config = ServeConfig(max_queue=1, batching=False)
    with running(create_app({"translate": loaded["translate"]}, config)) as base:

        async def flood():
            body = {"inputs": ["il est tres grand ."] * 8, "options": {"beam": 16}}
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                return await asyncio.gather(
                    *(client.post("/v1/models/translate/predict", json=body) for _ in range(12))
                )

        codes = sorted(r.status_code for r in asyncio.run(flood()))
        assert 200 in codes and 503 in codes and set(codes) == {200, 503}


def test_api_key_guards_everything_but_health_and_the_page(loaded):
    app = create_app({"cipher": loaded["cipher"]}, ServeConfig(api_key="s3cret"))
    with running(app) as base:
        body = {"inputs": ["URYYB"]}
        assert httpx.get(base + "/health").status_code == 200
        assert httpx.get(base + "/").status_code == 200
        assert_error(httpx.get(base + "/v1/models"), 401, "API key")
        assert_error(httpx.get(base + "/openapi.json"), 401)
        assert_error(post(base, "/v1/models/cipher/predict", body), 401)
        wrong = {"authorization": "Bearer nope"}
        assert_error(post(base, "/v1/models/cipher/predict", body, headers=wrong), 401)
        for headers in ({"authorization": "Bearer s3cret"}, {"x-api-key": "s3cret"}):
            assert post(base, "/v1/models/cipher/predict", body, headers=headers).status_code == 200


def test_cors_is_off_unless_asked_for(loaded):
    origin = {"origin": "http://example.test"}
    with running(create_app({"cipher": loaded["cipher"]})) as base:
        assert (
            "access-control-allow-origin" not in httpx.get(base + "/health", headers=origin).headers
        )
    config = ServeConfig(cors_origins=["http://example.test"])
    with running(create_app({"cipher": loaded["cipher"]}, config)) as base:
        got = httpx.get(base + "/health", headers=origin).headers
        assert got["access-control-allow-origin"] == "http://example.test"


def test_the_command_starts_a_server_and_refuses_bad_setups(tiny_models, tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "rnnkit", "serve", "--model", f"rot13={tiny_models['cipher']}",
           "--model", str(tiny_models["tag"]), "--port", str(port),
           "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base)
        names = [m["name"] for m in httpx.get(base + "/v1/models").json()["models"]]
        assert names == ["rot13", "model"]
        reply = post(base, "/v1/models/rot13/predict", {"inputs": ["URYYB"]})
        assert reply.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=20)
    for args, needle in [
        (["--model", str(tmp_path / "missing")], "missing"),
        (["--model", str(tiny_models["cipher"]), "--host", "0.0.0.0"], "--api-key-file"),
        (
            ["--model", f"a={tiny_models['cipher']}", "--model", f"a={tiny_models['tag']}"],
            "two models",
        ),
        (["--model", f"a b={tiny_models['cipher']}"], "a name is"),
        (["--model", str(tiny_models["cipher"]), "--max-inputs", "0"], "--max-inputs"),
        (["--model", str(tiny_models["cipher"]), "--read-timeout", "0"], "--read-timeout"),
    ]:
        run = run_cli("serve", *args, "--port", str(free_port()))
        assert run.returncode == 2, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1 and needle in run.stderr, run.stderr


def test_model_names_default_to_the_directory(tmp_path):
    assert parse_models([f"x={tmp_path}", str(tmp_path / "run-7")]) == {
        "x": tmp_path, "run-7": tmp_path / "run-7",
    }  # fmt: skip


def test_model_specs_with_paths_that_hold_an_equals_sign(tmp_path):
    assert parse_models([str(tmp_path / "lr=0.1")]) == {"lr-0.1": tmp_path / "lr=0.1"}
    with pytest.raises(RnnkitError, match="no directory"):
        parse_models(["x="])


def test_cors_reaches_errors_from_the_inner_layers_and_allows_the_key_header(loaded):
    origin = {"origin": "http://example.test"}
    config = ServeConfig(cors_origins=["http://example.test"], api_key="k", max_body=100)
    with running(create_app({"cipher": loaded["cipher"]}, config)) as base:
        denied = httpx.get(base + "/v1/models", headers=origin)
        assert denied.status_code == 401
        assert denied.headers["access-control-allow-origin"] == "http://example.test"
        big = post(base, "/v1/models/cipher/predict", {"inputs": ["A" * 200]},
                   headers={**origin, "x-api-key": "k"})  # fmt: skip
        assert big.status_code == 413 and "access-control-allow-origin" in big.headers
        preflight = httpx.options(base + "/v1/models/cipher/predict", headers={
            **origin, "access-control-request-method": "POST",
            "access-control-request-headers": "x-api-key",
        })  # fmt: skip
        assert preflight.status_code == 200


def test_bodies_that_cannot_be_parsed_are_422_and_405_says_what_is_allowed(server):
    base, _ = server
    reply = post(base, "/v1/models/cipher/predict", b'{"inputs": ["\xff"]}',
                 headers={"content-type": "application/json"})  # fmt: skip
    assert_error(reply, 422)
    wrong = httpx.get(base + "/v1/models/cipher/predict")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"


def test_generation_per_request_is_bounded(server):
    base, _ = server
    body = {"inputs": ["a"] * 8, "options": {"length": 5000}}
    assert_error(post(base, "/v1/models/lm/predict", body), 413, "tokens to generate")


def test_batches_never_exceed_max_batch(loaded):
    config = ServeConfig(max_batch=10, batch_wait_ms=20)
    with running(create_app({"cipher": loaded["cipher"]}, config)) as base:

        async def fire():
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                return await asyncio.gather(*(
                    client.post("/v1/models/cipher/predict", json={"inputs": ["URYYB"] * 7})
                    for _ in range(6)
                ))  # fmt: skip

        assert {r.status_code for r in asyncio.run(fire())} == {200}
