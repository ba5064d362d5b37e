"""Shared fixtures: a real PostgreSQL for the store tests, and a ``store`` over both backends.

``postgres_url`` is the URL of a PostgreSQL cluster for the whole session: the one CI started
(``SEQUENT_TEST_POSTGRES_URL``), else one started here from the local server binaries
(tests/pgserver.py), else the tests that need it skip with a ``[required]`` reason, which
.ci/run turns into a failure.  Each test that uses it gets a database of its own, dropped
afterwards, so tests never see each other's runs.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers: pgserver, guard, ...

import pgserver  # noqa: E402

ENV_URL = "SEQUENT_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")
SESSION_PID = os.getpid()  # the test session's process; a fork of it must never run tests
FORK_ESCAPED = 70  # exit status of a forked child caught running the session


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A child forked by a run (a launcher, a task) that returns into pytest instead of exiting
    would run the rest of the session a second time, in parallel: stop it at once."""
    if os.getpid() != SESSION_PID:
        os.write(2, f"\nconftest: process {os.getpid()}, forked from the test session {SESSION_PID}, "
                    f"returned into pytest and was about to run {item.nodeid}: it exits "
                    f"{FORK_ESCAPED}\n".encode())
        os._exit(FORK_ESCAPED)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL (SQLAlchemy form) whose role may create databases."""
    url = os.environ.get(ENV_URL)
    if url:
        yield url
        return
    why = pgserver.available()
    if why is not None:
        pytest.skip(f"[required] PostgreSQL: set {ENV_URL} or install the server ({why})")
    directory = tempfile.mkdtemp(prefix="sequent-test-pg-")  # under /tmp: the postgres user reaches it
    try:
        try:
            url = pgserver.start(directory)
        except pgserver.PgServerError as exc:
            pytest.fail(f"could not start a test PostgreSQL cluster: {exc}")
        yield url
    finally:
        if os.getpid() == SESSION_PID:  # never from a fork of the session
            pgserver.stop(directory)
            shutil.rmtree(directory, ignore_errors=True)


def _admin_engine(url: str) -> Any:
    import sqlalchemy as sa

    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def drop_database(url: str, name: str) -> None:
    """Drop database ``name`` even while killed coordinators' connections linger in it."""
    import sqlalchemy as sa

    engine = _admin_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """The URL of a fresh, empty database of its own for one test."""
    import sqlalchemy as sa

    name = f"sequent_t_{uuid.uuid4().hex[:12]}"
    engine = _admin_engine(postgres_url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    try:
        yield sa.engine.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        if os.getpid() == SESSION_PID:
            drop_database(postgres_url, name)


@pytest.fixture(params=["pidfd", "sigchld"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a launcher test with pidfds and again with the SIGCHLD-wakeup fallback."""
    from sequent.eventor import launcher

    if request.param == "pidfd" and not hasattr(os, "pidfd_open"):
        pytest.skip("os.pidfd_open not available")
    monkeypatch.setattr(launcher, "_USE_PIDFD", request.param == "pidfd")
    return request.param


@dataclass
class StoreUnderTest:
    """A store for one test: what to pass as ``store=`` (a SQLite path or a PostgreSQL URL)."""

    backend: str  # sqlite or postgresql
    store: str

    def __str__(self) -> str:
        return self.store


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreUnderTest:
    """The same test against an SQLite file and a real PostgreSQL database, each of its own."""
    if request.param == "sqlite":
        return StoreUnderTest("sqlite", str(tmp_path / "store.db"))
    return StoreUnderTest("postgresql", request.getfixturevalue("postgres_database"))
