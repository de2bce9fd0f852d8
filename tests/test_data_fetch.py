"""The data step (minidiff.data.fetch, `minidiff data`) against HTTP servers on 127.0.0.1.

The served files are the official ones, rebuilt from whatever folder holds Fashion-MNIST here
(make test's data step provides one), so the published checksums in FASHION_MNIST_FILES are
what every download below is checked against.  Nothing here reaches past 127.0.0.1.
"""
import hashlib
import http.server
import shutil
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from minidiff.cli import main
from minidiff.data import fetch, images
from minidiff.data.images import load_images

LABELS = "t10k-labels-idx1-ubyte.gz"   # 5,148 bytes: the small file for the corruption and resume cases
# Debian's package holds the official deflate streams under a normalised gzip header (no file
# name, the package's date); these are the official headers' times.  The MD5 check below proves it.
_OFFICIAL_MTIME = {"train-images-idx3-ubyte.gz": 1504176606, "train-labels-idx1-ubyte.gz": 1504176606,
                   "t10k-images-idx3-ubyte.gz": 1504176627, "t10k-labels-idx1-ubyte.gz": 1504176627}


def _digests(data: bytes):
    return hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()


def _official_bytes(folder: Path, name: str) -> bytes:
    """The official file ``name``: as found, or with Debian's gzip header put back (RFC 1952:
    ID1 ID2 CM FLG=FNAME, MTIME, XFL, OS, then the zero-terminated name before the stream)."""
    raw = (folder / name).read_bytes()
    if raw[3] == 0:  # FLG without FNAME: Debian's header
        raw = b"\x1f\x8b\x08\x08" + struct.pack("<I", _OFFICIAL_MTIME[name]) + raw[8:10] + \
            name[:-3].encode() + b"\x00" + raw[10:]
    assert _digests(raw) == fetch.FASHION_MNIST_FILES[name][:2], name
    return raw


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A folder with the four official files, and the test split as the loader reads it here."""
    found = images._fashion_mnist_dir(None)
    folder = tmp_path_factory.mktemp("official")
    for name in fetch.FASHION_MNIST_FILES:
        (folder / name).write_bytes(_official_bytes(found, name))
    return folder, load_images("fashion-mnist", "test", root=found)


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET of the files in server.root, with `Range: bytes=N-` answered by 206 unless
    server.honour_range is False; each request's Range header goes into server.ranges."""

    def do_GET(self):
        path = self.server.root / self.path.lstrip("/")
        rng = self.headers.get("Range")
        self.server.ranges.append(rng)
        if not path.is_file():
            self.send_error(404)
            return
        data, start = path.read_bytes(), 0
        if rng and self.server.honour_range:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/served; .url is its base URL."""
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.root, httpd.ranges, httpd.honour_range = root, [], True
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No Fashion-MNIST anywhere the loader looks; the cache is tmp_path/cache."""
    monkeypatch.setenv(images.FASHION_MNIST_ENV, str(tmp_path / "nonexistent"))
    monkeypatch.setattr(images, "FASHION_MNIST_DIR", tmp_path / "no-debian-package")
    monkeypatch.setenv(fetch.DATA_ENV, str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError):
        load_images("fashion-mnist", "test", limit=1)
    return tmp_path / "cache" / "fashion-mnist"


