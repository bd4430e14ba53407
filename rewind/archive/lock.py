"""One writer per run folder: an advisory lock that the OS drops when the process dies (even kill -9)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from rewind.errors import UserError


class FolderLock:
    """`wait`: block until the holder lets go instead of refusing."""

    def __init__(self, folder: str | Path, wait: bool = False):
        self.path = Path(folder) / ".lock"
        self.wait = wait
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(
                f"{self.path.parent} is being written by another process (pid {holder}); "
                "wait for it to finish or stop it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
