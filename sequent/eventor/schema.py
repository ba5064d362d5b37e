"""The store's tables: one schema for SQLite and PostgreSQL, and the version written with it.

Runs are rows, never tables: a restart adds a run and keeps every earlier one, and recovery is
a query over one run_id.  :mod:`sequent.eventor.store` runs every statement against these tables.
"""

from __future__ import annotations

import sqlalchemy as sa

from .text import SEQUENCE_LIMIT

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "agents", "attempts", "delays", "holdings", "iterations", "locks",
           "metadata", "runs", "schema_info", "tasks", "tries"]

#: Bumped whenever the tables change; a store written by a newer version is refused, an older one
#: is brought up to date by MIGRATIONS (version 2: remote hosts, the tasks' owner and log file, agents;
#: version 3: the flow's graph and where its logs are, with each attempt; each task's item and tries,
#: and the tables of tries and iterations).
SCHEMA_VERSION = 3

metadata = sa.MetaData()

schema_info = sa.Table(
    "sequent_schema", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)

#: One row per run_id: what ran and how it ended last.
runs = sa.Table(
    "sequent_runs", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("flow", sa.String(255), nullable=False),
    sa.Column("program", sa.Text),
    sa.Column("host", sa.String(255)),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
    sa.Column("recovery", sa.Integer, nullable=False),  # the latest attempt's number
    sa.Column("status", sa.String(16), nullable=False),  # running, success, failure, incomplete
)

#: One row per attempt at a run: the first (recovery 0) and every recovery after it.
attempts = sa.Table(
    "sequent_attempts", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("recovery", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("based_on", sa.Integer),  # the attempt a recovery compared against
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("ended", sa.Float),
    sa.Column("outcome", sa.String(16)),
    sa.Column("fingerprint", sa.String(64)),
    sa.Column("steps", sa.Text),  # JSON list of [step, container, kind]: the flow's shape
    sa.Column("graph", sa.Text),  # JSON: the flow's steps and requires as its builder described them
    sa.Column("logging", sa.Text),  # JSON: {"logger", "run_log", "logdir", "file_prefix", "file_suffix"}
)

#: Who coordinates a run now: one row while an attempt runs, so a second one is refused.
locks = sa.Table(
    "sequent_locks", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("token", sa.String(255), nullable=False),  # host, pids and start times (see runlock)
    sa.Column("acquired", sa.Float, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
)

#: One row per task: a step at a sequence, in one attempt.
tasks = sa.Table(
    "sequent_tasks", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("recovery", sa.Integer, nullable=False),
    sa.Column("step", sa.String(255), nullable=False),
    sa.Column("sequence", sa.String(SEQUENCE_LIMIT), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("skipped", sa.Boolean, nullable=False, default=False),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("started", sa.Float),
    sa.Column("ended", sa.Float),
    sa.Column("result", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("owner", sa.String(255)),  # the agent running it on a remote host (its token), if any
    sa.Column("logfile", sa.Text),  # its log file on that host
    sa.Column("item", sa.Text),  # repr of the item of the innermost repeated container around it (cut)
    sa.Column("tries", sa.Integer),  # the try running now or run last; NULL means 1
    sa.Column("retry_at", sa.Float),  # when its next try is due, while it waits for it; NULL otherwise
    sa.UniqueConstraint("run_id", "recovery", "step", "sequence", name="sequent_tasks_key"),
)

#: One row per remote agent of an attempt: a recovery waits while one of the run still beats.
agents = sa.Table(
    "sequent_agents", metadata,
    sa.Column("token", sa.String(255), primary_key=True),  # host:pid:start of the agent process
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("recovery", sa.Integer, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),  # the name the flow gave the host
    sa.Column("hostname", sa.String(255)),  # what the host calls itself
    sa.Column("pid", sa.Integer),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
    sa.Column("ended", sa.Float),
)

#: What brings a store of an older version to the next one: (version it applies to, the columns
#: it adds as (table, column)); new tables are created by create_all.
MIGRATIONS: tuple[tuple[int, tuple[tuple[sa.Table, str], ...]], ...] = (
    (1, ((tasks, "owner"), (tasks, "logfile"))),
    (2, ((attempts, "graph"), (attempts, "logging"), (tasks, "item"), (tasks, "tries"), (tasks, "retry_at"))),
)

#: One row per delay started: recovery waits only what remains of it.
delays = sa.Table(
    "sequent_delays", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("recovery", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("step", sa.String(255), primary_key=True),
    sa.Column("sequence", sa.String(SEQUENCE_LIMIT), primary_key=True),
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("activated", sa.Float, nullable=False),
    sa.Column("fired", sa.Float),
)

#: Which task holds how much of which resource pool (released: when it gave it back, if it did).
holdings = sa.Table(
    "sequent_holdings", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("recovery", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("step", sa.String(255), primary_key=True),
    sa.Column("sequence", sa.String(SEQUENCE_LIMIT), primary_key=True),
    sa.Column("pool", sa.String(255), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("acquired", sa.Float, nullable=False),
    sa.Column("released_count", sa.Integer),
    sa.Column("released", sa.Float),
)

#: One row per try of a task that was recorded (a failed try after which another followed, at least):
#: the first write of a try wins, a duplicate is ignored.
tries = sa.Table(
    "sequent_tries", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("recovery", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("step", sa.String(255), primary_key=True),
    sa.Column("sequence", sa.String(SEQUENCE_LIMIT), primary_key=True),
    sa.Column("try", sa.Integer, primary_key=True, autoincrement=False),  # 1, 2, ...
    sa.Column("started", sa.Float),
    sa.Column("ended", sa.Float),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("owner", sa.String(255)),  # the remote agent that ran it (its token), if any
    sa.Column("error", sa.Text),
    sa.Column("timed_out", sa.Boolean),
)

#: One row per iteration of a repeated container: its sequence (``1.2``) and the item it works on.
iterations = sa.Table(
    "sequent_iterations", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("recovery", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("step", sa.String(255), primary_key=True),  # the container
    sa.Column("sequence", sa.String(SEQUENCE_LIMIT), primary_key=True),  # the iteration's own sequence
    sa.Column("item", sa.Text),  # repr of its item (cut)
    sa.Column("started", sa.Float),
)
