"""The one data step: put Fashion-MNIST on this machine (`minidiff data fashion-mnist`, `make data`).

``ensure_fashion_mnist`` tries, in order:

1. a folder that already holds the four IDX files: ``$MINIDIFF_FASHION_MNIST``, Debian's
   /usr/share/datasets/fashion-mnist, or the cache ``$MINIDIFF_DATA/fashion-mnist``;
2. Debian's ``dataset-fashion-mnist`` package, when ``apt-get`` exists and we are root;
3. a download of the four official ``.gz`` files into the cache (default
   ~/.cache/minidiff/fashion-mnist), each checked against its published MD5 and SHA-256 and
   refused on a mismatch.

Only the command a user runs downloads anything; ``load_images`` never touches the network.
A download goes into ``NAME.part`` (continued with an HTTP Range request after an interruption),
is verified, then renamed onto ``NAME`` in one step, so a file under its final name is always
a verified one.  Standard library only (tqdm for the progress bar).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

from .images import DATA_ENV, _fashion_mnist_dir, cache_dir, fashion_mnist_cache

APT_PACKAGE = "dataset-fashion-mnist"


class Published(NamedTuple):
    """A file's published identity: MD5 from the Fashion-MNIST README, SHA-256 and size of the same bytes."""
    md5: str
    sha256: str
    size: int


# The official files (zalandoresearch/fashion-mnist, data/fashion/).  Debian's package holds the
# same deflate streams with the gzip header's name and time stripped, so its files hash differently.
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": Published(
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26_421_880),
    "train-labels-idx1-ubyte.gz": Published(
        "25c81989df183df01b3e8a0aad5dffbe",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29_515),
    "t10k-images-idx3-ubyte.gz": Published(
        "bef4ecab320f06d8554ea6380940ec79",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4_422_102),
    "t10k-labels-idx1-ubyte.gz": Published(
        "bb300cfdad3c16e7a12a480ee83cd310",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5_148),
}
# Where the README points: the GitHub repository (HTTPS), then Zalando's S3 bucket (HTTP only;
# the checksums, not the transport, vouch for the bytes).
FASHION_MNIST_URLS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
_CHUNK = 1 << 20


def digests(path) -> tuple[str, str]:
    """(MD5, SHA-256) of a file, read once."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
    return md5.hexdigest(), sha256.hexdigest()


def _fetch_into(url: str, part: Path, progress: bool) -> None:
    """Append the rest of ``url`` to ``part``, asking for it with a Range request when ``part``
    holds a beginning already; a server that answers 200 (ignoring Range) restarts the file."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing after offset: the .part is complete (or too long)
            return
        raise
    with response:
        resumed = response.status == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            part.unlink()
            raise OSError(f"asked for bytes {offset}- and got {response.headers.get('Content-Range')!r}")
        if not resumed:
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        from tqdm.auto import tqdm

        with open(part, "ab" if resumed else "wb") as f, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=part.name[:-len(".part")], disable=not progress, leave=False) as bar:
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())


def download(url: str, dest, md5: str, sha256: str, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` unless ``dest`` already has these digests; returns ``dest``.

    The bytes go into ``dest.part`` (continued if present), which must match both ``md5`` and
    ``sha256``; then it is renamed onto ``dest`` atomically.  A mismatch deletes the .part and
    raises ValueError naming the file and the digests; network failures raise OSError and leave
    the .part to be continued next time.
    """
    dest = Path(dest)
    if dest.is_file() and digests(dest) == (md5, sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        _fetch_into(url, part, progress)
    except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts, cut connections
        raise OSError(f"cannot download {url}: {getattr(e, 'reason', None) or e}") from e
    got = digests(part)
    if got != (md5, sha256):
        part.unlink()
        raise ValueError(f"{dest.name} from {url} does not match its published checksums, so it was "
                         f"deleted: MD5 {got[0]} (expected {md5}), SHA-256 {got[1]} (expected {sha256})")
    os.replace(part, dest)
    return dest


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)


def _apt_install(progress: bool, reinstall: bool = False) -> bool:
    """Step 2: `apt-get install -y dataset-fashion-mnist` (after `apt-get update` if the package is
    unknown, as on a fresh container; with ``reinstall``, `--reinstall`: the package is recorded as
    installed but its files were deleted); True if it installed.  Only as root, only where apt-get is."""
    if shutil.which("apt-get") is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    _say(progress, f"Fashion-MNIST: {'reinstalling' if reinstall else 'installing'} Debian's {APT_PACKAGE} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", *(["--reinstall"] if reinstall else []), APT_PACKAGE]
    quiet = dict(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if subprocess.run(install, **quiet).returncode == 0:
        return True
    if (subprocess.run(["apt-get", "update", "-qq"], **quiet).returncode == 0
            and subprocess.run(install, **quiet).returncode == 0):
        return True
    _say(progress, f"Fashion-MNIST: apt-get could not install {APT_PACKAGE}; downloading instead")
    return False


def ensure_fashion_mnist(dest=None, base_url: str | None = None, apt: bool = True,
                         progress: bool = True) -> Path:
    """Make the four Fashion-MNIST IDX files available and return the folder that holds them.

    dest: download into this folder instead of the cache; then only ``dest`` is looked in and the
    apt step is skipped.  base_url: fetch ``base_url + file name`` instead of the official
    locations (tests serve files from 127.0.0.1).  apt: allow step 2.  progress: a tqdm bar per
    file and a line per step on stdout.  Raises OSError (network) or ValueError (checksum).
    """

    if dest is None:
        try:
            return _fashion_mnist_dir(None)  # step 1
        except FileNotFoundError:
            pass
        if apt and _apt_install(progress):  # step 2
            try:
                return _fashion_mnist_dir(None)
            except FileNotFoundError:  # installed before, its files deleted since: put them back
                _say(progress, f"Fashion-MNIST: {APT_PACKAGE} is installed but its files are missing")
            if _apt_install(progress, reinstall=True):
                try:
                    return _fashion_mnist_dir(None)
                except FileNotFoundError:
                    _say(progress, f"Fashion-MNIST: {APT_PACKAGE} reinstalled but its files were not found")
    folder = Path(dest) if dest is not None else fashion_mnist_cache()
    bases = (base_url,) if base_url else FASHION_MNIST_URLS
    for name, published in FASHION_MNIST_FILES.items():  # step 3
        if (folder / name).is_file() and digests(folder / name) == published[:2]:
            continue
        for i, base in enumerate(bases):
            url = base.rstrip("/") + "/" + name
            _say(progress, f"Fashion-MNIST: downloading {url} into {folder}")
            try:
                download(url, folder / name, published.md5, published.sha256, progress=progress)
                break
            except (OSError, ValueError) as e:
                if i == len(bases) - 1:
                    raise
                _say(progress, f"  {e}; trying the next mirror")
    return folder
