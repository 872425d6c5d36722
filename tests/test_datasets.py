import contextlib
import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from rnnkit import datasets
from rnnkit.cli import main
from rnnkit.datasets import DataFile, Dataset, fetch, import_dataset, list_datasets
from rnnkit.errors import DataError

from .conftest import SHARED_DATA, run_cli

FILES = {"a.txt": b"alpha\n", "sub/b.txt": b"beta\n" * 1000}


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
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
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.requests
    finally:
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
        fetch("fake", data, registry=registry)
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
        fetch("fake", data, registry=fake_registry(url))
    assert everything(data) == ["fake", "fake/notes.txt"]


def test_a_connection_cut_mid_file_keeps_nothing(server, tmp_path):
    root, url, _ = server
    serve(root)
    registry = fake_registry(url, {"truncated": b"0123456789" * 10})
    with pytest.raises(
        DataError,
        match=r"^fake/truncated: download failed: the connection closed after 10 bytes, 90 short",
    ):
        fetch("fake", tmp_path / "data", registry=registry)
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
    assert names == list(datasets.DATASETS)
    assert {"ud-english-ewt", "uner-english-ewt"} <= set(names)
    assert result.stdout.count("missing") == len(names)


need_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="no shared data directory")


@need_shared
def test_the_registry_matches_the_shared_data():
    # CoNLL-2003 is licensed: nobody may publish it, so no data directory holds it unasked.
    assert {r.name: r.status for r in list_datasets(SHARED_DATA)} == {
        name: "missing" if name == "conll2003" else "verified" for name in datasets.DATASETS
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
