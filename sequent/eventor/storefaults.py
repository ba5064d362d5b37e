"""Store faults in the user's words: what a database or file-system error means, and what to do.

:class:`sequent.eventor.store.Store` turns an error raised while it reads or writes into a message
naming what happened (a full disk, a lock held too long, a lost server) and the remedy, with the
driver's own text as the cause.  This knows only messages and errno values, not SQLAlchemy.
"""

from __future__ import annotations

import errno

__all__ = ["describe_fault", "driver_text"]

#: What a driver's error message says, what it means for the user, and what to do about it.
_FAULTS = (
    (("database or disk is full", "no space left on device", "could not extend file", "disk full"),
     "the disk holding the store is full", "free space on it"),
    (("database is locked", "database table is locked", "lock timeout", "canceling statement due to lock"),
     "the store stayed locked by another connection for longer than busy_timeout ({busy} s)",
     "find what holds it (another program writing to the database), or raise busy_timeout"),
    (("readonly database", "read-only", "read only"),
     "the store cannot be written (a read-only file, folder or database)",
     "give this user write access to the store file and its folder"),
    (("unable to open database file",),
     "the store file cannot be opened (a missing or inaccessible folder)",
     "check the path and its permissions"),
    (("file is not a database", "malformed", "not a database"),
     "the store file is not a SQLite database, or is damaged",
     "point the flow at its own store file"),
    (("authentication failed", "no password supplied", 'role "', 'database "'),
     "the store's database refused this login or database name", "check the URL or DATABASES entry"),
    (("connection refused", "could not connect", "server closed the connection", "terminating connection",
      "the database system is", "connection is closed", "connection is lost", "connection already closed", "consuming input failed", "connection timeout",
      "could not translate host name", "connection to server", "ssl syscall"),
     "the connection to the store's database server failed or was lost (was it down or restarted?)",
     "check that the server is up and reachable"),
)


def describe_fault(exc: BaseException, *, busy_timeout: float = 10.0) -> tuple[str, str]:
    """(what happened, what to do) for an error raised by a store's database or file system."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk holding the store is full", "free space on it"
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ("the store cannot be written (a read-only file, folder or database)",
                "give this user write access to the store file and its folder")
    text = str(getattr(exc, "orig", None) or exc).lower()
    for needles, what, todo in _FAULTS:
        if any(needle in text for needle in needles):
            return what.format(busy=f"{busy_timeout:g}"), todo
    return "the store's database failed", "see the cause below"


def driver_text(exc: BaseException) -> str:
    """The driver's own message, on one line, without SQLAlchemy's statement and link."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(getattr(exc, 'orig', None) or exc).__name__}: {text[0] if text else ''}"
