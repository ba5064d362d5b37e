"""Making any text a task produces storable and loggable, and checking the names a flow stores.

A user's function may raise with a message holding a lone surrogate (a file name read with
``os.listdir`` on a non-UTF-8 name), a NUL byte (which PostgreSQL refuses) or megabytes of text.
Every such text passes through :func:`storable` before the coordinator writes or logs it, so
no text can make a write fail; names are checked when the flow is built, where a bad one can
still be refused with a clear error.
"""

from __future__ import annotations

from typing import Optional

#: Characters kept of a task's result (the repr of what it returned).
RESULT_LIMIT = 10_000
#: Characters kept of a task's error message.
ERROR_LIMIT = 10_000
#: Characters kept of a task's traceback (its end, where the error was raised, is kept).
TRACEBACK_LIMIT = 50_000

#: Longest step, flow or pool name the store keeps (its columns' width).
NAME_LIMIT = 255
#: Longest run_id the store keeps.
RUN_ID_LIMIT = 64
#: Longest sequence (``1.2.3``) the store keeps; a deeper or longer one fails its container.
SEQUENCE_LIMIT = 1024
#: Deepest nesting of containers a flow may have.
DEPTH_LIMIT = 100


def _clean(text: str) -> str:
    """The text with NUL bytes and lone surrogates written as visible escapes."""
    if "\0" in text:
        text = text.replace("\0", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def storable(text: Optional[str], limit: int, *, keep_ends: bool = False) -> str:
    """``text`` made safe for every store and log: escapes for NUL and lone surrogates, cut to
    ``limit`` characters (its start kept, or with ``keep_ends`` its start and end); never raises."""
    if not text:
        return ""
    if not isinstance(text, str):
        try:
            text = str(text)
        except Exception as exc:  # noqa: BLE001 - a text that cannot even be made is described
            text = f"<unprintable {type(text).__name__}: {type(exc).__name__}>"
    if len(text) > limit:
        cut = len(text) - limit
        head = limit // 4 if keep_ends else limit
        text = text[:head] + f"...<{cut} characters cut>..." + text[len(text) - (limit - head):]
    return _clean(text)


def exception_text(exc: BaseException) -> str:
    """repr of a user's exception, storable and capped; never raises (a broken __repr__ included)."""
    try:
        text = repr(exc)
    except BaseException:  # noqa: B036 - a broken __repr__ must not kill the coordinator
        text = f"<{type(exc).__name__}>"
    return storable(text, ERROR_LIMIT)


def name_problem(value: object, what: str, limit: int = NAME_LIMIT) -> Optional[str]:
    """Why ``value`` cannot be stored as a name (None when it can): its type, length or characters."""
    if not isinstance(value, str) or not value:
        return f"{what} must be a non-empty str, got {value!r}"
    if len(value) > limit:
        return f"{what} {value[:40]!r}... is {len(value)} characters long; the store keeps at most {limit}"
    if _clean(value) != value:
        return f"{what} {value!r} holds a NUL byte or a lone surrogate, which the store cannot keep"
    if any(ch < " " or ch == "\x7f" for ch in value):
        return f"{what} {value!r} holds a control character"
    return None


#: Characters kept of an item's repr (tasks.item, sequent_iterations.item).
ITEM_LIMIT = 1_000


def item_text(item: object) -> str:
    """What the store records of an item: its repr, storable and cut to ITEM_LIMIT; never raises.

    A recovery that compares items compares these texts (a long repr is recorded cut)."""
    try:
        text = repr(item)
    except BaseException:  # noqa: B036 - a broken __repr__ must not fail the run
        text = f"<unprintable {type(item).__name__}>"
    return storable(text, ITEM_LIMIT)
