import contextlib
import functools
import hashlib
import http.server
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rnnkit import datasets
from rnnkit.cli import main
from rnnkit.datasets import (
    DataFile,
    Dataset,
    fetch,
    import_dataset,
    list_datasets,
    parse_registry,
)
from rnnkit.datasets.registry import tomllib  # tomli on Python 3.10
from rnnkit.errors import DataError

from .conftest import ROOT, SHARED_DATA, run_cli

FILES = {"a.txt": b"alpha\n", "sub/b.txt": b"beta\n" * 1000}


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path.endswith("/flaky") and self.server.requests.count(self.path) == 1:
            self.send_error(503)  # the first time only
            return
        if self.path.endswith("/hang"):  # promises 100 bytes, sends 10, waits for the test
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.server.release.wait(60)
            return
        if self.path.endswith("/truncated"):  # promises 100 bytes, sends 10, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.close_connection = True
            return
        super().do_GET()


@contextlib.contextmanager
def serving(directory: Path):
    """A loopback HTTP server over ``directory``: yields (base URL, list of paths requested)."""
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(directory))
    )
    httpd.requests = []
    httpd.release = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.requests
    finally:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def server(tmp_path):
    """A loopback server over ``tmp_path / "www"``: yields (that root, base URL, requests)."""
    root = tmp_path / "www"
    root.mkdir()
    with serving(root) as (url, requests):
        yield root, url, requests


def fake_registry(base_url, files=FILES, import_only=()):
    """A one-dataset registry, ``fake``, whose files are ``files`` served at ``base_url/fake/``."""
    entries = tuple(
        DataFile(
            path,
            len(data),
            hashlib.sha256(data).hexdigest(),
            None if path in import_only else f"{base_url}/fake/{path}",
        )
        for path, data in files.items()
    )
    return {"fake": Dataset("fake", "fake", "CC0", "made up for the tests", entries)}


def serve(root, files=FILES):
    for path, data in files.items():
        (root / "fake" / path).parent.mkdir(parents=True, exist_ok=True)
        (root / "fake" / path).write_bytes(data)


