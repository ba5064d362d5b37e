"""The store: every statement the engine runs, against one schema for SQLite and PostgreSQL.

Runs are rows, never tables: a restart adds a run and keeps every earlier one, and recovery is
a query over one run_id.  The coordinator buffers a round of task changes in a
:class:`RunWriter` and commits them in one transaction *before* it starts anything that
depends on them, which is what makes a store left by a killed coordinator recoverable.

The tables are in :mod:`sequent.eventor.schema` and the words for a database's errors in
:mod:`sequent.eventor.storefaults`; both are imported here, so the names tests and tools take
from this module (``metadata``, the tables, ``SCHEMA_VERSION``) still resolve.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import sqlalchemy as sa
from sqlalchemy import event as sa_event

from .dburl import StoreTarget
from .errors import EventorError
from .schema import (MIGRATIONS, SCHEMA_VERSION, agents, attempts, delays, holdings, iterations, locks, metadata,
                     runs, schema_info, tasks, tries)
from .storefaults import describe_fault, driver_text
from .text import ERROR_LIMIT, ITEM_LIMIT, TRACEBACK_LIMIT, storable


_TASK_COLUMNS = ("status", "skipped", "host", "pid", "started", "ended", "result", "error")
#: Task columns a change sets only when given (RunWriter.task's keywords): omitted, they stay as they are.
_TASK_EXTRAS = ("item", "tries", "retry_at", "owner", "logfile")
_TRY_KEYS = ("run_id", "recovery", "step", "sequence", "try", "started", "ended", "host", "pid", "owner", "error",
             "timed_out")
_ITERATION_KEYS = ("run_id", "recovery", "step", "sequence", "item", "started")

#: Room for the note ``storable`` puts where it cut a text: a text cut once is never cut again.
_CUT_NOTE = 64
#: Characters kept of a try's error (its message and traceback, as the coordinator records them).
_TRY_ERROR_LIMIT = ERROR_LIMIT + TRACEBACK_LIMIT + 2 * _CUT_NOTE


class _Keep:
    """The value of a RunWriter.task keyword that was not given: the column keeps what it holds."""

    def __repr__(self) -> str:
        return "<unchanged>"


KEEP: Any = _Keep()


def _capped_item(text: Optional[str]) -> Optional[str]:
    """An item text made storable; one that :func:`item_text` made is kept as it is."""
    return None if text is None else storable(text, ITEM_LIMIT + _CUT_NOTE)


def _capped_error(text: Optional[str]) -> Optional[str]:
    """A try's error made storable (its start and end kept); None or '' is None."""
    return (storable(text, _TRY_ERROR_LIMIT, keep_ends=True) or None) if text else None


#: Compiled per-round statements by (dialect, paramstyle, schema): compiling costs milliseconds.
_RAW_CACHE: dict[tuple, dict[str, tuple[str, Optional[tuple[str, ...]]]]] = {}


