"""The wire framing of the process runner: length-prefixed pickles over a byte stream.

One message is a 4-byte big-endian unsigned length, then that many bytes of pickle (protocol
:data:`PROTOCOL`); a message can hold at most :data:`MAX_MESSAGE` bytes of pickle.  Messages follow
each other with nothing in between, so a reader keeps a buffer, appends what it reads and takes the
whole messages off its front.  The coordinator and its launcher speak this over their socket, a task
child sends its outcome this way over its pipe, and anything else that carries the same messages
over a pipe (an agent on another host) speaks it unchanged.

Public names:

* :func:`encode` -- one message, header included, ready to write.
* :func:`take_messages` -- unpickle and remove the whole messages at the front of a buffer.
* :func:`first_message` -- the raw pickle of the first message once it is whole (not unpickled).
* :func:`has_whole_message` -- whether the first message of a buffer has arrived whole.
* :func:`write_all` / :func:`read_exactly` -- blocking write and read of a whole byte count on an fd.
* :data:`HEADER`, :data:`MAX_MESSAGE`, :data:`PROTOCOL`, :data:`CHUNK` -- the length prefix, the
  largest payload it can state, the pickle protocol, and a good read size.

Pickle runs code while loading: only read messages from a peer that is trusted as much as the
program itself (here, always a fork of it, or one started by it).
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

__all__ = ['CHUNK', 'HEADER', 'MAX_MESSAGE', 'PROTOCOL', 'encode', 'first_message', 'has_whole_message',
           'read_exactly', 'take_messages', 'write_all']

HEADER = struct.Struct('!I')
MAX_MESSAGE = 0xFFFFFFFF
PROTOCOL = pickle.HIGHEST_PROTOCOL
CHUNK = 65536                  # below malloc's mmap threshold, and the default pipe capacity


def encode(obj: Any) -> bytes:
    """Pickle ``obj`` with its length prefix: one message (struct.error beyond MAX_MESSAGE bytes)."""
    data = pickle.dumps(obj, PROTOCOL)
    return HEADER.pack(len(data)) + data


def has_whole_message(buf: bytearray) -> bool:
    """Whether the first message in ``buf`` has arrived whole."""
    return len(buf) >= HEADER.size and len(buf) >= HEADER.size + HEADER.unpack_from(buf)[0]


def take_messages(buf: bytearray) -> list:
    """Unpickle the whole messages at the start of ``buf`` and remove them from it."""
    messages = []
    pos = 0
    while len(buf) - pos >= HEADER.size:
        (size,) = HEADER.unpack_from(buf, pos)
        end = pos + HEADER.size + size
        if len(buf) < end:
            break
        messages.append(pickle.loads(memoryview(buf)[pos + HEADER.size:end]))
        pos = end
    del buf[:pos]
    return messages


def first_message(buf: bytearray) -> bytes | None:
    """The payload of the first message in ``buf`` when it has arrived whole, else None."""
    if not has_whole_message(buf):
        return None
    return bytes(memoryview(buf)[HEADER.size:HEADER.size + HEADER.unpack_from(buf)[0]])


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to a blocking fd (the reader drains it while we write)."""
    written = os.write(fd, data)
    if written < len(data):             # more than the pipe holds: the reader drains it meanwhile
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view):]


def read_exactly(fd: int, size: int) -> bytes | None:
    """Read ``size`` bytes from a blocking fd; None at end of file before the first byte.

    End of file after the first byte raises EOFError: the writer went away mid-message.
    """
    data = b''
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            if not data:
                return None
            raise EOFError('the writer closed the pipe mid-message')
        data += chunk
    return data
