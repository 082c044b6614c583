"""An exclusive lock on an open file, taken without waiting: ``flock`` on POSIX, ``msvcrt``
byte-range locking on Windows. The lock goes with the process: a killed run releases it."""

from __future__ import annotations

import sys
from typing import IO

if sys.platform == "win32":
    import msvcrt

    def try_lock(file: IO[str]) -> bool:
        """Lock ``file`` for this process; False if another process holds it."""
        try:
            msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def unlock(file: IO[str]) -> None:
        """Release the lock :func:`try_lock` took."""
        msvcrt.locking(file.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def try_lock(file: IO[str]) -> bool:
        """Lock ``file`` for this process; False if another process holds it."""
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def unlock(file: IO[str]) -> None:
        """Release the lock :func:`try_lock` took."""
        fcntl.flock(file.fileno(), fcntl.LOCK_UN)


__all__ = ["try_lock", "unlock"]
