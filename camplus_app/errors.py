"""How a ``camplus`` command ends when it does not succeed: the exit statuses, and the errors
that say which kind of ending it is. Below every other module of the application.

- :class:`UsageError`: a mistake the user can fix (a bad option, bad input, a refused output
  folder or ``--resume``): its message is shown as written, exit status :data:`USAGE_ERROR`.
- :class:`Failure`: a failure while running whose message is written for the user (a full disk;
  :class:`PeerProcessFailed`, another ``torchrun`` process that died): shown as written, exit
  status :data:`FAILURE`.
- Any other exception is a failure we did not expect (a bug): one line with its type, exit
  status :data:`FAILURE`; ``CAMPLUS_TRACEBACK=1`` shows the traceback of every error.
"""

from __future__ import annotations

#: Exit status of a usage error: bad input the user can fix (as argparse uses).
USAGE_ERROR = 2
#: Exit status of a failure while running: a bug, an exception we did not expect, a failed
#: process, a disk that is full.
FAILURE = 1
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
#: The environment variable that shows the traceback of every error.
TRACEBACK_VARIABLE = "CAMPLUS_TRACEBACK"


class UsageError(Exception):
    """Bad input from the user: reported as written, exit status :data:`USAGE_ERROR`."""


class Failure(Exception):
    """A failure while running, with a message written for the user: reported as written,
    exit status :data:`FAILURE`."""


class PeerProcessFailed(Failure):
    """Under ``torchrun``, a collective failed because another process stopped (killed, out of
    memory, its own failure): this process's work is intact, and the message says how to go
    on."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, carrying what the command tells the user about it (e.g. how to resume)."""


def first_line(text: str) -> str:
    """The first line of a message that is not blank."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def one_line(error: BaseException) -> str:
    """The error as one line: our messages (:class:`UsageError`, :class:`Failure`) as they
    are, any other with its type first (``ValueError: ...``)."""
    text = first_line(str(error))
    if isinstance(error, (UsageError, Failure)):
        return text
    return f"{type(error).__name__}: {text}"


def exit_status_of(error: Exception) -> int:
    """:data:`USAGE_ERROR` for a :class:`UsageError`, :data:`FAILURE` for anything else."""
    return USAGE_ERROR if isinstance(error, UsageError) else FAILURE


__all__ = [
    "FAILURE",
    "INTERRUPTED",
    "TRACEBACK_VARIABLE",
    "USAGE_ERROR",
    "Failure",
    "Interrupted",
    "PeerProcessFailed",
    "UsageError",
    "exit_status_of",
    "first_line",
    "one_line",
]
