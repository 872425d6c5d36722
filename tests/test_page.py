"""The web page at ``/`` in a real headless Chromium, against a real ``rnnkit serve`` of tiny
cipher, tagger and translator models: each answer on the page must be what the API returns,
the page must fetch nothing from outside the server, and it must fit a phone's width.

Set ``RNNKIT_SCREENSHOTS=1`` to refresh the screenshots in ``docs/img``.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.tiny import train_tiny

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason=f"browser test needs {CHROMIUM} and {CHROMEDRIVER} (Debian: apt install chromium "
    "chromium-driver)",
)

MODELS = {"cipher": "cipher", "tagger": "tag", "translator": "translate"}
# tests.tiny's translator is too small to translate anything; this one learns its toy pairs in
# about a second, so that the page has a real translation (and attention) to show.
EXTRA = {"translate": ("train.epochs=10", "model.hidden_size=32", "model.decoder_size=32",
                       "train.lr=0.01")}  # fmt: skip
WAIT = 20  # seconds for one answer to appear; the tiny models answer in milliseconds


# ------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("page-models")
    return {
        name: train_tiny(task, root / name, *EXTRA.get(task, ())) for name, task in MODELS.items()
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(model_dirs: dict[str, Path], port: int) -> list[str]:
    models = [arg for name, d in model_dirs.items() for arg in ("--model", f"{name}={d}")]
    return [sys.executable, "-m", "rnnkit", "serve", *models, "--host", "127.0.0.1",
            "--port", str(port)]  # fmt: skip


@pytest.fixture(scope="module")
def server(model_dirs, tmp_path_factory):
    """The base URL of a running ``rnnkit serve``; its output goes to a log shown on failure."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("page-server") / "server.log"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            server_command(model_dirs, port), stdout=log, stderr=subprocess.STDOUT, env=env
        )
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"rnnkit serve exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(base + "health", timeout=2) as res:
                    if json.load(res).get("status") == "ok":
                        break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"rnnkit serve did not answer /health in 60 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Page:
    """The browser, plus every URL it has requested since it started."""

    def __init__(self, driver: webdriver.Chrome, base: str):
        self.driver = driver
        self.base = base
        self.urls: list[str] = []

    def drain(self) -> list[str]:
        # The performance log is emptied by each read, so keep what it held.
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                self.urls.append(message["params"]["request"]["url"])
        return self.urls

    def open(self, model: str) -> None:
        self.driver.get(self.base)
        WebDriverWait(self.driver, WAIT).until(
            lambda d: d.find_element(By.ID, "model").is_enabled(), "the model list never loaded"
        )
        Select(self.driver.find_element(By.ID, "model")).select_by_value(model)
        self.drain()

    def type(self, text: str, *keys: str) -> None:
        box = self.driver.find_element(By.ID, "input")
        box.clear()
        box.send_keys(text, *keys)

    def answer(self, text: str):
        """``#output`` once it holds the complete answer to ``text``."""
        output = self.driver.find_element(By.ID, "output")

        def done(_):
            state = output.get_attribute("data-state")
            if state == "error":
                error = self.driver.find_element(By.ID, "error").text
                raise AssertionError(f"the page shows an error: {error}")
            return state == "done" and output.get_attribute("data-input") == text

        WebDriverWait(self.driver, WAIT).until(done, f"no answer to {text!r} on the page")
        return output

    def screenshot(self, name: str, tmp_path: Path) -> Path:
        folder = ROOT / "docs" / "img" if os.environ.get("RNNKIT_SCREENSHOTS") else tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"serve-{name}.png"
        path.unlink(missing_ok=True)
        # The whole page, not just the window (a heatmap may lie below it), cropped to the
        # column the content fills.
        box = self.driver.execute_script(
            """const r = document.querySelector("main").getBoundingClientRect();
            return {x: Math.max(0, r.left), y: 0, width: Math.min(r.width, innerWidth),
                    height: document.documentElement.scrollHeight, scale: 1};"""
        )
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": box}
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"no screenshot at {path}"
        return path


@pytest.fixture(scope="module")
def page(server):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield Page(driver, server)
    finally:
        driver.quit()


