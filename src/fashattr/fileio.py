"""Atomic file writes: temp file in the same folder, fsync, ``os.replace``, fsync of the folder.

A reader sees the previous complete file or the new complete one, never a torn write,
whenever the writer is killed. The file gets the mode a plain ``open(path, "w")`` would give
(``0o666`` less the umask), not the ``0o600`` of ``mkstemp``, so a run folder shared with other
accounts stays readable by them. Torch-free, so image-decode workers can import it cheaply.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

_PROC_STATUS = Path("/proc/self/status")
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows.

    Linux (4.7+) reports it in ``/proc/self/status``. Elsewhere the only way is to set it
    and set it back; the lock keeps two of our own threads from interleaving that swap.
    """
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp file beside ``path``, fsync it, then rename it over ``path``.

    Args:
        path: the file to create or replace.
        write: writes the content to the temp path it is given (it may replace that file).

    The result has mode ``0o666 & ~umask``, as a file opened for writing would.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp creates 0600; a writer such as torch.save may also have replaced the file.
        os.chmod(tmp, 0o666 & ~current_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""

    def write(tmp: Path) -> None:
        tmp.write_text(text)

    atomic_write(path, write)
