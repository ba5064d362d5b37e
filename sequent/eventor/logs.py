"""The engine's logging: standard ``logging`` only, no log server and no extra process.

One run writes its lines to the console, to one file for the run and to one file per task
(never one file per dot-prefix of the logger name, as the original did). The console takes the
lines down to ``console_level`` (by default: all of them on a terminal, warnings and errors
otherwise, as under cron) and always the run's summary; on a terminal a live progress line
(:mod:`.progress`) stays below the lines printed there, and is never written to a file. Task loggers are
children of the flow logger, so their records reach the flow logger's handlers by propagation;
the task-file handler then routes each record to the file of the task that emitted it.

Process tasks run in forked children that inherit these handlers. When the run log rotates, only
the process that started the logging (the coordinator) rotates it; a child only appends, and
reopens the file when the coordinator rotated it away, so no process deletes another's lines.
File names are made safe (inside logdir, at most NAME_MAX bytes), folders and files are created
with the configured modes, and `stop` removes the run's loggers from logging's registry.
"""
from __future__ import annotations

import contextlib
import contextvars
import datetime
import logging
import os
import re
import socket
import sys
import traceback
from typing import IO, Any, Mapping, Sequence

from .config import LOGGING_DEFAULTS, permission_mode
from .config import logging_level as config_level
from .errors import ConfigError

HOST: str = socket.gethostname()

LINE_FORMAT = '[ %(asctime)-15s ][ %(levelname)-7s ][ %(host)s ][ %(processName)-11s ][ %(message)s ]'
DEBUG_SUFFIX = '[ %(module)s.%(funcName)s(%(lineno)d) ]'
DATE_FORMAT = '%Y-%m-%d,%H:%M:%S.%f'

#: The attribute that marks a record of the run's summary: the console shows it whatever its level.
SUMMARY = 'sequent_summary'

#: The LOGGING settings a run falls back on: the configuration's own defaults (one source, never changed).
DEFAULTS: Mapping[str, Any] = LOGGING_DEFAULTS

NAME_MAX = 255  # bytes in one file name on the usual file systems (ext4, xfs, btrfs, APFS)
_HASH_CHARS = 12  # hex digits of sha256 added to a name that had to be changed
_BAD_NAME_CHARS = re.compile('[\x00/' + re.escape(os.altsep or '') + '\ud800-\udfff]')

# The label of the task running in the current thread (or process), shown as processName.
_task_label: contextvars.ContextVar[str | None] = contextvars.ContextVar('sequent_task_label', default=None)


def set_task_label(label: str | None) -> contextvars.Token:
    """Show `label` (e.g. 'Task-s2(1)') as the processName of lines logged from this context.

    A ContextVar, so each thread task sees only its own label; undo with `reset_task_label`.
    """
    return _task_label.set(label)