def everything(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def test_fetch_downloads_and_verifies(server, tmp_path):
    root, url, requests = server
    serve(root)
    registry = fake_registry(url)
    data = tmp_path / "data"
    outcome = fetch("fake", data, registry=registry)
    assert outcome.written == ["a.txt", "sub/b.txt"]
    for path, content in FILES.items():
        assert (data / "fake" / path).read_bytes() == content
    assert everything(data) == ["fake", "fake/a.txt", "fake/sub", "fake/sub/b.txt"]  # no .part
    assert list_datasets(data, registry)[0].status == "verified"
    assert requests == ["/fake/a.txt", "/fake/sub/b.txt"]


@pytest.mark.parametrize("corrupt", [b"BETA\n" * 1000, b"beta\n" * 1001, b"beta\n"])
def test_a_checksum_mismatch_keeps_nothing(server, tmp_path, corrupt):
    root, url, _ = server
    registry = fake_registry(url)
    serve(root, {**FILES, "sub/b.txt": corrupt})  # a.txt is fine, b.txt is not
    data = tmp_path / "data"
    with pytest.raises(DataError) as err:
        fetch("fake", data, registry=registry, retries=0)
    message = str(err.value)
    assert message.startswith("fake/sub/b.txt: ") and "\n" not in message
    expected = registry["fake"].files[1].sha256
    assert expected in message
    if len(corrupt) <= len(FILES["sub/b.txt"]):  # the whole body came in: both hashes shown
        assert f"got {hashlib.sha256(corrupt).hexdigest()}" in message
    else:
        assert "more than the expected 5000 bytes" in message
    assert not data.exists()  # not even the folders it made, nor the good a.txt


def test_a_failed_download_keeps_nothing_in_an_existing_folder(server, tmp_path):
    root, url, _ = server
    serve(root, {"a.txt": FILES["a.txt"]})  # sub/b.txt: 404
    data = tmp_path / "data"
    (data / "fake").mkdir(parents=True)
    (data / "fake" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"^fake/sub/b\.txt: download failed: HTTP 404"):
        fetch("fake", data, registry=fake_registry(url), retries=0)
    assert everything(data) == ["fake", "fake/notes.txt"]


def test_a_connection_cut_mid_file_keeps_nothing(server, tmp_path):
    root, url, _ = server
    serve(root)
    registry = fake_registry(url, {"truncated": b"0123456789" * 10})
    with pytest.raises(
        DataError,
        match=r"^fake/truncated: download failed: the connection closed after 10 bytes, 90 short",
    ):
        fetch("fake", tmp_path / "data", registry=registry, retries=0)
    assert not (tmp_path / "data").exists()


def test_a_bad_mirror_address_is_a_one_line_error(tmp_path):
    registry = fake_registry("https://example.invalid")
    with pytest.raises(DataError, match=r"^fake/a\.txt: download failed: unknown url type"):
        fetch("fake", tmp_path, "localhost:1", registry=registry)


def test_files_already_present_are_not_downloaded_again(server, tmp_path):
    root, url, requests = server
    serve(root)
    registry = fake_registry(url)
    data = tmp_path / "data"
    fetch("fake", data, registry=registry)
    requests.clear()
    outcome = fetch("fake", data, registry=registry)
    assert (outcome.written, outcome.present) == ([], ["a.txt", "sub/b.txt"])
    assert requests == []
    (data / "fake" / "a.txt").write_bytes(b"ALPHA\n")  # same size, other bytes
    assert list_datasets(data, registry)[0].status == "damaged (a.txt)"
    outcome = fetch("fake", data, registry=registry)
    assert (outcome.written, outcome.present) == (["a.txt"], ["sub/b.txt"])
    assert requests == ["/fake/a.txt"]
    assert (data / "fake" / "a.txt").read_bytes() == FILES["a.txt"]


def test_the_mirror_replaces_every_address(server, tmp_path, monkeypatch):
    root, url, requests = server
    serve(root)
    registry = fake_registry("https://example.invalid", import_only=("sub/b.txt",))
    monkeypatch.setenv(datasets.MIRROR_ENV, url + "/")
    fetch("fake", tmp_path, registry=registry)
    assert requests == ["/fake/a.txt", "/fake/sub/b.txt"]  # import-only files too
    assert list_datasets(tmp_path, registry)[0].status == "verified"


def test_pooch_retries_a_failed_download(server, tmp_path):
    root, url, requests = server
    serve(root, {"flaky": b"flaky\n"})
    registry = fake_registry(url, {"flaky": b"flaky\n"})
    fetch("fake", tmp_path, registry=registry, retries=1)
    assert requests == ["/fake/flaky", "/fake/flaky"]  # a 503, then the file
    assert list_datasets(tmp_path, registry)[0].status == "verified"


def test_a_mismatch_in_an_existing_folder_leaves_it_as_it_was(server, tmp_path):
    """pooch's hash check fails the third file after two verified: none of them is kept."""
    root, url, requests = server
    files = {**FILES, "c.txt": b"gamma\n"}
    registry = fake_registry(url, files)
    serve(root, {**files, "c.txt": b"GAMMA\n"})
    data = tmp_path / "data"
    (data / "fake").mkdir(parents=True)
    (data / "fake" / "a.txt").write_bytes(b"ALPHA\n")  # damaged: to be replaced
    with pytest.raises(DataError) as err:
        fetch("fake", data, registry=registry, retries=1)
    assert str(err.value).startswith("fake/c.txt: sha256 mismatch: expected ")
    assert requests == ["/fake/a.txt", "/fake/sub/b.txt", "/fake/c.txt", "/fake/c.txt"]
    assert everything(data) == ["fake", "fake/a.txt"]  # no staging folder, no sub/
    assert (data / "fake" / "a.txt").read_bytes() == b"ALPHA\n"


def registry_toml(base_url: str, files: dict[str, bytes]) -> str:
    """The registry file that :func:`fake_registry` makes in Python."""
    lines = ['[fake]\nlicense = "CC0"\nsource = "made up for the tests"']
    for path, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        lines.append(f'[[fake.files]]\npath = "{path}"\nsize = {len(data)}\nsha256 = "{sha}"')
        lines.append(f'url = "{base_url}/fake/{path}"')
    return "\n".join(lines)


def test_a_killed_fetch_leaves_no_dataset_folder(server, tmp_path):
    root, url, requests = server
    files = {**FILES, "hang": b"0123456789" * 10}
    serve(root, files)
    data = tmp_path / "data"
    script = (
        "import sys; from rnnkit.datasets import fetch, parse_registry; "
        "fetch('fake', sys.argv[1], registry=parse_registry(sys.argv[2]), retries=0)"
    )
    toml = registry_toml(url, files)
    with subprocess.Popen([sys.executable, "-c", script, str(data), toml], cwd=ROOT) as proc:
        deadline = time.monotonic() + 120
        while "/fake/hang" not in requests and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.kill()
    assert requests == ["/fake/a.txt", "/fake/sub/b.txt", "/fake/hang"]
    assert "fake" not in everything(data)  # a.txt and sub/b.txt were fetched, but not kept
    assert list_datasets(data, parse_registry(toml))[0].status == "missing"
    registry = fake_registry(url)
    fetch("fake", data, registry=registry)  # clears what the killed run left
    assert everything(data) == ["fake", "fake/a.txt", "fake/sub", "fake/sub/b.txt"]


def test_the_shipped_registry_loads_and_is_packaged():
    registry = datasets.default_registry()
    assert {"tinyshakespeare", "ud-english-ewt", "conll2003", "langid"} <= set(registry)
    for d in registry.values():
        assert d.files and d.folder == d.name
        for f in d.files:
            assert (f.size is None) == (f.sha256 is None)
            assert f.url is None or f.url.startswith("https://raw.githubusercontent.com/")
    assert registry["conll2003"].files[0] == DataFile("eng.train", None, None, None)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["package-data"]["rnnkit.datasets"] == ["registry.toml"]


ENTRY = '[x]\nlicense = "L"\nsource = "S"\n'
FILE = '[[x.files]]\npath = "a.txt"\n'
SHA = '"' + "0" * 64 + '"'


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("[x", "Expected ']'"),
        (ENTRY, "x.files: missing"),
        ('[x]\nlicense = 1\nsource = "S"\nfiles = []', "x.license: expected str, got 1"),
        (ENTRY + "files = []", "x.files: empty"),
        (ENTRY + 'folder = "../y"\n' + FILE, "x.folder: '../y' is not a plain folder name"),
        (ENTRY + FILE + "sizes = 3", "x.files[0].sizes: unknown field (known: path, size, "),
        (ENTRY + FILE + 'size = "3"\nsha256 = ' + SHA, "x.files[0].size: expected int, got '3'"),
        (ENTRY + FILE + "size = 3", "x.files[0]: size and sha256 come together"),
        (ENTRY + FILE + 'size = 3\nsha256 = "abc"', "x.files[0].sha256: expected 64 lowercase"),
        (ENTRY + '[[x.files]]\npath = "../a"', "x.files[0].path: '../a' is not a new relative"),
        (ENTRY + FILE + FILE, "x.files[1].path: 'a.txt' is not a new relative path"),
    ],
)
def test_a_malformed_registry_entry_is_a_one_line_error(text, complaint):
    with pytest.raises(DataError) as err:
        parse_registry(text, "mine.toml")
    message = str(err.value)
    assert message.startswith("mine.toml: ") and complaint in message and "\n" not in message


