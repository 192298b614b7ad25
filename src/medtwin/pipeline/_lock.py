"""One writer per site: an advisory lock file in the data directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from medtwin.errors import ConfigError

LOCK_FILE = "site.lock"


class WriterLock:
    """An exclusive, non-blocking lock on `DATA_DIR/site.lock`, released on close or exit."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> WriterLock:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"site: another medtwin process (serve, demo or replay) is writing {data_dir}; "
                "use its API, or stop it first") from None
        return cls(fd)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
