"""Shared fixtures: the hang guard, quiet flow configurations, Hypothesis profiles, a real PostgreSQL
for the store tests, and a ``store`` over both backends.

Every test runs under ``no_hang`` (autouse): a SIGALRM guard (tests/guard.py) that fails the test
when it has not ended within DEFAULT_TIMEOUT seconds, or the seconds of its closest
``@pytest.mark.timeout_seconds(n)`` marker (on the test, its class or its module's ``pytestmark``).
A module that defines a fixture of its own named ``no_hang`` replaces this one.

``flow_config(**extra)`` gives a flow configuration that logs to ``tmp_path / 'logs'`` and not to
the console, with ``extra`` on top (a ``LOGGING`` mapping in ``extra`` is merged into those two).

Hypothesis runs under the profile named by SEQUENT_HYPOTHESIS_PROFILE: ``dev`` (the default) caps
every property test at DEV_EXAMPLES examples, ``ci`` (exported by .ci/run) runs each test's full
count.  A property test states its full count as ``min(FULL, settings.default.max_examples)``, so
the profile's ``max_examples`` is a ceiling: CI_EXAMPLES is above every test's full count.

``postgres_url`` is the URL of a PostgreSQL cluster for the whole session: the one CI started
(``SEQUENT_TEST_POSTGRES_URL``), else one started here from the local server binaries
(tests/pgserver.py), else the tests that need it skip with a ``[required]`` reason, which
.ci/run turns into a failure.  Each test that uses it gets a database of its own, dropped
afterwards, so tests never see each other's runs.

``ssh_hosts`` is a set of real sshd "hosts" h1, h2, h3 for the whole session (tests/sshhosts.py):
the one CI started (``SEQUENT_TEST_SSH_DIR``), else one started here (as root, with openssh-server
installed), else the tests that need it skip with a ``[required]`` reason.  Mark such tests
``@pytest.mark.ssh``.

``dask_cluster`` is a real Dask distributed cluster for the whole session (tests/daskcluster.py): a
scheduler and workers w1, w2, w3, each a process of its own, with ``allowed-failures`` 0: the one
CI started (``SEQUENT_TEST_DASK_DIR``), else one started here (with the ``dask`` extra installed),
else the tests that need it skip with a ``[required]`` reason.  Mark such tests
``@pytest.mark.dask``; a test that kills a worker starts it again (``restart_worker``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers: pgserver, guard, ...

import daskcluster  # noqa: E402
import guard  # noqa: E402
import pgserver  # noqa: E402
import sshhosts  # noqa: E402

ENV_URL = "SEQUENT_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")
SESSION_PID = os.getpid()  # the test session's process; a fork of it must never run tests
FORK_ESCAPED = 70  # exit status of a forked child caught running the session
DEFAULT_TIMEOUT = 30  # seconds any test may take, unless marked @pytest.mark.timeout_seconds(n)

HYPOTHESIS_PROFILE_ENV = "SEQUENT_HYPOTHESIS_PROFILE"
DEV_EXAMPLES = 20  # examples per property test while developing: a quick look
CI_EXAMPLES = 1000  # at least every property test's full count (the largest: test_properties' 1000)
settings.register_profile("ci", max_examples=CI_EXAMPLES, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("dev", max_examples=DEV_EXAMPLES, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get(HYPOTHESIS_PROFILE_ENV) or "dev")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "timeout_seconds(n): the test may take n seconds instead of "
                                       f"{DEFAULT_TIMEOUT} before its hang guard (no_hang) fails it")
    config.addinivalue_line("markers", "ssh: the test needs the real sshd hosts of the ssh_hosts fixture")
    config.addinivalue_line("markers", "dask: the test needs the real Dask cluster of the dask_cluster fixture")


def pytest_report_header(config: pytest.Config) -> str:
    return (f"hypothesis profile: {os.environ.get(HYPOTHESIS_PROFILE_ENV) or 'dev'} "
            f"(max_examples {settings.default.max_examples}; set {HYPOTHESIS_PROFILE_ENV})")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A child forked by a run (a launcher, a task) that returns into pytest instead of exiting
    would run the rest of the session a second time, in parallel: stop it at once."""
    if os.getpid() != SESSION_PID:
        os.write(2, f"\nconftest: process {os.getpid()}, forked from the test session {SESSION_PID}, "
                    f"returned into pytest and was about to run {item.nodeid}: it exits "
                    f"{FORK_ESCAPED}\n".encode())
        os._exit(FORK_ESCAPED)


