"""Downloads of the real datasets into a cache, verified against pinned checksums: HTTP(S) with
resume after an interruption, other URLs through pooch.

A dataset module lists its files in ``FILES`` ({param prefix: file name}); its params hold
``<prefix>url`` and ``<prefix>sha256`` for each (a SHA-256, or ``md5:<32 hex digits>`` for files
whose publishers give only an MD5, such as Stanford Cars), and ``cache_dir`` (null: the environment
variable ``TRANSFERSCOPE_CACHE``, else the OS cache, e.g. ``~/.cache/transferscope``). Files go to
``<cache_dir>/<dataset>/<file name>``.

* A null or malformed checksum is refused before anything is downloaded.
* An HTTP(S) download goes to ``<file name>.part`` beside its final name and is moved into
  place only when its checksum matches; otherwise it is deleted and the error names the file,
  both hashes and the config key. Nothing is unpacked or read before that check. An interrupted
  download keeps its ``.part`` and the next run resumes it where it stopped (an HTTP range
  request; a server that ignores ranges sends the whole file again). Other URLs (FTP, DOI) go
  through pooch to a temporary file (``tmp*``) that an interrupted run does not keep; the next
  run deletes such files untouched for ``STALE_SECONDS`` (a killed run's leftovers).
* A cached file with the right checksum is used without any download; one with another hash is
  deleted and downloaded again (a file placed in the cache by hand is used when it matches).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from transferscope.data.params import invalid
from transferscope.data.registry import dataset_module, dataset_params, resolve

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MD5_RE = re.compile(r"^md5:[0-9a-f]{32}$")
STALE_SECONDS = 600


def cache_dir(name: str, params: dict[str, Any]) -> Path:
    """``<cache_dir>/<name>``: where the files of dataset ``name`` are kept."""
    root = params.get("cache_dir") or os.environ.get("TRANSFERSCOPE_CACHE")
    if not root:
        import pooch

        root = pooch.os_cache("transferscope")
    return Path(root).expanduser() / name


def check_sources(name: str, params: dict[str, Any], files: dict[str, str]) -> None:
    """Every file of ``files`` has a URL and a pinned SHA-256 (64 lowercase hex digits)."""
    unpinned = [
        f"datasets.{name}.{prefix}sha256" for prefix in files if not params[f"{prefix}sha256"]
    ]
    if unpinned:
        raise ValueError(
            f"{', '.join(unpinned)}: null, no verified checksum pinned; nothing is downloaded "
            "or read without one. Get the original files, run sha256sum on them and set these "
            "keys in the config (or md5:<md5sum> where only an MD5 is published; see "
            "docs/datasets.md)"
        )
    for prefix in files:
        sha, url = params[f"{prefix}sha256"], params[f"{prefix}url"]
        if not isinstance(sha, str) or not (SHA256_RE.match(sha) or MD5_RE.match(sha)):
            raise invalid(
                name, f"{prefix}sha256", sha,
                "not a SHA-256 (64 hex digits, lowercase) or md5:<32 hex digits, lowercase>",
            )  # fmt: skip
        if not isinstance(url, str) or not url:
            raise invalid(name, f"{prefix}url", url, "must be the URL of the file")
    if params["cache_dir"] is not None and not isinstance(params["cache_dir"], str):
        raise invalid(name, "cache_dir", params["cache_dir"], "must be a directory path or null")


def file_checksum(path: Path, pinned: str) -> str:
    """The checksum of ``path`` in the form of ``pinned``: ``md5:<hex>`` or a bare SHA-256."""
    import pooch

    if pinned.startswith("md5:"):
        return "md5:" + pooch.file_hash(str(path), alg="md5")
    return pooch.file_hash(str(path), alg="sha256")


def remove_stale_temporaries(folder: Path, age: float = STALE_SECONDS) -> None:
    """Delete ``tmp*`` files in ``folder`` untouched for ``age`` seconds (killed downloads)."""
    now = time.time()
    for path in folder.glob("tmp*"):
        try:
            if path.is_file() and now - path.stat().st_mtime > age:
                path.unlink()
        except FileNotFoundError:  # another process finished or removed it meanwhile
            pass


def fetch_file(name: str, prefix: str, file_name: str, params: dict[str, Any]) -> Path:
    """The verified cached copy of one file of dataset ``name``, downloaded if needed. One
    process at a time per file: datasets made from one download (``cub`` and ``cub_bicubic``)
    are prepared by concurrent jobs, and the second waits for the first's verified copy."""
    from transferscope.io import exclusive_lock

    folder = cache_dir(name, params)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / f".{file_name}.lock"
    busy = lambda holder: RuntimeError(f"{folder / file_name} is being fetched by {holder}")  # noqa: E731
    with exclusive_lock(lock, busy, wait=True):
        return _fetch_file(folder, prefix, file_name, params, name)