def predict(base: str, model: str, text: str, options: dict | None = None) -> dict:
    body = json.dumps({"inputs": [text], "options": options or {}}).encode()
    request = urllib.request.Request(
        f"{base}v1/models/{model}/predict", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as res:
        return json.load(res)["outputs"][0]


def text_of(element) -> str:
    # textContent, not .text: the exact characters, without CSS-generated labels or reflow.
    return element.get_attribute("textContent")


# ---------------------------------------------------------------------------- tests
def test_cipher_decrypts_as_you_type(page, server, tmp_path):
    page.open("cipher")
    assert page.driver.find_element(By.ID, "task").text == "cipher"
    ciphertext = "FUVEMVEMNMERPDRF"
    page.type(ciphertext)  # no button: the page answers the typing itself
    output = page.answer(ciphertext)
    assert text_of(output) == predict(server, "cipher", ciphertext)["plaintext"]
    page.screenshot("cipher", tmp_path)


def test_tagger_marks_the_entities(page, server, tmp_path):
    page.open("tagger")
    sentence = "the man saw Elena Annason in Paris"
    page.type(sentence, Keys.ENTER)  # Enter submits
    page.answer(sentence)
    expected = predict(server, "tagger", sentence)["spans"]
    marks = page.driver.find_elements(By.CSS_SELECTOR, "#output mark.entity")
    assert marks, f"no entity marked; the API found {expected}"
    assert [text_of(m) for m in marks] == [s["text"] for s in expected]
    assert [m.get_attribute("data-type") for m in marks] == [s["type"] for s in expected]
    page.screenshot("tagger", tmp_path)


def heatmap_colours(driver) -> int:
    """How many distinct pixel values the ``#heatmap`` canvas holds (1 = blank)."""
    return driver.execute_script(
        """
        const canvas = document.getElementById("heatmap");
        if (canvas.hidden || !canvas.width || !canvas.height) return 0;
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        const seen = new Set();
        for (let i = 0; i < data.length && seen.size < 50; i += 4) {
          seen.add(((data[i] * 256 + data[i + 1]) * 256 + data[i + 2]) * 256 + data[i + 3]);
        }
        return seen.size;
        """
    )


def test_translator_shows_the_translation_and_its_attention(page, server, tmp_path):
    page.open("translator")
    sentence = "je suis fatigue ."
    page.type(sentence)
    page.driver.find_element(By.ID, "submit").click()
    output = page.answer(sentence)
    expected = predict(server, "translator", sentence, {"attention": True})
    assert expected["translation"], "the tiny translator says nothing: the check would be empty"
    shown = output.find_element(By.CSS_SELECTOR, ".translation")
    assert text_of(shown) == expected["translation"]
    assert expected["attention"], "the API returned no attention weights to draw"
    assert heatmap_colours(page.driver) > 1, "the attention heatmap is blank"
    page.screenshot("translate", tmp_path)


def test_fits_a_phone(page):
    page.driver.set_window_size(390, 900)
    try:
        width = page.driver.execute_script("return window.innerWidth")
        assert width <= 400, f"the window is {width} px wide, not a phone's"
        for model, text in [
            ("translator", "il est tres grand ."),
            ("tagger", "Boris Carlason and Farid Dmitrison went from Lima to Hanoi and Quito"),
            ("cipher", "FUVEMVEMNMERPDRF" * 6),
        ]:
            page.open(model)
            page.type(text, Keys.ENTER)
            page.answer(text)
            scroll = page.driver.execute_script(
                "return [document.documentElement.scrollWidth, window.innerWidth]"
            )
            assert scroll[0] <= scroll[1], f"{model}: the page scrolls sideways at {scroll[1]} px"
    finally:
        page.driver.set_window_size(1200, 900)


def test_page_fetches_only_from_its_server(page, server):
    # Run last in this file, so that the log holds every request the tests above caused.
    page.open("translator")
    page.type("je suis fatigue .", Keys.ENTER)
    page.answer("je suis fatigue .")
    urls = page.drain()
    assert any(u.endswith("/v1/models") for u in urls), f"no model list requested: {urls}"
    outside = [u for u in urls if not (u.startswith(server) or u.startswith("data:"))]
    assert not outside, f"the page requested URLs outside {server}: {outside}"