def current_task_label() -> str | None:
    """The label `set_task_label` gave this context, if any."""
    return _task_label.get()


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
        if not getattr(record, 'host', None):  # a record relayed from a remote host keeps its host
            record.host = HOST
        label = _task_label.get()
        if label:
            record.processName = label
        return super().format(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.datetime.fromtimestamp(record.created).strftime(datefmt or DATE_FORMAT)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is when emitting, so later redirection (pytest) works; with a
    live progress line (on a terminal), each line goes above it."""

    def __init__(self, live: Any = None) -> None:
        super().__init__()
        self.live = live  # a progress.LiveLine, or None

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it; ignore
        pass

    def emit(self, record: logging.LogRecord) -> None:
        if self.live is None:
            super().emit(record)
            return
        try:
            self.live.write_above(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)


class _ConsoleFilter(logging.Filter):
    """Lets through the records at ``level`` or above, and every line of the run's summary."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or getattr(record, SUMMARY, False)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _open_file(path: str, mode: str, encoding: str | None, errors: str | None, perm: int) -> IO[str]:
    """Open a log file; a new one gets mode `perm` (less the umask) from open(2) itself, never by a later chmod."""
    return open(path, mode, encoding=encoding, errors=errors,
                opener=lambda name, flags: os.open(name, flags, perm))


def _make_dirs(path: str, perm: int) -> None:
    """Create folder `path` and its missing parents with mode `perm` (os.makedirs gives it to the last only)."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        _make_dirs(parent, perm)
    try:
        os.mkdir(path, perm)
    except FileExistsError:  # made meanwhile by another run, or a file is in the way
        if not os.path.isdir(path):
            raise


class _RunFileMixin:
    """The run log across fork: only the owner process rotates; forked tasks append, so none deletes another's lines."""

    # In any process but the owner (a forked task) the handler only appends, and with `follows`
    # reopens the file when the owner rotated it away, as logging.handlers.WatchedFileHandler
    # does: a line written just before the reopen lands in the renamed backup, never in a deleted
    # file, so no line is lost while backupCount keeps the backups. New files get mode `perm`.
    follows = False  # True for the rotating handlers: the file may be renamed under a child
    # attributes of logging.FileHandler that the mixin uses
    baseFilename: str
    mode: str
    encoding: str | None
    errors: str | None
    stream: Any

    def __init__(self, *args: Any, perm: int, **kwargs: Any) -> None:
        self._owner = os.getpid()
        self._perm = perm
        self._followed: tuple[int, int, int] | None = None  # (pid, st_dev, st_ino) of a child's file
        super().__init__(*args, **kwargs)

    def _open(self) -> IO[str]:
        mode = self.mode if os.getpid() == self._owner else 'a'  # a child never truncates
        return _open_file(self.baseFilename, mode, self.encoding, self.errors, self._perm)

    def emit(self, record: logging.LogRecord) -> None:
        if os.getpid() == self._owner:
            super().emit(record)  # type: ignore[misc]  # writes, and rotates if due
            return
        try:
            if self.follows:
                self._follow()
            logging.FileHandler.emit(self, record)  # type: ignore[arg-type]
        except Exception:
            self.handleError(record)  # type: ignore[attr-defined]

    def _follow(self) -> None:
        """In a child: open the current file at the first record and again after each rotation by the owner."""
        pid = os.getpid()
        try:
            st = os.stat(self.baseFilename)
            current: tuple[int, int, int] | None = (pid, st.st_dev, st.st_ino)
        except FileNotFoundError:  # between the owner's rename and its reopen
            current = None
        if self.stream is not None and current is not None and current == self._followed:
            return
        if self.stream is not None:  # inherited from the owner, or the file was rotated away
            stream, self.stream = self.stream, None
            stream.close()
        self.stream = self._open()
        st = os.fstat(self.stream.fileno())
        self._followed = (pid, st.st_dev, st.st_ino)


class _RunFileHandler(_RunFileMixin, logging.FileHandler):
    """The run log without rotation."""


def _rotating_handlers() -> tuple[type[logging.Handler], type[logging.Handler]]:
    """The size- and time-rotating run-log handler classes (logging.handlers loaded on first use)."""
    global _ROTATING
    if _ROTATING is None:
        from logging import handlers

        class _SizeRotatingRunFile(_RunFileMixin, handlers.RotatingFileHandler):
            """The run log rotated by size, by the owner process only."""
            follows = True

        class _TimeRotatingRunFile(_RunFileMixin, handlers.TimedRotatingFileHandler):
            """The run log rotated by time, by the owner process only."""
            follows = True

        _ROTATING = (_SizeRotatingRunFile, _TimeRotatingRunFile)
    return _ROTATING


_ROTATING: tuple[type[logging.Handler], type[logging.Handler]] | None = None


class _TaskFileHandler(logging.Handler):
    """Writes a record also to the file of the registered task whose logger emitted it.

    The registry maps a task logger name to its file; a record matches the longest registered
    name equal to its logger name or to one of its dot-prefixes. Files open on the first record
    (a silent task makes no file) and close when the task is unregistered. Everything is done
    under the handler's own lock, which logging re-initialises in a forked child.
    """

    def __init__(self, encoding: str | None, perm: int = DEFAULTS['logfile_mode']) -> None:
        super().__init__()
        self.encoding = encoding
        self.perm = perm
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
                stream = self._streams[task] = _open_file(self._paths[task], 'a', self.encoding, None, self.perm)
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
    """The logging level as an int, checked as the configuration checks it (one rule for both)."""
    return config_level(value, 'LOGGING.logging_level')


def _utf8_size(text: str) -> int:
    """The length of `text` in bytes as a file name (UTF-8), to compare with NAME_MAX."""
    return len(text.encode('utf-8', 'surrogatepass'))


def _safe_chars(text: str) -> str:
    """`text` with path separators, NUL and lone surrogates (unencodable) replaced by '_', to stay in the folder."""
    return _BAD_NAME_CHARS.sub('_', text)


def log_file_name(key: str, prefix: str = '', suffix: str = '', reserve: int = 0) -> str:
    """The file name `<prefix><key><suffix>.log`, made safe to create inside the log folder and unique per key."""
    # A name that is safe and at most NAME_MAX - `reserve` bytes (room for a rotation suffix
    # such as '.3') is kept as is. Otherwise separators, NUL and unencodable characters become
    # '_', a leading '.' becomes '_' (no hidden file, no '..'), the name is cut to fit, and '~'
    # plus a short hash of the original name goes before the suffix, so names stay distinct.
    limit = NAME_MAX - reserve
    name = f'{prefix}{key}{suffix}.log'
    if not name.startswith('.') and _safe_chars(name) == name and _utf8_size(name) <= limit:
        return name
    import hashlib  # only for the rare name that needs it

    tag = '~' + hashlib.sha256(f'{prefix}{key}{suffix}'.encode('utf-8', 'surrogatepass')).hexdigest()[:_HASH_CHARS]
    head, tail = _safe_chars(prefix + key), _safe_chars(suffix) + '.log'
    if _utf8_size(tail) > limit // 4:  # a very long suffix is cut with the rest
        head, tail = head + tail[:-len('.log')], '.log'
    if head.startswith('.'):
        head = '_' + head[1:]
    room = max(limit - _utf8_size(tag + tail), 0)
    head = head.encode('utf-8')[:room].decode('utf-8', 'ignore')  # cut on a character boundary
    return head + tag + tail


# ------------------------------------------------------------------------- the logger registry

def _parent_names(name: str) -> list[str]:
    """The names logging looks up for a logger's parent, nearest first (logging's own walk)."""
    names, i = [], name.rfind('.')
    while i > 0:
        names.append(name[:i])
        i = name.rfind('.', 0, i - 1)
    return names


def _under(name: str, root: str) -> bool:
    """Whether logger `name` is `root` or one of its descendants."""
    return name == root or name.startswith(root + '.')


def _registry_lock() -> Any:
    """logging's module lock, which guards the logger registry (a no-op if logging has none)."""
    return getattr(logging, '_lock', None) or contextlib.nullcontext()


class _Claim:
    """What the runs on one flow logger name share: how many are on, and what was there before the first."""

    __slots__ = ('runs', 'keep', 'saved')

    def __init__(self, root: str) -> None:
        registry = logging.Logger.manager.loggerDict
        self.runs = 0
        # the loggers at or below `root` registered before the first run
        self.keep = {n: lg for n, lg in registry.items() if isinstance(lg, logging.Logger) and _under(n, root)}
        flow = self.keep.get(root)  # a user's logger of the flow's name: its settings are given back
        self.saved = (flow.level, flow.propagate) if flow is not None else None


# The flow logger names of the runs started and not yet stopped in this process.
_CLAIMS: dict[str, _Claim] = {}


def _claim_loggers(root: str) -> None:
    """Note that a run uses flow logger `root`, remembering what was there before the first such run."""
    with _registry_lock():
        claim = _CLAIMS.get(root)
        if claim is None:
            claim = _CLAIMS[root] = _Claim(root)
        claim.runs += 1


def _release_loggers(root: str) -> None:
    """A run of flow logger `root` ended: when it was the last, remove the loggers it made, so runs do not pile up."""
    # Loggers made before the run stay; so do those of other runs still going (a run_id with a
    # dot puts one run's loggers below another's). The survivors find their parents again as
    # logging itself would, through placeholders. Placeholders above `root` forget the removed
    # loggers, and go when left empty (an empty placeholder has no child to hand to a logger).
    manager = logging.Logger.manager
    with _registry_lock():
        claim = _CLAIMS[root]
        claim.runs -= 1
        if claim.runs > 0:  # another run of the same name is still on: the last one cleans up
            return
        del _CLAIMS[root]
        registry = manager.loggerDict
        flow = claim.keep.get(root)
        if flow is not None and claim.saved is not None:
            flow.setLevel(claim.saved[0])
            flow.propagate = claim.saved[1]
        others = [r for r in _CLAIMS if _under(r, root)]
        gone = [n for n, obj in registry.items()
                if _under(n, root) and claim.keep.get(n) is not obj and not any(_under(n, r) for r in others)]
        removed = [obj for obj in (registry.pop(n) for n in gone) if isinstance(obj, logging.Logger)]
        for name, logger in list(registry.items()):
            if isinstance(logger, logging.Logger) and _under(name, root):
                _relink(registry, logger, manager.root)
        above = {p for logger in removed for p in _parent_names(logger.name) if not _under(p, root)}
        for name in above:
            holder = registry.get(name)
            if isinstance(holder, logging.PlaceHolder):
                for logger in removed:
                    holder.loggerMap.pop(logger, None)
                if not holder.loggerMap:
                    del registry[name]
        clear_cache = getattr(manager, '_clear_cache', None)
        if clear_cache is not None:
            clear_cache()


def _relink(registry: dict, logger: logging.Logger, root: logging.Logger) -> None:
    """Give `logger` its nearest registered ancestor as parent, adding placeholders on the way."""
    parent = None
    for name in _parent_names(logger.name):
        holder = registry.get(name)
        if holder is None:
            registry[name] = logging.PlaceHolder(logger)
        elif isinstance(holder, logging.Logger):
            parent = holder
            break
        else:
            holder.append(logger)
    logger.parent = parent or root


class RunLogging:
    """The logging of one run: console, one file for the run, one file per task."""

    def __init__(self, logger_name: str, settings: Mapping[str, Any] | None = None) -> None:
        self.logger_name = logger_name
        self.settings = {**DEFAULTS, **(settings or {})}
        self.level = _level(self.settings['logging_level'])
        self.dir_perm = permission_mode(self.settings['logdir_mode'], 'LOGGING.logdir_mode')
        self.file_perm = permission_mode(self.settings['logfile_mode'], 'LOGGING.logfile_mode')
        # absolute once, here: a thread task's os.chdir must not move later tasks' files
        self.logdir = os.path.abspath(os.path.expanduser(str(self.settings['logdir'])))
        self._handlers: list[logging.Handler] = []
        self._tasks: _TaskFileHandler | None = None
        self._logger: logging.Logger | None = None  # the flow logger while the run's handlers are on it
        self.live: Any = None  # the live progress line (a progress.LiveLine) while the run is on a terminal

    def _rotation_reserve(self) -> int:
        """Bytes the run log's name leaves free for the suffix rotation adds to its backups."""
        s = self.settings
        if s['when']:
            return len('.%Y-%m-%d_%H-%M-%S') + 4  # TimedRotatingFileHandler's longest, and spare
        if int(s['maxBytes']) > 0:
            return 1 + len(str(int(s['backupCount'])))
        return 0

    def _path(self, key: str, reserve: int = 0) -> str:
        s = self.settings
        return os.path.join(self.logdir, log_file_name(key, str(s['file_prefix']), str(s['file_suffix']), reserve))

    @property
    def run_log_path(self) -> str:
        """The run's log file."""
        return self._path(self.logger_name, self._rotation_reserve())

    def task_log_path(self, task_logger: str) -> str:
        """The log file of the task whose logger is `task_logger`."""
        return self._path(task_logger)

    def where(self) -> dict[str, str]:
        """Where this run's logs go, as the store keeps it with the attempt (for ``sequent logs``):
        the run log and what names each task's file (:func:`task_log_file`)."""
        s = self.settings
        return {"logger": self.logger_name, "run_log": self.run_log_path, "logdir": self.logdir,
                "file_prefix": str(s['file_prefix']), "file_suffix": str(s['file_suffix'])}

    def _run_file_handler(self) -> logging.Handler:
        s, path, perm = self.settings, self.run_log_path, self.file_perm
        if s['when']:
            timed = _rotating_handlers()[1]
            return timed(
                path, when=s['when'], interval=int(s['interval']), backupCount=int(s['backupCount']),
                encoding=s['encoding'], delay=bool(s['delay']), utc=bool(s['utc']),
                atTime=_parse_at_time(s['atTime']), perm=perm)
        if int(s['maxBytes']) > 0:
            sized = _rotating_handlers()[0]
            return sized(
                path, mode=s['file_mode'], maxBytes=int(s['maxBytes']),
                backupCount=int(s['backupCount']), encoding=s['encoding'], delay=bool(s['delay']), perm=perm)
        mode = s['file_mode']
        if s['delay'] and 'w' in mode:
            # emptied now, appended to later: opening it with 'w' at the first record would cut
            # the lines that process tasks (which always append) wrote before it
            try:
                os.truncate(path, 0)
            except FileNotFoundError:
                pass
            mode = mode.replace('w', 'a')
        return _RunFileHandler(path, mode=mode, encoding=s['encoding'], delay=bool(s['delay']), perm=perm)

    def console_level(self) -> int:
        """The lowest level of the lines the console shows: ``console_level``, where 'auto' means
        ``logging_level`` when stdout is a terminal and WARNING otherwise (cron, a pipe, a file)."""
        value = self.settings.get('console_level', 'auto')
        if isinstance(value, str) and value.lower() == 'auto':
            return self.level if _is_terminal(sys.stdout) else max(self.level, logging.WARNING)
        return config_level(value, 'LOGGING.console_level')

    def _console_handler(self) -> logging.Handler:
        level = self.console_level()
        if self.settings.get('progress', True):
            from .progress import live_line  # rich, if installed, is imported only for a terminal

            self.live = live_line(sys.stdout)
        handler = _StdoutHandler(self.live)
        if level > self.level:
            handler.addFilter(_ConsoleFilter(level))
        return handler

    def start(self) -> logging.Logger:
        """Attach the run's handlers to the flow logger and return it (idempotent)."""
        if self._logger is not None:
            return self._logger
        _make_dirs(self.logdir, self.dir_perm)
        handlers: list[logging.Handler] = []
        if self.settings['console']:
            handlers.append(self._console_handler())
        handlers.append(self._run_file_handler())
        tasks = _TaskFileHandler(self.settings['encoding'], self.file_perm)
        handlers.append(tasks)
        # nothing can fail from here on: the registry is touched only when stop() will clean it
        _claim_loggers(self.logger_name)
        logger = logging.getLogger(self.logger_name)
        logger.setLevel(self.level)
        logger.propagate = False  # a user's root handlers would print every line twice
        fmt = LINE_FORMAT + DEBUG_SUFFIX if self.level <= logging.DEBUG else LINE_FORMAT
        self._tasks = tasks
        for handler in handlers:
            handler.setLevel(self.level)
            handler.setFormatter(LineFormatter(fmt))
            logger.addHandler(handler)
        self._handlers, self._logger = handlers, logger
        return logger

    def start_on_agent(self, forward: logging.Handler) -> logging.Logger:
        """On a remote host's agent: task files on this host, and every record sent on by
        ``forward`` (to the coordinator's run log); no console and no run file here."""
        if self._logger is not None:
            return self._logger
        tasks = _TaskFileHandler(self.settings['encoding'], self.file_perm)
        _claim_loggers(self.logger_name)
        logger = logging.getLogger(self.logger_name)
        logger.setLevel(self.level)
        logger.propagate = False
        fmt = LINE_FORMAT + DEBUG_SUFFIX if self.level <= logging.DEBUG else LINE_FORMAT
        for handler in (tasks, forward):
            handler.setLevel(self.level)
            handler.setFormatter(LineFormatter(fmt))
            logger.addHandler(handler)
        self._tasks = tasks
        self._handlers, self._logger = [tasks, forward], logger
        return logger

    def summary(self, lines: Sequence[tuple[int, str]], *, alert: bool = False) -> None:
        """Log the run's summary, (level, text) per line: the console shows it whatever
        ``console_level`` says.  With ``alert`` (the run did not succeed) and no console, the
        lines also go to stderr, so that a run under cron says why it failed, and nothing else."""
        logger = self._logger
        if logger is None:
            return
        self.end_progress()
        for level, text in lines:
            logger.log(level, '%s', text, extra={SUMMARY: True})
        if alert and not self.settings['console']:
            formatter = LineFormatter()
            try:
                for level, text in lines:
                    record = logger.makeRecord(logger.name, level, '', 0, '%s', (text,), None, 'summary')
                    sys.stderr.write(formatter.format(record) + '\n')
                sys.stderr.flush()
            except (OSError, ValueError, AttributeError):  # no stderr to write to (closed, or None)
                pass

    def end_progress(self) -> None:
        """Erase the live progress line for good (the run's tasks are over)."""
        if self.live is not None:
            self.live.close()

    def make_logdir(self) -> None:
        """Create the log folder (with its configured mode) if it is missing."""
        _make_dirs(self.logdir, self.dir_perm)

    def task_started(self, task_logger: str) -> None:
        """Route the records of `task_logger` (and its children) to the task's own file too."""
        if self._tasks is not None:
            self._tasks.register(task_logger, self.task_log_path(task_logger))

    def task_ended(self, task_logger: str) -> None:
        """Close the task's file (if it was ever opened) and stop routing to it."""
        if self._tasks is not None:
            self._tasks.unregister(task_logger)

    def stop(self) -> None:
        """Close the run's handlers and task files and drop its loggers from the registry (idempotent)."""
        logger = self._logger
        if logger is None:
            return
        self.end_progress()
        for handler in self._handlers:
            try:
                handler.flush()
            finally:
                logger.removeHandler(handler)
                handler.close()
        self._handlers, self._tasks, self._logger, self.live = [], None, None, None
        _release_loggers(self.logger_name)


def task_log_file(where: Mapping[str, str], step: str, sequence: str) -> str:
    """The log file of a task on the coordinator's host, from what :meth:`RunLogging.where` recorded."""
    name = log_file_name(task_logger_name(where['logger'], step, sequence), where['file_prefix'],
                         where['file_suffix'])
    return os.path.join(where['logdir'], name)


def describe_exception(exc: BaseException) -> tuple[str, str]:
    """(repr(exc), its traceback text without the 'Traceback (most recent call last):' header),
    the two parts the engine logs for a failed task."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    if lines and lines[0].startswith('Traceback (most recent call last)'):
        lines = lines[1:]
    return repr(exc), ''.join(lines).rstrip('\n')
