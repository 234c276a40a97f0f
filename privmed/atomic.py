"""Output files written whole or not at all: a temporary file in the same folder, renamed over the target.

A full disk, a kill or a read-only folder never leaves a truncated file over a good one, nor a
temporary file behind: :func:`replacing` removes its temporary file when the write fails, and turns
a full disk (``ENOSPC``, ``EDQUOT``) and a folder that cannot be written (``EACCES``, ``EPERM``,
``EROFS``) into one :class:`~privmed.errors.PrivmedError` that names the disk or the folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

from privmed.errors import DISK_FULL, FOLDER_NOT_WRITABLE, PrivmedError

FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block ends without
    an error, removed when it raises (a full disk or a read-only folder then raises a PrivmedError)."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise write_error(err, path) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_together(files: dict[Path, str]) -> None:
    """Write several text files so that either all of them are replaced or none is (e.g. a report's
    HTML and Markdown): every one is written to its temporary file before any is renamed."""
    with contextlib.ExitStack() as stack:
        staged = [(stack.enter_context(replacing(path)), text) for path, text in files.items()]
        for tmp, text in staged:
            try:
                tmp.write_text(text, encoding="utf-8")
            except OSError as err:
                raise write_error(err, tmp.parent / tmp.name) from None


def append_text(path: str | Path, text: str) -> None:
    """Append ``text`` to a log file; a full disk or a read-only folder raises a PrivmedError."""
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as err:
        raise write_error(err, Path(path)) from None


def check_folder(folder: str | Path) -> None:
    """Refuse, before any work, an existing folder a command would write into but cannot (read-only, or
    its disk full): a file is made there and removed. A folder that does not exist is left to the caller."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise write_error(err, folder / "(a new file)") from None


def write_error(err: OSError, path: Path) -> Exception:
    """The error to raise for ``err`` met while writing ``path``: a PrivmedError for a full disk or a
    folder that cannot be written, ``err`` itself otherwise (a bug, with its traceback)."""
    if isinstance(err, PrivmedError):
        return err
    if err.errno in FULL:
        return PrivmedError(DISK_FULL.format(mount=mount_point(path), path=path))
    if isinstance(err, PermissionError) or err.errno in DENIED:
        reason = err.strerror or "permission denied"
        return PrivmedError(FOLDER_NOT_WRITABLE.format(path=path, folder=path.parent, reason=reason))
    return err


def mount_point(path: Path) -> Path:
    """The mount point of the file system (the disk) that holds ``path``."""
    here = Path(os.path.abspath(path))
    while not here.exists() and here != here.parent:
        here = here.parent
    while not os.path.ismount(here) and here != here.parent:
        here = here.parent
    return here


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