def _dead_url():
    """A base URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


def test_download_into_the_cache_then_the_loader_reads_it(official, server, nowhere):
    folder, (x_test, y_test) = official
    for name in fetch.FASHION_MNIST_FILES:
        shutil.copy(folder / name, server.root / name)
    got = fetch.ensure_fashion_mnist(base_url=server.url, apt=False, progress=False)
    assert got == nowhere and sorted(p.name for p in got.iterdir()) == sorted(fetch.FASHION_MNIST_FILES)
    assert server.ranges == [None] * 4
    x, y = load_images("fashion-mnist", "test")
    np.testing.assert_array_equal(x, x_test)
    np.testing.assert_array_equal(y, y_test)
    # a second run finds the cache and asks the server for nothing
    assert fetch.ensure_fashion_mnist(base_url=server.url, apt=False, progress=False) == nowhere
    assert len(server.ranges) == 4


def test_a_corrupted_file_is_refused_and_nothing_is_kept(official, server, tmp_path):
    folder, _ = official
    good = (folder / LABELS).read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    (server.root / LABELS).write_bytes(bytes(bad))
    dest = tmp_path / "out" / LABELS
    md5, sha256, _ = fetch.FASHION_MNIST_FILES[LABELS]
    with pytest.raises(ValueError) as info:
        fetch.download(server.url + LABELS, dest, md5, sha256, progress=False)
    msg = str(info.value)
    assert LABELS in msg and md5 in msg and sha256 in msg and _digests(bytes(bad))[0] in msg
    assert list(dest.parent.iterdir()) == []            # neither the file nor its .part
    # a corrupt beginning in a .part is caught too once the rest is appended; then a fresh try succeeds
    (server.root / LABELS).write_bytes(good)
    bad[10] ^= 0x01
    dest.with_name(LABELS + ".part").write_bytes(bytes(bad[:1000]))
    with pytest.raises(ValueError):
        fetch.download(server.url + LABELS, dest, md5, sha256, progress=False)
    assert list(dest.parent.iterdir()) == []
    fetch.download(server.url + LABELS, dest, md5, sha256, progress=False)
    assert dest.read_bytes() == good and list(dest.parent.iterdir()) == [dest]


@pytest.mark.parametrize("honour_range", [True, False])
def test_an_interrupted_download_is_completed(official, server, tmp_path, honour_range):
    folder, _ = official
    good = (folder / LABELS).read_bytes()
    (server.root / LABELS).write_bytes(good)
    server.honour_range = honour_range
    dest = tmp_path / "out" / LABELS
    dest.parent.mkdir()
    dest.with_name(LABELS + ".part").write_bytes(good[:2000])
    md5, sha256, _ = fetch.FASHION_MNIST_FILES[LABELS]
    assert fetch.download(server.url + LABELS, dest, md5, sha256, progress=False) == dest
    assert server.ranges == ["bytes=2000-"]          # asked to continue (a server may answer 200)
    assert dest.read_bytes() == good and list(dest.parent.iterdir()) == [dest]
    # a complete .part: the server has nothing after its end (416), the .part itself is verified
    dest.rename(dest.with_name(LABELS + ".part"))
    fetch.download(server.url + LABELS, dest, md5, sha256, progress=False)
    assert dest.read_bytes() == good and list(dest.parent.iterdir()) == [dest]


def test_a_partial_cache_gets_only_the_missing_file_from_the_next_mirror(official, server, nowhere,
                                                                         monkeypatch):
    folder, _ = official
    nowhere.mkdir(parents=True)
    for name in fetch.FASHION_MNIST_FILES:
        shutil.copy(folder / name, (nowhere if name != LABELS else server.root) / name)
    monkeypatch.setattr(fetch, "FASHION_MNIST_URLS", (_dead_url(), server.url))
    assert fetch.ensure_fashion_mnist(apt=False, progress=False) == nowhere
    assert server.ranges == [None]
    assert (nowhere / LABELS).read_bytes() == (folder / LABELS).read_bytes()


def test_the_apt_step_runs_as_root_only_and_falls_back_to_downloading(tmp_path, monkeypatch, nowhere):
    calls = []
    debian = tmp_path / "no-debian-package"

    def fake_run(argv, **kwargs):  # apt-get "installs" the package by creating Debian's folder
        calls.append(argv[:2])
        if argv[1] == "install" and installs:
            debian.mkdir(exist_ok=True)
            for name in fetch.FASHION_MNIST_FILES:
                (debian / name).write_bytes(b"")
        return type("Done", (), {"returncode": 0 if installs else 100})()

    monkeypatch.setattr(fetch.subprocess, "run", fake_run)
    monkeypatch.setattr(fetch.shutil, "which", lambda cmd: "/usr/bin/" + cmd)
    monkeypatch.setattr(fetch.os, "geteuid", lambda: 0, raising=False)
    installs = True
    assert fetch.ensure_fashion_mnist(base_url=_dead_url(), progress=False) == debian
    assert calls == [["apt-get", "install"]]
    shutil.rmtree(debian)
    calls.clear()
    installs = False                        # unknown package, update, still unknown: download (here: fails)
    with pytest.raises(OSError, match="cannot download http://127.0.0.1"):
        fetch.ensure_fashion_mnist(base_url=_dead_url(), progress=False)
    assert calls == [["apt-get", "install"], ["apt-get", "update"]]
    calls.clear()
    monkeypatch.setattr(fetch.os, "geteuid", lambda: 1000, raising=False)  # not root: no apt-get
    with pytest.raises(OSError):
        fetch.ensure_fashion_mnist(base_url=_dead_url(), progress=False)
    assert calls == []


def test_cli_data_downloads_with_url_and_fails_in_one_line(official, server, nowhere, tmp_path, capsys):
    folder, (x_test, _) = official
    for name in fetch.FASHION_MNIST_FILES:
        shutil.copy(folder / name, server.root / name)
    dest = tmp_path / "mine"
    assert main(["data", "fashion-mnist", "--url", server.url, "--no-apt", "--dest", str(dest)]) == 0
    assert str(dest) in capsys.readouterr().out
    np.testing.assert_array_equal(load_images("fashion-mnist", "test", root=dest)[0], x_test)
    assert main(["data", "fashion-mnist", "--url", _dead_url(), "--no-apt"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minidiff data: error: cannot download http://127.0.0.1") and err.count("\n") == 1
    assert not nowhere.exists() or not any(nowhere.iterdir())


def test_default_cache_folder(monkeypatch):
    monkeypatch.delenv(fetch.DATA_ENV, raising=False)
    assert fetch.cache_dir() == Path.home() / ".cache" / "minidiff"
    monkeypatch.setenv(fetch.DATA_ENV, "/some/where")
    assert fetch.fashion_mnist_cache() == Path("/some/where/fashion-mnist")


def test_an_installed_package_whose_files_were_deleted_is_reinstalled(tmp_path, monkeypatch, nowhere):
    """dpkg says installed, so a plain `apt-get install` does nothing; `--reinstall` puts the files back."""
    calls = []
    debian = tmp_path / "no-debian-package"

    def fake_run(argv, **kwargs):
        calls.append([a for a in argv if not a.startswith("-q") and a != "-y"])
        if "--reinstall" in argv:
            debian.mkdir(exist_ok=True)
            for name in fetch.FASHION_MNIST_FILES:
                (debian / name).write_bytes(b"")
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(fetch.subprocess, "run", fake_run)
    monkeypatch.setattr(fetch.shutil, "which", lambda cmd: "/usr/bin/" + cmd)
    monkeypatch.setattr(fetch.os, "geteuid", lambda: 0, raising=False)
    assert fetch.ensure_fashion_mnist(base_url=_dead_url(), progress=False) == debian
    assert calls == [["apt-get", "install", fetch.APT_PACKAGE], ["apt-get", "install", "--reinstall", fetch.APT_PACKAGE]]