def _insert_ignoring(table: sa.Table, dialect_name: str) -> Any:
    """An INSERT that skips a row whose key exists already (the first write wins), in the dialect's words."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect_name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table).on_conflict_do_nothing()
    if dialect_name in ("mysql", "mariadb"):
        return table.insert().prefix_with("IGNORE")
    return table.insert()  # another database: a duplicate fails its transaction


def _raw_statement(name: str, dialect: Any, schema: Optional[str]) -> tuple[str, Optional[tuple[str, ...]]]:
    """The SQL of one per-round statement and, for a positional driver, its parameters' order.

    ``name`` is a statement (``insert_task``, ``update_task``, ...), for ``update_task`` and
    ``finish_task`` followed by the extra task columns it sets too (``update_task+tries+retry_at``).
    """
    base, *extra = name.split("+")
    if extra and (base not in ("insert_task", "update_task", "finish_task") or not set(extra) <= set(_TASK_EXTRAS)):
        raise EventorError(f"no per-round statement {name!r}")
    names = (tasks, delays, holdings, tries, iterations)
    if schema:
        copy = sa.MetaData(schema=schema)
        table = {t.name: t.to_metadata(copy, schema=schema) for t in names}
    else:
        table = {t.name: t for t in names}
    t, d, h = table[tasks.name], table[delays.name], table[holdings.name]
    task_key = (t.c.run_id == sa.bindparam("k_run_id"), t.c.recovery == sa.bindparam("k_recovery"),
                t.c.step == sa.bindparam("k_step"), t.c.sequence == sa.bindparam("k_sequence"))
    columns = _TASK_COLUMNS + tuple(extra)
    keys: Optional[tuple[str, ...]] = None
    if base == "insert_task":
        stmt, keys = t.insert(), ("run_id", "recovery", "step", "sequence", "created") + columns
    elif base == "update_task":
        stmt = t.update().where(*task_key).values({c: sa.bindparam(c) for c in columns})
    elif base == "finish_task":
        stmt = (t.update().where(*task_key, t.c.status == sa.literal_column("'active'"))
                .values({c: sa.bindparam(c) for c in columns}))
    elif base == "insert_delay":
        stmt, keys = d.insert(), ("run_id", "recovery", "step", "sequence", "seconds", "activated")
    elif base == "insert_hold":
        stmt, keys = h.insert(), ("run_id", "recovery", "step", "sequence", "pool", "count", "acquired")
    elif base == "release_hold":
        stmt = h.update().where(
            h.c.run_id == sa.bindparam("k_run_id"), h.c.recovery == sa.bindparam("k_recovery"),
            h.c.step == sa.bindparam("k_step"), h.c.sequence == sa.bindparam("k_sequence"),
            h.c.pool == sa.bindparam("k_pool")).values(released_count=sa.bindparam("released_count"),
                                                       released=sa.bindparam("released"))
    elif base == "insert_try":
        stmt, keys = _insert_ignoring(table[tries.name], dialect.name), _TRY_KEYS
    elif base == "insert_iteration":
        stmt, keys = _insert_ignoring(table[iterations.name], dialect.name), _ITERATION_KEYS
    else:
        raise EventorError(f"no per-round statement {name!r}")
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys) if keys else None)
    return str(compiled), tuple(compiled.positiontup) if compiled.positional else None


def _sqlite_pragmas(busy_timeout: float, readonly: bool) -> Callable[[Any, Any], None]:
    """WAL lets readers look at a live run; NORMAL sync survives a killed process, cheaply.

    A reader sets neither: WAL is a lasting property of the file, and reading never changes a store.
    """
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        if not readonly:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()
    return on_connect


@dataclass
class TaskRow:
    """A task as stored (the history API and recovery read these)."""

    run_id: str
    recovery: int
    step: str
    sequence: str
    status: str
    skipped: bool
    host: Optional[str]
    pid: Optional[int]
    created: float
    started: Optional[float]
    ended: Optional[float]
    result: Optional[str]
    error: Optional[str]
    owner: Optional[str] = None  # the remote agent that ran it (host:pid:start), if any
    logfile: Optional[str] = None  # its log file on that host, if any
    item: Optional[str] = None  # repr of its innermost repeated container's item, if any
    tries: Optional[int] = None  # the try running now or run last (None: 1)
    retry_at: Optional[float] = None  # when its next try is due, while it waits for one


class Store:
    """A connection to one database holding the runs of any number of flows.

    ``busy_timeout``: seconds to wait for a database another connection has locked.
    ``mode``: the permissions a new SQLite store file is created with.
    ``readonly``: only read an existing store: create nothing, change nothing, refuse a
    database that is not a sequent store.
    """

    def __init__(self, target: StoreTarget, *, busy_timeout: float = 10.0, mode: int = 0o600,
                 readonly: bool = False):
        self.target = target
        self.busy_timeout = float(busy_timeout)
        self.mode = mode
        self.readonly = readonly
        self.empty = False  # read-only and holding no tables at all: it has no runs
        self.version = SCHEMA_VERSION  # of the store as found (a reader may find an older one)
        self._engine: Optional[sa.Engine] = None
        self._conn: Optional[sa.Connection] = None
        self._columns: dict[str, frozenset[str]] = {}  # a reader's: the columns each table has, as found

    def is_fault(self, exc: BaseException) -> bool:
        """True for an error of the database or its file system (not of the engine's own logic)."""
        if isinstance(exc, sa.exc.SQLAlchemyError):
            return True
        if isinstance(exc, OSError):  # only what a file system says of the store (not, say, a failed fork)
            return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO)
        engine = self._engine
        dbapi = getattr(engine.dialect, "dbapi", None) if engine is not None else None
        if dbapi is not None and isinstance(exc, getattr(dbapi, "Error", ())):
            return True
        return type(exc).__module__.split(".")[0] in ("sqlite3", "psycopg", "psycopg2")

    def fault(self, exc: BaseException, doing: str, advice: str = "") -> EventorError:
        """A SequentError-ready text for a store fault: what failed while doing what, and what to do."""
        what, todo = describe_fault(exc, busy_timeout=self.busy_timeout)
        return EventorError(f"store {self.target.display}: {what} while {doing} ({driver_text(exc)}); "
                            f"{todo}{'; ' + advice if advice else ''}")

    @property
    def is_memory(self) -> bool:
        return self.target.is_memory

    def open(self) -> "Store":
        """Connect, create the tables when missing, and refuse a store of a newer schema."""
        if self._conn is not None:
            return self
        if self._engine is not None:  # reopened (an in-memory store keeps its one connection)
            self._conn = self._engine.connect()
            return self
        kwargs = dict(self.target.engine_kwargs)
        if self.target.is_memory:
            kwargs.setdefault("poolclass", sa.pool.StaticPool)
            kwargs.setdefault("connect_args", {"check_same_thread": False})
        elif self.target.is_sqlite:
            path = sa.engine.make_url(self.target.url).database
            if path and not self.readonly and not path.startswith("file:"):  # a URI: SQLite's own to open
                self._create_file(path)
        elif self.target.url.startswith(("postgresql", "postgres")):
            # a statement waiting for a row lock fails after busy_timeout, as SQLite's does
            options = f"-c lock_timeout={int(self.busy_timeout * 1000)}"
            connect_args = dict(kwargs.get("connect_args") or {})
            connect_args.setdefault("options", options)
            kwargs["connect_args"] = connect_args
        try:
            engine = sa.create_engine(self.target.url, **kwargs)
        except Exception as exc:  # a bad URL or a missing driver
            raise EventorError(f"cannot open store {self.target.display}: {exc}") from exc
        if self.target.is_sqlite and not self.target.is_memory:
            sa_event.listen(engine, "connect", _sqlite_pragmas(self.busy_timeout, self.readonly))
        if self.target.schema:
            engine = engine.execution_options(schema_translate_map={None: self.target.schema})
        try:
            conn = engine.connect()
            if self.readonly:
                self._check_readable(conn)
            else:
                if self.target.schema:
                    conn.execute(sa.schema.CreateSchema(self.target.schema, if_not_exists=True))
                    conn.commit()
                self._check_schema(conn)
        except EventorError:
            engine.dispose()
            raise
        except Exception as exc:
            engine.dispose()
            raise self.fault(exc, "opening it") from exc
        self._engine, self._conn = engine, conn
        self._prepare_raw()
        return self

    def _create_file(self, path: str) -> None:
        """Create a missing SQLite store file (and folder) with the configured permissions."""
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, self.mode)
        except FileExistsError:
            return
        except OSError as exc:
            raise self.fault(exc, "creating its file") from exc
        os.close(fd)  # SQLite gives its -wal and -shm files the database file's permissions

    def _check_readable(self, conn: sa.Connection) -> None:
        """For a reader: the database must already be a sequent store this version understands."""
        try:
            row = conn.execute(sa.select(schema_info.c.value).where(schema_info.c.key == "version")).first()
        except sa.exc.DBAPIError as exc:
            conn.rollback()
            what, _ = describe_fault(exc, busy_timeout=self.busy_timeout)
            if not what.startswith("the store's database failed"):
                raise self.fault(exc, "reading it") from exc
            try:
                tables = sa.inspect(conn).get_table_names(schema=self.target.schema)
            finally:
                conn.rollback()
            if tables:  # no sequent tables, but others: someone else's database
                raise EventorError(f"{self.target.display} is not a sequent store (it has no sequent tables)") \
                    from None
            self.empty = True  # a store whose first run died before making its tables: no runs yet
            return
        conn.rollback()
        if row is None:  # the tables of a store whose first run died while making them: no runs yet
            self.empty = True
            return
        if int(row[0]) > SCHEMA_VERSION:
            raise EventorError(
                f"store {self.target.display} was written by a newer sequent (schema version {row[0]}); "
                f"this one understands versions up to {SCHEMA_VERSION}: upgrade sequent to read it")
        self.version = int(row[0])

    @contextlib.contextmanager
    def _tx(self) -> Any:
        """One transaction on the store's connection: committed whole, or rolled back whole."""
        conn = self.conn
        try:
            yield conn
            conn.commit()
        except BaseException:
            try:
                conn.rollback()
            except Exception:  # the connection itself is gone; nothing was committed
                pass
            raise

    def connect(self) -> sa.Connection:
        """A second connection to the same database (for a thread of its own, such as the heartbeat)."""
        if self._engine is None:
            raise EventorError("the store is not open")
        return self._engine.connect()

    def _prepare_raw(self) -> None:
        """Compile the per-round statements once for this database's driver.

        A round's writes go straight to the driver's ``executemany``: the same SQL that
        SQLAlchemy would send, without its per-execution work, which otherwise costs more
        than the database itself on the coordinator's hot path.  The statements that also set
        a task's item, tries or retry_at are compiled when first needed (see :func:`_raw_statement`).
        """
        dialect = self._engine.dialect
        cache_key = (dialect.name, dialect.paramstyle, self.target.schema)
        self._raw: dict[str, tuple[str, Optional[tuple[str, ...]]]] = _RAW_CACHE.setdefault(cache_key, {})
        if "insert_task" in self._raw:
            return
        for name in ("insert_task", "update_task", "finish_task", "insert_delay", "insert_hold", "release_hold",
                     "insert_try", "insert_iteration"):
            self._raw[name] = _raw_statement(name, dialect, self.target.schema)

    def write_raw(self, batches: list[tuple[str, list[dict]]]) -> None:
        """Run each (statement name, rows) with the driver's executemany, then commit, as one transaction."""
        dbapi = self.conn.connection.dbapi_connection
        cursor = dbapi.cursor()
        try:
            for name, rows in batches:
                raw = self._raw.get(name)
                if raw is None:  # a task change that sets item, tries or retry_at too: compiled once
                    raw = self._raw[name] = _raw_statement(name, self._engine.dialect, self.target.schema)
                sql, order = raw
                cursor.executemany(sql, [tuple(row[k] for k in order) for row in rows] if order else rows)
            dbapi.commit()
        except BaseException:
            dbapi.rollback()
            raise
        finally:
            cursor.close()

    def _check_schema(self, conn: sa.Connection) -> None:
        try:  # the usual case, one query: a store of this very version
            row = conn.execute(sa.select(schema_info.c.value).where(schema_info.c.key == "version")).first()
        except sa.exc.DBAPIError:
            conn.rollback()
            row = None
        if row is not None and int(row[0]) == SCHEMA_VERSION and self._complete(conn):
            conn.rollback()
            return
        inspector = sa.inspect(conn)
        if inspector.has_table(schema_info.name, schema=self.target.schema):
            row = conn.execute(sa.select(schema_info.c.value).where(schema_info.c.key == "version")).first()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise EventorError(
                    f"store {self.target.display} was written by a newer sequent (schema version {version}); "
                    f"this one understands versions up to {SCHEMA_VERSION}: upgrade sequent to use it")
            if row is not None and version < SCHEMA_VERSION:
                self._migrate(conn, version)
            elif row is not None:  # this version, written before its last tables and columns (never released)
                self._migrate(conn, SCHEMA_VERSION - 1)
        metadata.create_all(conn, checkfirst=True)
        if not conn.execute(sa.select(schema_info.c.value).where(schema_info.c.key == "version")).first():
            conn.execute(schema_info.insert().values(key="version", value=str(SCHEMA_VERSION)))
        conn.commit()

    @staticmethod
    def _complete(conn: sa.Connection) -> bool:
        """Whether a store of this version has the columns and tables that came last (one query)."""
        probe = (sa.select(tasks.c.item, tasks.c.tries, tasks.c.retry_at, tries.c.run_id, iterations.c.run_id)
                 .select_from(tasks.join(tries, sa.true()).join(iterations, sa.true())).where(sa.false()))
        try:
            conn.execute(probe).all()
        except sa.exc.DBAPIError:
            conn.rollback()
            return False
        return True

    def _migrate(self, conn: sa.Connection, version: int) -> None:
        """Bring a store of an older schema version up to this one, keeping every run in it."""
        preparer = conn.dialect.identifier_preparer
        inspector = sa.inspect(conn)
        have: dict[str, set[str]] = {}
        for since, columns in MIGRATIONS:
            if since < version:
                continue
            for table, name in columns:
                if table.name not in have:
                    have[table.name] = {c["name"] for c in inspector.get_columns(table.name, schema=self.target.schema)}
                if name in have[table.name]:  # added by a migration that raced this one
                    continue
                column = table.c[name]
                qualified = (preparer.quote_schema(self.target.schema) + "." if self.target.schema else "") + \
                    preparer.quote(table.name)
                conn.execute(sa.text(f"ALTER TABLE {qualified} ADD COLUMN {preparer.quote(name)} "
                                     f"{column.type.compile(dialect=conn.dialect)}"))
        conn.execute(schema_info.update().where(schema_info.c.key == "version").values(value=str(SCHEMA_VERSION)))

    @property
    def conn(self) -> sa.Connection:
        if self._conn is None:
            raise EventorError("the store is not open")
        return self._conn

    def close(self) -> None:
        """Release the connection; the data stays (also for ':memory:' until the object is gone)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._engine is not None and not self.target.is_memory:
            self._engine.dispose()
            self._engine = None

    def dispose(self) -> None:
        """Close for good, in-memory data included."""
        self.close()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- runs ---------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Optional[sa.Row]:
        return self.conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).first()

    def start_attempt(self, *, run_id: str, flow: str, program: Optional[str], host: str, mode: str,
                      recovery: int, based_on: Optional[int], fingerprint: str, steps: Iterable[Any],
                      graph: Union[str, Mapping[str, Any], None] = None,
                      logging: Optional[Mapping[str, Any]] = None) -> None:
        """Record that an attempt at a run starts (recovery 0 creates the run's row)."""
        now = time.time()
        with self._tx() as conn:
            if recovery == 0:
                conn.execute(runs.insert().values(run_id=run_id, flow=flow, program=program, host=host,
                                                  created=now, updated=now, recovery=0, status="running"))
            else:
                conn.execute(runs.update().where(runs.c.run_id == run_id)
                             .values(recovery=recovery, status="running", updated=now))
            conn.execute(attempts.insert().values(
                run_id=run_id, recovery=recovery, mode=mode, based_on=based_on, host=host, pid=os.getpid(),
                started=now, fingerprint=fingerprint, steps=json.dumps(list(steps)),
                graph=graph if graph is None or isinstance(graph, str) else json.dumps(graph),
                logging=None if logging is None else json.dumps(logging)))

    def end_attempt(self, run_id: str, recovery: int, outcome: str, *, close_run: bool = True) -> None:
        """Record how an attempt ended (success, failure, incomplete, interrupted, error, lost); the run
        takes that status too unless ``close_run`` is False (an attempt that lost the run to another)."""
        now = time.time()
        with self._tx() as conn:
            conn.execute(attempts.update().where(attempts.c.run_id == run_id, attempts.c.recovery == recovery)
                         .values(ended=now, outcome=outcome))
            if close_run:
                conn.execute(runs.update().where(runs.c.run_id == run_id, runs.c.recovery == recovery)
                             .values(status=outcome, updated=now))

    def latest_run(self, flow: str) -> Optional[str]:
        """The run_id of the most recently created run of ``flow``, if any."""
        row = self.conn.execute(sa.select(runs.c.run_id).where(runs.c.flow == flow)
                                .order_by(runs.c.created.desc(), runs.c.run_id.desc()).limit(1)).first()
        return row[0] if row else None

    def list_runs(self, flow: Optional[str] = None) -> list[sa.Row]:
        """Every run (of ``flow`` when given) with its first attempt's start, oldest first."""
        first = (sa.select(attempts.c.run_id, sa.func.min(attempts.c.started).label("started"))
                 .group_by(attempts.c.run_id).subquery())
        last = attempts.alias("last")
        query = (sa.select(runs.c.run_id, runs.c.flow, runs.c.recovery, runs.c.status, runs.c.host,
                           runs.c.program, first.c.started, last.c.ended)
                 .join(first, first.c.run_id == runs.c.run_id)
                 .join(last, sa.and_(last.c.run_id == runs.c.run_id, last.c.recovery == runs.c.recovery)))
        if flow is not None:
            query = query.where(runs.c.flow == flow)
        return list(self.conn.execute(query.order_by(runs.c.created, runs.c.run_id)))

    def attempt(self, run_id: str, recovery: int) -> Optional[sa.Row]:
        return self.conn.execute(sa.select(attempts).where(attempts.c.run_id == run_id,
                                                           attempts.c.recovery == recovery)).first()

    def previous_states(self, run_id: str, upto: int) -> dict[tuple[str, str], tuple[str, int]]:
        """(step, sequence) -> (status, attempt) as last recorded by attempts 0..``upto``."""
        query = (sa.select(tasks.c.step, tasks.c.sequence, tasks.c.status, tasks.c.recovery)
                 .where(tasks.c.run_id == run_id, tasks.c.recovery <= upto)
                 .order_by(tasks.c.recovery, tasks.c.id))
        return {(step, seq): (status, rec) for step, seq, status, rec in self.conn.execute(query)}

    def previous_delays(self, run_id: str, upto: int) -> dict[tuple[str, str], float]:
        """(step, sequence) -> when its delay first started, over attempts 0..``upto``."""
        query = (sa.select(delays.c.step, delays.c.sequence, sa.func.min(delays.c.activated))
                 .where(delays.c.run_id == run_id, delays.c.recovery <= upto)
                 .group_by(delays.c.step, delays.c.sequence))
        return {(step, seq): activated for step, seq, activated in self.conn.execute(query)}

    # -- the run lock ---------------------------------------------------------------------------

    def take_lock(self, run_id: str, host: str, pid: int, token: str,
                  is_stale: "Callable[[sa.Row], bool]") -> Optional[sa.Row]:
        """Become the run's coordinator; returns the live holder's row instead when there is one.

        A holder that is_stale() says is dead is replaced with a compare-and-set on its token,
        so of two processes replacing the same dead holder only one wins.
        """
        conn = self.conn
        now = time.time()
        values = dict(run_id=run_id, host=host, pid=pid, token=token, acquired=now, heartbeat=now)
        try:
            for _ in range(3):
                holder = conn.execute(sa.select(locks).where(locks.c.run_id == run_id)).first()
                if holder is None:
                    try:
                        conn.execute(locks.insert().values(**values))
                        conn.commit()
                        return None
                    except sa.exc.IntegrityError:
                        conn.rollback()
                        continue
                if not is_stale(holder):
                    conn.rollback()
                    return holder
                # the heartbeat too: a holder that beat again since it was judged dead keeps its lock
                done = conn.execute(locks.update().where(locks.c.run_id == run_id, locks.c.token == holder.token,
                                                         locks.c.heartbeat == holder.heartbeat).values(**values))
                conn.commit()
                if done.rowcount == 1:
                    return None
            holder = conn.execute(sa.select(locks).where(locks.c.run_id == run_id)).first()
            conn.rollback()
            return holder
        except BaseException:
            conn.rollback()
            raise

    def lock_holder(self, run_id: str) -> Optional[sa.Row]:
        return self.conn.execute(sa.select(locks).where(locks.c.run_id == run_id)).first()

    @staticmethod
    def beat(conn: sa.Connection, run_id: str, token: str) -> bool:
        """Refresh the lock's heartbeat on ``conn``; False when the lock is no longer ``token``'s."""
        try:
            done = conn.execute(locks.update().where(locks.c.run_id == run_id, locks.c.token == token)
                                .values(heartbeat=time.time()))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return done.rowcount == 1

    def release_lock(self, run_id: str, token: str) -> None:
        with self._tx() as conn:
            conn.execute(locks.delete().where(locks.c.run_id == run_id, locks.c.token == token))

    # -- remote agents ------------------------------------------------------------------------

    def agent_started(self, *, token: str, run_id: str, recovery: int, host: str, hostname: str, pid: int) -> None:
        """An agent on a remote host took up work for an attempt (it beats until it ends)."""
        now = time.time()
        with self._tx() as conn:
            conn.execute(agents.insert().values(token=token, run_id=run_id, recovery=recovery, host=host,
                                                hostname=hostname, pid=pid, started=now, heartbeat=now))

    @staticmethod
    def agent_beat(conn: sa.Connection, token: str) -> None:
        """Refresh an agent's heartbeat on ``conn`` (the agent's own heartbeat connection)."""
        try:
            conn.execute(agents.update().where(agents.c.token == token).values(heartbeat=time.time()))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    def agent_ended(self, token: str) -> None:
        """An agent has recorded all its tasks and exits."""
        with self._tx() as conn:
            conn.execute(agents.update().where(agents.c.token == token).values(ended=time.time()))

    def live_agents(self, run_id: str, stale_after: float) -> list[sa.Row]:
        """The agents of a run still running a task of it: they own an active task, have not ended,
        and beat within ``stale_after`` seconds (an idle or dead agent holds nobody up)."""
        query = (sa.select(agents.c.token, agents.c.host).distinct()
                 .select_from(agents.join(tasks, tasks.c.owner == agents.c.token))
                 .where(agents.c.run_id == run_id, agents.c.ended.is_(None),
                        agents.c.heartbeat >= time.time() - stale_after,
                        tasks.c.run_id == run_id, tasks.c.status == "active"))
        try:
            return list(self.conn.execute(query))
        finally:
            self.conn.rollback()

    def claim_task(self, run_id: str, recovery: int, step: str, sequence: str, *, owner: str, pid: Optional[int],
                   logfile: Optional[str], try_number: int = 1) -> bool:
        """An agent records that it runs try ``try_number`` of an active task (its token, pid and log
        file); False when the task is no longer active (its coordinator gave it up) or another agent
        claimed this try first (a cluster that reran it after a worker died): then it must not run.
        A later try may claim a task that an earlier try's agent owns."""
        if try_number > 1:
            fence = sa.or_(tasks.c.owner.is_(None), sa.func.coalesce(tasks.c.tries, 1) < try_number)
            extra = {"tries": try_number}
        else:
            fence, extra = tasks.c.owner.is_(None), {}
        with self._tx() as conn:
            done = conn.execute(tasks.update().where(
                tasks.c.run_id == run_id, tasks.c.recovery == recovery, tasks.c.step == step,
                tasks.c.sequence == sequence, tasks.c.status == "active", fence)
                .values(owner=owner, pid=pid, logfile=logfile, **extra))
        return done.rowcount == 1

    def record_try(self, run_id: str, recovery: int, step: str, sequence: str, try_number: int, *,
                   started: Optional[float], ended: Optional[float], host: Optional[str], pid: Optional[int],
                   owner: Optional[str], error: Optional[str], timed_out: bool) -> None:
        """Record how one try of a task ended (an agent's direct write); a try recorded already is
        kept as it is (the first write wins)."""
        row = {"run_id": run_id, "recovery": recovery, "step": step, "sequence": sequence, "try": try_number,
               "started": started, "ended": ended, "host": host, "pid": pid, "owner": owner,
               "error": _capped_error(error), "timed_out": bool(timed_out)}
        with self._tx() as conn:
            conn.execute(_insert_ignoring(tries, conn.dialect.name), [row])

    def finish_task(self, run_id: str, recovery: int, step: str, sequence: str, *, status: str, ended: float,
                    pid: Optional[int], host: str, result: Optional[str], error: Optional[str],
                    owner: Optional[str] = None, logfile: Optional[str] = None) -> bool:
        """Record a task's end if it is still active: the first final write wins, a later one is
        discarded (returns False).  An agent gives its ``owner`` token (and the task's ``logfile``):
        it records only the end of a task that it claimed, or that nobody did, and its own name on it."""
        extra = {"owner": owner, "logfile": logfile} if owner else {}
        with self._tx() as conn:
            done = conn.execute(tasks.update().where(
                tasks.c.run_id == run_id, tasks.c.recovery == recovery, tasks.c.step == step,
                tasks.c.sequence == sequence, tasks.c.status == "active",
                *((sa.or_(tasks.c.owner.is_(None), tasks.c.owner == owner),) if owner else ())).values(
                    status=status, ended=ended, pid=pid, host=host, result=result, error=error, **extra))
        return done.rowcount == 1

    # -- tasks --------------------------------------------------------------------------------

    def columns(self, table: sa.Table) -> frozenset[str]:
        """The columns ``table`` has in this store (none when it has no such table).

        A store opened to write has them all (it was brought up to date); a reader looks, once per
        table: an older store lacks what came later, and reads as if those were empty."""
        if not self.readonly:
            return frozenset(table.c.keys())
        found = self._columns.get(table.name)
        if found is None:
            inspector = sa.inspect(self.conn)
            found = frozenset(c["name"] for c in inspector.get_columns(table.name, schema=self.target.schema)) \
                if inspector.has_table(table.name, schema=self.target.schema) else frozenset()
            self.conn.rollback()
            self._columns[table.name] = found
        return found

    def task_rows(self, run_id: str, recovery: Optional[int] = None) -> list[TaskRow]:
        """The tasks of a run (of one attempt when ``recovery`` is given), in creation order."""
        have = self.columns(tasks)
        names = [n for n in TaskRow.__dataclass_fields__ if n in have]
        query = sa.select(*[tasks.c[name] for name in names]).where(tasks.c.run_id == run_id)
        if recovery is not None:
            query = query.where(tasks.c.recovery == recovery)
        return [TaskRow(**dict(zip(names, row))) for row in self.conn.execute(query.order_by(tasks.c.id))]

    def try_rows(self, run_id: str) -> list[sa.Row]:
        """The recorded tries of a run's tasks, by attempt and start (none in an older store)."""
        if "timed_out" not in self.columns(tries):
            return []
        query = (sa.select(tries).where(tries.c.run_id == run_id)
                 .order_by(tries.c.recovery, tries.c.started, tries.c.step, tries.c.sequence, tries.c["try"]))
        return list(self.conn.execute(query))

    def iteration_rows(self, run_id: str) -> list[sa.Row]:
        """The recorded iterations of a run's repeated containers, by attempt and start (none in an older store)."""
        if "item" not in self.columns(iterations):
            return []
        query = (sa.select(iterations).where(iterations.c.run_id == run_id)
                 .order_by(iterations.c.recovery, iterations.c.started, iterations.c.step, iterations.c.sequence))
        return list(self.conn.execute(query))

    def previous_retries(self, run_id: str, upto: int) -> dict[tuple[str, str], tuple[int, float]]:
        """(step, sequence) -> (tries, retry_at) of the tasks that were waiting for their next try when
        attempts 0..``upto`` last recorded them: the latest row of the task is active, with a retry_at."""
        if "retry_at" not in self.columns(tasks):
            return {}
        later = tasks.alias("later")
        newer = (sa.select(later.c.id).where(later.c.run_id == tasks.c.run_id, later.c.step == tasks.c.step,
                                             later.c.sequence == tasks.c.sequence,
                                             later.c.recovery > tasks.c.recovery, later.c.recovery <= upto))
        query = (sa.select(tasks.c.step, tasks.c.sequence, tasks.c.tries, tasks.c.retry_at)
                 .where(tasks.c.run_id == run_id, tasks.c.recovery <= upto, tasks.c.status == "active",
                        tasks.c.retry_at.is_not(None), ~newer.exists()))
        return {(step, seq): (tries_ or 1, retry_at) for step, seq, tries_, retry_at in self.conn.execute(query)}

    def previous_items(self, run_id: str, upto: int) -> dict[tuple[str, str], Optional[str]]:
        """(container, sequence) -> the repr of the iteration's item, as the latest of attempts
        0..``upto`` that recorded the iteration recorded it."""
        if "item" not in self.columns(iterations):
            return {}
        query = (sa.select(iterations.c.step, iterations.c.sequence, iterations.c.item)
                 .where(iterations.c.run_id == run_id, iterations.c.recovery <= upto)
                 .order_by(iterations.c.recovery))
        return {(step, seq): item for step, seq, item in self.conn.execute(query)}

    def writer(self, run_id: str, recovery: int, host: str) -> "RunWriter":
        return RunWriter(self, run_id, recovery, host)


class RunWriter:
    """Buffers one attempt's task, try, iteration and delay changes; :meth:`commit` writes them in one transaction."""

    def __init__(self, store: Store, run_id: str, recovery: int, host: str):
        self.store = store
        self.run_id = run_id
        self.recovery = recovery
        self.host = host
        self._inserts: dict[tuple[str, str], dict] = {}
        self._updates: dict[tuple[str, str], dict] = {}
        self._finals: dict[tuple[str, str], dict] = {}  # fenced: only while the row is active
        self._extras = False  # whether a buffered task change sets item, tries or retry_at
        self._delays: list[dict] = []
        self._holds: list[dict] = []
        self._unholds: list[dict] = []
        self._tries: dict[tuple[str, str, int], dict] = {}
        self._iterations: dict[tuple[str, str], dict] = {}

    def task(self, step: str, sequence: str, status: str, *, created: float, started: Optional[float] = None,
             ended: Optional[float] = None, pid: Optional[int] = None, result: Optional[str] = None,
             error: Optional[str] = None, skipped: bool = False, host: Optional[str] = None, new: bool,
             fenced: bool = False, item: Optional[str] = KEEP, tries: Optional[int] = KEEP,
             retry_at: Optional[float] = KEEP, owner: Optional[str] = KEEP,
             logfile: Optional[str] = KEEP) -> None:
        """Record a task's state; ``new`` says whether its row exists yet (merged when not committed);
        ``host`` is where it ran (None: the coordinator's host).  A ``fenced`` change applies only
        while the row is still active: the final write of a remote task, whose agent may have
        recorded its end first (the first final write wins).  ``item`` (the text of
        :func:`item_text`), ``tries``, ``retry_at``, ``owner`` (the agent that ran a remote task) and
        ``logfile`` (its log file there) are set only when given (None clears them)."""
        values = {"status": status, "skipped": skipped, "host": host or self.host, "pid": pid, "started": started,
                  "ended": ended, "result": result, "error": error}
        if item is not KEEP or tries is not KEEP or retry_at is not KEEP or owner is not KEEP or logfile is not KEEP:
            self._extras = True
            if owner is not KEEP:
                values["owner"] = owner
            if logfile is not KEEP:
                values["logfile"] = logfile
            if item is not KEEP:
                values["item"] = _capped_item(item)
            if tries is not KEEP:
                values["tries"] = tries
            if retry_at is not KEEP:
                values["retry_at"] = retry_at
        key = (step, sequence)
        pending = self._inserts.get(key)
        if pending is not None:
            pending.update(values)
        elif new:
            values.update(run_id=self.run_id, recovery=self.recovery, step=step, sequence=sequence, created=created)
            self._inserts[key] = values
        else:
            values.update(k_run_id=self.run_id, k_recovery=self.recovery, k_step=step, k_sequence=sequence)
            buffer = self._finals if fenced else self._updates
            if self._extras:  # a change not yet written gave extras this one does not: they still apply
                earlier = buffer.get(key)
                if earlier is not None:
                    for name in _TASK_EXTRAS:
                        if name in earlier and name not in values:
                            values[name] = earlier[name]
            buffer[key] = values

    def try_ended(self, step: str, sequence: str, try_number: int, *, started: Optional[float],
                  ended: Optional[float], host: Optional[str], pid: Optional[int], error: Optional[str],
                  timed_out: bool, owner: Optional[str] = None) -> None:
        """Record how try ``try_number`` of a task ended (``host`` None: the coordinator's); a try
        recorded already, in this round or before, is kept as it is."""
        self._tries.setdefault((step, sequence, try_number), {
            "run_id": self.run_id, "recovery": self.recovery, "step": step, "sequence": sequence,
            "try": try_number, "started": started, "ended": ended, "host": host or self.host, "pid": pid,
            "owner": owner, "error": _capped_error(error), "timed_out": bool(timed_out)})

    def iteration(self, container: str, sequence: str, item: Optional[str], started: Optional[float]) -> None:
        """Record an iteration of a repeated container: its own sequence (``1.2``) and its item's text
        (:func:`item_text`); an iteration recorded already is kept as it is."""
        self._iterations.setdefault((container, sequence), {
            "run_id": self.run_id, "recovery": self.recovery, "step": container, "sequence": sequence,
            "item": _capped_item(item), "started": started})

    def delay(self, step: str, sequence: str, seconds: float, activated: float) -> None:
        self._delays.append({"run_id": self.run_id, "recovery": self.recovery, "step": step,
                             "sequence": sequence, "seconds": seconds, "activated": activated})

    def hold(self, step: str, sequence: str, pool: str, count: int, when: float) -> None:
        self._holds.append({"run_id": self.run_id, "recovery": self.recovery, "step": step, "sequence": sequence,
                            "pool": pool, "count": count, "acquired": when})

    def unhold(self, step: str, sequence: str, pool: str, count: int, when: float) -> None:
        self._unholds.append({"k_run_id": self.run_id, "k_recovery": self.recovery, "k_step": step,
                              "k_sequence": sequence, "k_pool": pool, "released_count": count, "released": when})

    @property
    def dirty(self) -> bool:
        return bool(self._inserts or self._updates or self._finals or self._delays or self._holds or self._unholds
                    or self._tries or self._iterations)

    def commit(self) -> None:
        """Write everything buffered in one transaction (inserts before updates)."""
        if not self.dirty:
            return
        batches = [(name, rows) for name, rows in (
            ("insert_task", list(self._inserts.values())), ("update_task", list(self._updates.values())),
            ("finish_task", list(self._finals.values())),
            ("insert_delay", self._delays), ("insert_hold", self._holds), ("release_hold", self._unholds))
            if rows]
        if self._extras:
            batches = _with_extras(batches)
        if self._tries:
            batches.append(("insert_try", list(self._tries.values())))
        if self._iterations:
            batches.append(("insert_iteration", list(self._iterations.values())))
        self.store.write_raw(batches)
        self._inserts.clear()
        self._updates.clear()
        self._finals.clear()
        self._extras = False
        self._delays, self._holds, self._unholds = [], [], []
        if self._tries:
            self._tries = {}
        if self._iterations:
            self._iterations = {}


def _with_extras(batches: list[tuple[str, list[dict]]]) -> list[tuple[str, list[dict]]]:
    """A round's batches with the task changes that set item, tries or retry_at sent by the statements
    that set them: new rows all by one (an omitted value of a new row is NULL, so the order of
    creation is kept), changes by which of them they set (an omitted one is left as it is)."""
    out: list[tuple[str, list[dict]]] = []
    for name, rows in batches:
        if name == "insert_task":
            if any(extra in row for row in rows for extra in _TASK_EXTRAS):
                for row in rows:
                    for extra in _TASK_EXTRAS:
                        row.setdefault(extra, None)
                name = "insert_task+" + "+".join(_TASK_EXTRAS)
            out.append((name, rows))
        elif name in ("update_task", "finish_task"):
            groups: dict[tuple[str, ...], list[dict]] = {}
            for row in rows:
                groups.setdefault(tuple(extra for extra in _TASK_EXTRAS if extra in row), []).append(row)
            out.extend(("+".join((name, *extras)), group) for extras, group in groups.items())
        else:
            out.append((name, rows))
    return out