def _fetch_file(folder: Path, prefix: str, file_name: str, params: dict[str, Any], name: str):
    import pooch

    remove_stale_temporaries(folder)
    target = folder / file_name
    url, expected = params[f"{prefix}url"], params[f"{prefix}sha256"]
    if target.exists():
        if file_checksum(target, expected) == expected:
            return target
        target.unlink()  # a corrupt or outdated copy: never read, downloaded again
    if url.startswith(("http://", "https://")):
        part = folder / f"{file_name}.part"
        try:
            download_resuming(url, part)
        except Exception as err:  # noqa: BLE001 (any network failure: same advice)
            kept = part.stat().st_size if part.exists() else 0
            raise RuntimeError(
                f"{file_name}: the download from {url} failed or was interrupted "
                f"({type(err).__name__}: {err}); {kept:,} bytes are kept in {part}, rerun to "
                "resume from there"
            ) from err
        return _verified(part, target, name, prefix, url, expected)
    fd, tmp_name = tempfile.mkstemp(prefix="tmp", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            downloader = pooch.HTTPDownloader(progressbar=False, chunk_size=1 << 20, timeout=60)
            if not url.startswith(("http://", "https://")):
                downloader = pooch.downloaders.choose_downloader(url)
            downloader(url, str(tmp), None)
        except Exception as err:  # noqa: BLE001 (any network failure: same advice)
            raise RuntimeError(
                f"{file_name}: the download from {url} failed or was interrupted "
                f"({type(err).__name__}: {err}); nothing was kept, rerun to download it again"
            ) from err
        return _verified(tmp, target, name, prefix, url, expected)
    finally:
        tmp.unlink(missing_ok=True)


def _verified(download: Path, target: Path, name: str, prefix: str, url: str, expected: str):
    """Move a finished ``download`` to ``target`` if its checksum is ``expected``; else delete
    it and raise an error naming the file, both hashes and the config key."""
    actual = file_checksum(download, expected)
    if actual != expected:
        download.unlink(missing_ok=True)
        what = "MD5" if expected.startswith("md5:") else "SHA-256"
        raise ValueError(
            f"{target.name} downloaded from {url}: its {what} is {actual}, but "
            f"datasets.{name}.{prefix}sha256 pins {expected}. The download was deleted; "
            "check the URL (a different or changed file) or the pinned checksum"
        )
    os.replace(download, target)
    return target


def download_resuming(url: str, part: Path, timeout: float = 60) -> None:
    """Download ``url`` into ``part``, continuing after the bytes it already holds (an HTTP
    range request); an error when the connection ends before the announced size."""
    import requests

    start = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}  # the file's own bytes, never re-compressed
    if start:
        headers["Range"] = f"bytes={start}-"
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
        if start and response.status_code == 416:  # nothing left to send: already complete
            return
        response.raise_for_status()
        resumed = bool(start) and response.status_code == 206
        announced = response.headers.get("Content-Length")
        written = 0
        with open(part, "ab" if resumed else "wb") as handle:
            # read1 hands over whatever has arrived, so a broken connection loses no bytes
            while chunk := response.raw.read1(1 << 20, decode_content=False):
                handle.write(chunk)
                written += len(chunk)
    if announced is not None and written < int(announced):
        raise OSError(f"the connection closed after {written:,} of {int(announced):,} bytes")


def fetch_files(name: str, params: dict[str, Any], files: dict[str, str]) -> dict[str, Path]:
    """All ``files`` of dataset ``name``, verified: {param prefix: cached path}. The checksums
    are checked for being pinned before the first download."""
    check_sources(name, params, files)
    return {prefix: fetch_file(name, prefix, fname, params) for prefix, fname in files.items()}


def fetch_dataset(name: str, params: dict[str, Any] | None = None) -> list[Path]:
    """Download (or find in the cache) every file of dataset ``name`` (its generator's, when its
    params name one); returns their paths."""
    generator, _ = resolve(name, params)
    module = dataset_module(generator)
    if not hasattr(module, "FILES"):
        raise ValueError(f"dataset '{name}' is generated offline: there is nothing to download")
    full = dataset_params(name, params)
    return list(fetch_files(generator, full, module.FILES).values())