def test_fetch_names_the_import_only_files_then_import_completes(server, tmp_path):
    root, url, _ = server
    serve(root)
    registry = fake_registry(url, import_only=("sub/b.txt",))
    data = tmp_path / "data"
    with pytest.raises(DataError) as err:
        fetch("fake", data, registry=registry)
    assert str(err.value) == (
        "fake: fetched 1 of 2 files, but sub/b.txt cannot be downloaded (no public copy); "
        "put it in a folder and run `rnnkit data import fake FOLDER`"
    )
    assert list_datasets(data, registry)[0].status == "partial (1/2 files)"
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "b.txt").write_bytes(FILES["sub/b.txt"])
    outcome = import_dataset("fake", folder, data, registry=registry)
    assert (outcome.written, outcome.present) == (["sub/b.txt"], ["a.txt"])
    assert list_datasets(data, registry)[0].status == "verified"


def make_source(directory, files=FILES):
    for path, content in files.items():
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_bytes(content)
    return directory


def test_import_verifies_and_copies(tmp_path):
    registry = fake_registry("https://example.invalid")
    source = make_source(tmp_path / "src" / "fake")
    data = tmp_path / "data"
    outcome = import_dataset("fake", source, data, registry=registry)
    assert outcome.written == ["a.txt", "sub/b.txt"]
    assert everything(data) == ["fake", "fake/a.txt", "fake/sub", "fake/sub/b.txt"]
    assert (data / "fake" / "sub" / "b.txt").read_bytes() == FILES["sub/b.txt"]
    # A whole data directory (the folder holding fake/) works too; nothing left to copy.
    outcome = import_dataset("fake", tmp_path / "src", data, registry=registry)
    assert (outcome.written, outcome.present) == ([], ["a.txt", "sub/b.txt"])


