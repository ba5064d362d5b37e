"""The engine's logging: standard ``logging`` only, no log server and no extra process.

One run writes its lines to the console, to one file for the run and to one file per task
(never one file per dot-prefix of the logger name, as the original did). Task loggers are
children of the flow logger, so their records reach the flow logger's handlers by propagation;
the task-file handler then routes each record to the file of the task that emitted it.
"""
from __future__ import annotations

import contextvars
import datetime
import logging
import os
import socket
import sys
import traceback
from typing import IO, Any, Mapping

from .errors import ConfigError

HOST: str = socket.gethostname()

LINE_FORMAT = '[ %(asctime)-15s ][ %(levelname)-7s ][ %(host)s ][ %(processName)-11s ][ %(message)s ]'
DEBUG_SUFFIX = '[ %(module)s.%(funcName)s(%(lineno)d) ]'
DATE_FORMAT = '%Y-%m-%d,%H:%M:%S.%f'

DEFAULTS: dict[str, Any] = {
    'logdir': '~/log/sequent', 'logging_level': logging.INFO, 'console': True,
    'file_prefix': '', 'file_suffix': '', 'file_mode': 'a', 'encoding': 'utf8',
    'maxBytes': 0, 'backupCount': 0, 'when': None, 'interval': 1, 'utc': False,
    'atTime': None, 'delay': False,
}

# The label of the task running in the current thread (or process), shown as processName.
_task_label: contextvars.ContextVar[str | None] = contextvars.ContextVar('sequent_task_label', default=None)


def set_task_label(label: str | None) -> contextvars.Token:
    """Show `label` (e.g. 'Task-s2(1)') as the processName of lines logged from this context.

    A ContextVar, so each thread task sees only its own label; undo with `reset_task_label`.
    """
    return _task_label.set(label)


def reset_task_label(token: contextvars.Token) -> None:
    """Restore the task label that was current before the matching `set_task_label`."""
    _task_label.reset(token)


def flow_logger_name(name: str, run_id: str | None) -> str:
    """The flow logger's name: `name`, or `name-<run_id>` when there is a run_id."""
    return f'{name}-{run_id}' if run_id else name


def task_logger_name(flow_logger: str, step: str, sequence: str) -> str:
    """A task's logger name: `<flow logger>.<step>_<sequence>` (the sequence may hold dots)."""
    return f'{flow_logger}.{step}_{sequence}'


