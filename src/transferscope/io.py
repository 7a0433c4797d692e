"""Atomic file output and content hashes: the one place every stage writes through.

A killed job must never leave a file that looks finished, so every writer goes to a
temporary name in the target's directory and is renamed into place when complete
(rename is atomic on POSIX within one file system). A directory that one job owns (a training
run) is guarded by :func:`writer_lock`, and :func:`fault_point` lets the fault tests kill a job
at a named moment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp (and some writers that recreate the file) leave 0600: give the usual mode
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: file not found; run the stage that produces it first"
        ) from None
    except json.JSONDecodeError as err:
        from transferscope.workflow import rerun_command

        raise ValueError(
            f"{path}: not valid JSON ({err}); rebuild it: `{rerun_command(path)}`"
        ) from None


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


FAULT_ENV = "TRANSFERSCOPE_FAULT"
LOCK_NAME = ".writer.lock"


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL when ``$TRANSFERSCOPE_FAULT`` lists ``name`` (comma-
    separated): the fault tests' deterministic stand-in for kill -9 or a power cut. Listed as
    ``name@stop``, the process stops (SIGSTOP) instead, keeping its locks until SIGCONT: an
    orphaned job that is still alive."""
    import signal

    for entry in os.environ.get(FAULT_ENV, "").split(","):
        point, _, action = entry.partition("@")
        if point == name:
            os.kill(os.getpid(), signal.SIGSTOP if action == "stop" else signal.SIGKILL)


def remove_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the ``.*.tmp`` files a killed writer left in ``directory`` (call it only while
    holding the directory's :func:`writer_lock`); returns what was removed."""
    removed = []
    for path in Path(directory).glob(".*.tmp"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


class DirectoryBusy(RuntimeError):
    """Another live process holds the directory's writer lock."""


@contextlib.contextmanager
def exclusive_lock(
    path: str | os.PathLike, busy, holder: str | None = None, wait: bool = False
) -> Iterator[None]:
    """Hold an exclusive, non-blocking ``fcntl`` lock on the file ``path`` for the block. A second
    process gets ``busy(holder)`` raised at once, ``holder`` being what the first one wrote into
    the file (its PID, by default); with ``wait`` it logs ``busy(holder)`` and waits for the lock
    instead. The kernel drops the lock when its holder dies, so a killed process never leaves a
    stale lock. Not POSIX: no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            reason = busy(handle.read().strip() or "another process")
            if not wait:
                raise reason from None
            logging.getLogger(__name__).warning("%s; waiting for it", reason)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{holder or f'pid {os.getpid()}'}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def writer_lock(directory: str | os.PathLike, fix: str = ""):
    """One writer per run (or cache) directory: ``exclusive_lock`` on ``directory/.writer.lock``.
    ``fix``: what the message tells the user to do."""
    directory = Path(directory)

    def busy(holder: str) -> DirectoryBusy:
        return DirectoryBusy(
            f"{directory} is being written by {holder}; one writer per run directory. "
            f"{fix or 'Wait for that process to finish (or end it), then rerun.'}"
        )

    return exclusive_lock(directory / LOCK_NAME, busy)