def test_import_with_a_missing_file_writes_nothing(tmp_path):
    registry = fake_registry("https://example.invalid")
    source = make_source(tmp_path / "src", {"a.txt": FILES["a.txt"]})
    data = tmp_path / "data"
    with pytest.raises(DataError, match=r"^fake: not in .*src: sub/b\.txt; nothing was written$"):
        import_dataset("fake", source, data, registry=registry)
    assert not data.exists()
    with pytest.raises(DataError, match="not a directory"):
        import_dataset("fake", tmp_path / "nowhere", data, registry=registry)


@pytest.mark.parametrize("wrong", [b"beta\n" * 999 + b"BETA\n", b"beta\n"])
def test_import_of_a_wrong_file_writes_nothing(tmp_path, wrong):
    registry = fake_registry("https://example.invalid")
    source = make_source(tmp_path / "src", {**FILES, "sub/b.txt": wrong})
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(DataError) as err:
        import_dataset("fake", source, data, registry=registry)
    message = str(err.value)
    assert message.startswith(f"{source / 'sub' / 'b.txt'}: sha256 mismatch: ")
    assert registry["fake"].files[1].sha256 in message
    assert hashlib.sha256(wrong).hexdigest() in message
    assert everything(data) == []


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "fetch", "nope", "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("rnnkit: error: unknown dataset 'nope' (choices: ")
    assert main(["data", "import", "trec", str(tmp_path / "x"), "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"rnnkit: error: {tmp_path / 'x'}: not a directory\n"


def test_cli_list_shows_the_registered_datasets(tmp_path, server):
    _, url, _ = server
    result = run_cli("data", "list", "--data-dir", str(tmp_path), env={"RNNKIT_DATA_MIRROR": url})
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()[2::2]]
    assert names == list(datasets.default_registry())
    assert {"ud-english-ewt", "uner-english-ewt"} <= set(names)
    assert result.stdout.count("missing") == len(names)


need_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="no shared data directory")


@need_shared
def test_the_registry_matches_the_shared_data():
    # CoNLL-2003 is licensed: nobody may publish it, so no data directory holds it unasked.
    assert {r.name: r.status for r in list_datasets(SHARED_DATA)} == {
        name: "missing" if name == "conll2003" else "verified"
        for name in datasets.default_registry()
    }


@need_shared
def test_cli_fetches_a_real_dataset_from_a_mirror(tmp_path):
    """trec (359 kB) from a loopback server over the shared data directory, via the CLI."""
    with serving(SHARED_DATA) as (url, requests):
        env = {"RNNKIT_DATA_MIRROR": url + "/"}
        result = run_cli("data", "fetch", "trec", "--data-dir", str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr
    assert "fetched 2 files (359.2 kB)" in result.stdout
    assert sorted(requests) == ["/trec/TREC_10.label", "/trec/train_5500.label"]
    assert everything(tmp_path) == ["trec", "trec/TREC_10.label", "trec/train_5500.label"]
    assert {r.name: r.status for r in list_datasets(tmp_path)}["trec"] == "verified"


@need_shared
def test_import_ud_english_ewt_from_the_shared_data(tmp_path):
    outcome = import_dataset("ud-english-ewt", SHARED_DATA / "ud-english-ewt", tmp_path)
    assert len(outcome.written) == 4
    assert {r.name: r.status for r in list_datasets(tmp_path)}["ud-english-ewt"] == "verified"
    assert not list(tmp_path.rglob(".*.part"))