class LineFormatter(logging.Formatter):
    """The original's line format: adds `host`, shows the task label as processName, and
    formats the time with microseconds (time.strftime has no %f, datetime has)."""

    def __init__(self, fmt: str = LINE_FORMAT, datefmt: str = DATE_FORMAT) -> None:
        super().__init__(fmt, datefmt)

    def format(self, record: logging.LogRecord) -> str:
        record.host = HOST
        label = _task_label.get()
        if label:
            record.processName = label
        return super().format(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.datetime.fromtimestamp(record.created).strftime(datefmt or DATE_FORMAT)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is when emitting, so later redirection (pytest) works."""

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it; ignore
        pass


class _TaskFileHandler(logging.Handler):
    """Writes a record also to the file of the registered task whose logger emitted it.

    The registry maps a task logger name to its file; a record matches the longest registered
    name equal to its logger name or to one of its dot-prefixes. Files open on the first record
    (a silent task makes no file) and close when the task is unregistered. Everything is done
    under the handler's own lock, which logging re-initialises in a forked child.
    """

    def __init__(self, encoding: str | None) -> None:
        super().__init__()
        self.encoding = encoding
        self._paths: dict[str, str] = {}
        self._streams: dict[str, IO[str]] = {}

    def register(self, task_logger: str, path: str) -> None:
        with self.lock:
            self._paths[task_logger] = path

    def unregister(self, task_logger: str) -> None:
        with self.lock:
            self._paths.pop(task_logger, None)
            stream = self._streams.pop(task_logger, None)
            if stream is not None:
                stream.close()

    def _match(self, name: str) -> str | None:
        while name:
            if name in self._paths:
                return name
            name = name.rpartition('.')[0]
        return None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            task = self._match(record.name)
            if task is None:
                return
            stream = self._streams.get(task)
            if stream is None:
                stream = self._streams[task] = open(self._paths[task], 'a', encoding=self.encoding)
            stream.write(self.format(record) + '\n')
            stream.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        with self.lock:
            for stream in self._streams.values():
                stream.close()
            self._streams.clear()
            self._paths.clear()
        super().close()


def _parse_at_time(value: Any) -> datetime.time | None:
    """'HH:MM[:SS]' (or a datetime.time) → datetime.time, for TimedRotatingFileHandler."""
    if value is None or isinstance(value, datetime.time):
        return value
    try:
        parts = [int(p) for p in str(value).split(':')]
        if len(parts) not in (2, 3):
            raise ValueError
        return datetime.time(*parts)
    except ValueError:
        raise ConfigError(f"LOGGING.atTime must be 'HH:MM' or 'HH:MM:SS', got {value!r}") from None


def _level(value: Any) -> int:
    """The logging level as an int; accepts a level name such as 'DEBUG' too."""
    if isinstance(value, str) and not value.isdigit():
        level = logging.getLevelName(value.upper())
        if not isinstance(level, int):
            raise ConfigError(f'LOGGING.logging_level: unknown level {value!r}')
        return level
    return int(value)


class RunLogging:
    """The logging of one run: console, one file for the run, one file per task."""

    def __init__(self, logger_name: str, settings: Mapping[str, Any] | None = None) -> None:
        self.logger_name = logger_name
        self.settings = {**DEFAULTS, **(settings or {})}
        self.level = _level(self.settings['logging_level'])
        self.logdir = os.path.expanduser(str(self.settings['logdir']))
        self._handlers: list[logging.Handler] = []
        self._tasks: _TaskFileHandler | None = None

    def _path(self, key: str) -> str:
        s = self.settings
        return os.path.join(self.logdir, f"{s['file_prefix']}{key}{s['file_suffix']}.log")

    @property
    def run_log_path(self) -> str:
        """The run's log file."""
        return self._path(self.logger_name)

    def task_log_path(self, task_logger: str) -> str:
        """The log file of the task whose logger is `task_logger`."""
        return self._path(task_logger)

    def _run_file_handler(self) -> logging.Handler:
        s, path = self.settings, self.run_log_path
        if s['when']:
            from logging import handlers  # only for rotated run logs

            return handlers.TimedRotatingFileHandler(
                path, when=s['when'], interval=int(s['interval']), backupCount=int(s['backupCount']),
                encoding=s['encoding'], delay=bool(s['delay']), utc=bool(s['utc']),
                atTime=_parse_at_time(s['atTime']))
        if int(s['maxBytes']) > 0:
            from logging import handlers

            return handlers.RotatingFileHandler(
                path, mode=s['file_mode'], maxBytes=int(s['maxBytes']),
                backupCount=int(s['backupCount']), encoding=s['encoding'], delay=bool(s['delay']))
        return logging.FileHandler(path, mode=s['file_mode'], encoding=s['encoding'], delay=bool(s['delay']))

    def start(self) -> logging.Logger:
        """Attach the run's handlers to the flow logger and return it (idempotent)."""
        logger = logging.getLogger(self.logger_name)
        if self._handlers:
            return logger
        os.makedirs(self.logdir, mode=0o744, exist_ok=True)
        logger.setLevel(self.level)
        logger.propagate = False  # a user's root handlers would print every line twice
        fmt = LINE_FORMAT + DEBUG_SUFFIX if self.level <= logging.DEBUG else LINE_FORMAT
        handlers: list[logging.Handler] = []
        if self.settings['console']:
            handlers.append(_StdoutHandler())
        handlers.append(self._run_file_handler())
        self._tasks = _TaskFileHandler(self.settings['encoding'])
        handlers.append(self._tasks)
        for handler in handlers:
            handler.setLevel(self.level)
            handler.setFormatter(LineFormatter(fmt))
            logger.addHandler(handler)
        self._handlers = handlers
        return logger

    def task_started(self, task_logger: str) -> None:
        """Route the records of `task_logger` (and its children) to the task's own file too."""
        if self._tasks is not None:
            self._tasks.register(task_logger, self.task_log_path(task_logger))

    def task_ended(self, task_logger: str) -> None:
        """Close the task's file (if it was ever opened) and stop routing to it."""
        if self._tasks is not None:
            self._tasks.unregister(task_logger)

    def stop(self) -> None:
        """Flush, detach and close every handler this run added, task files included (idempotent)."""
        logger = logging.getLogger(self.logger_name)
        for handler in self._handlers:
            try:
                handler.flush()
            finally:
                logger.removeHandler(handler)
                handler.close()
        self._handlers = []
        self._tasks = None


def describe_exception(exc: BaseException) -> tuple[str, str]:
    """(repr(exc), its traceback text without the 'Traceback (most recent call last):' header),
    the two parts the engine logs for a failed task."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    if lines and lines[0].startswith('Traceback (most recent call last)'):
        lines = lines[1:]
    return repr(exc), ''.join(lines).rstrip('\n')