@pytest.fixture(autouse=True)
def no_hang(request: pytest.FixtureRequest) -> Iterator[None]:
    """Turn a hung run into a failing test: SIGALRM interrupts the coordinator's wait."""
    marker = request.node.get_closest_marker("timeout_seconds")
    seconds = DEFAULT_TIMEOUT if marker is None else int(marker.args[0])
    with guard.alarm(seconds):
        yield


@pytest.fixture
def flow_config(tmp_path: Path) -> Callable[..., dict]:
    """``flow_config(**extra)``: ``{'LOGGING': {'logdir': <tmp_path>/logs, 'console': False}, **extra}``,
    a ``LOGGING`` in ``extra`` merged into that one; a new dict on every call."""
    def make(**extra: Any) -> dict:
        logging = {"logdir": str(tmp_path / "logs"), "console": False, **extra.pop("LOGGING", {})}
        return {**extra, "LOGGING": logging}

    return make


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


SSH_ENV_DIR = "SEQUENT_TEST_SSH_DIR"
DASK_ENV_DIR = "SEQUENT_TEST_DASK_DIR"
SERVICE_START_GUARD = 120  # seconds starting a set of services may take (they have deadlines of their own first)


def _service_set(what: str, module: Any, env_var: str, open_set: Callable[[str], Any],
                 not_running: Callable[[Any], list[str]], error: type[Exception], prefix: str) -> Iterator[Any]:
    """A set of test services for the session (the sshd hosts, the Dask cluster): the one CI started
    (``env_var`` names its directory), else one started here by ``module``'s CLI in a process of its
    own, which exits (its daemons are then no children of the test session, whose tests check that
    runs leave it no child processes), with a guard of its own: a session fixture is set up before
    the test's hang guard is armed.  Skipped as [required] where it cannot run."""
    directory = os.environ.get(env_var)
    if directory:
        try:
            found = open_set(directory)
        except error as exc:
            pytest.fail(f"{env_var}={directory}: {exc}")
        stopped = not_running(found)
        if stopped:
            pytest.fail(f"{env_var}={directory}: not running: {', '.join(stopped)}")
        yield found
        return
    why = module.available()
    if why is not None:
        pytest.skip(f"[required] {what}: {why} (or set {env_var})")
    directory = tempfile.mkdtemp(prefix=prefix)  # short: an ssh ControlPath must stay < 108 bytes
    try:
        started = subprocess.run([sys.executable, module.__file__, "start", directory], capture_output=True,
                                 text=True, timeout=SERVICE_START_GUARD)
        if started.returncode != 0:
            pytest.fail(f"could not start the {what}: {started.stderr.strip()}")
        yield open_set(directory)
    finally:
        if os.getpid() == SESSION_PID:  # never from a fork of the session
            module.stop(directory)
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def ssh_hosts() -> Iterator[sshhosts.SshHosts]:
    """Real sshd hosts h1, h2, h3 (``ssh -F ssh_hosts.config h1 ...``) shared by the session.

    Their listeners keep running for the whole session; a test that injects a fault (kill_sessions,
    pause_link) acts on its own sessions only and resumes what it paused."""
    yield from _service_set("real sshd hosts", sshhosts, SSH_ENV_DIR, sshhosts.SshHosts,
                            lambda hosts: [f"sshd of {n}" for n in hosts.names if not hosts.running(n)],
                            sshhosts.SshHostsError, "sequent-test-ssh-")


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[daskcluster.DaskCluster]:
    """A real Dask cluster (scheduler and workers w1, w2, w3; ``dask_cluster.address`` for
    ``distributed.Client``) shared by the session.

    A test that kills a worker (kill_worker) starts it again (restart_worker) before it ends, so
    that the next test finds all three."""
    def not_running(cluster: daskcluster.DaskCluster) -> list[str]:
        stopped = [name for name in cluster.names if not cluster.running(name)]
        return (["scheduler"] if not cluster.scheduler_running() else []) + stopped

    yield from _service_set("dask cluster", daskcluster, DASK_ENV_DIR, daskcluster.DaskCluster, not_running,
                            daskcluster.DaskClusterError, "sequent-test-dask-")
