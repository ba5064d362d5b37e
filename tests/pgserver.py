"""A throwaway PostgreSQL cluster for the tests, CI and benchmarks/faults.py.

::

    python tests/pgserver.py start DIR     # prints the cluster's SQLAlchemy URL
    python tests/pgserver.py url DIR       # prints it again
    python tests/pgserver.py restart DIR   # fast restart: every open connection is cut
    python tests/pgserver.py stop DIR      # stops it (DIR is left for the caller to remove)

The cluster lives in DIR (``data/``, ``sock/``, ``postgres.log``, ``url``) and listens on
127.0.0.1 on a port free when it starts, with its own unix socket directory, so it never meets
Debian's own cluster or another test run.  It is tuned for throwaway data (no fsync).  initdb
and pg_ctl refuse to run as root: as root they run as the ``postgres`` user, which must be able
to traverse every parent of DIR (so not under /root).  Only the standard library is used (and
tests/proctree.py beside it), so .ci/run can call it before the virtualenv exists.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

import proctree  # tests/proctree.py: this script's own folder is on sys.path

USER = "sequent"
PASSWORD = "sequent"
DATABASE = "sequent"
START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections
STOP_TIMEOUT = 30

#: Settings for a cluster whose data may be lost: no durability, little memory, quick stops.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "'32MB'",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "autovacuum": "off",
}


class PgServerError(RuntimeError):
    """The cluster could not be made, started or stopped; the message says why."""


def find_bindir() -> Optional[str]:
    """The directory of initdb/pg_ctl: $SEQUENT_PG_BIN, the newest /usr/lib/postgresql/*/bin, or PATH."""
    candidates = [os.environ.get("SEQUENT_PG_BIN", "")]

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    which = shutil.which("initdb")
    candidates.append(os.path.dirname(which) if which else "")
    for directory in candidates:
        if directory and all(os.access(os.path.join(directory, tool), os.X_OK)
                             for tool in ("initdb", "pg_ctl", "postgres", "psql")):
            return directory
    return None


def _run_as() -> list[str]:
    """The command prefix that runs the server tools: as root, through runuser as 'postgres'."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PgServerError("running as root but there is no 'postgres' user to run the server as") from None
    return ["runuser", "-u", "postgres", "--"]


def available() -> Optional[str]:
    """None when a cluster can be started here, else the reason it cannot."""
    if find_bindir() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl, postgres, psql) found"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root without runuser"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tool(name: str) -> str:
    bindir = find_bindir()
    if bindir is None:
        raise PgServerError(available() or "no PostgreSQL binaries")
    return os.path.join(bindir, name)


def _run(cmd: Sequence[str], what: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a server tool (as 'postgres' when root); raise PgServerError with its output on failure."""
    try:
        done = subprocess.run(_run_as() + list(cmd), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout, cwd="/")
    except subprocess.TimeoutExpired:
        raise PgServerError(f"{what}: timed out after {timeout:.0f} s") from None
    if done.returncode != 0:
        raise PgServerError(f"{what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")
    return done


def _log_tail(directory: Path, lines: int = 20) -> str:
    try:
        text = (directory / "postgres.log").read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


def _own(path: Path) -> None:
    """Give a directory to the server's user (as root), so that it may write there."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _check_traversable(directory: Path) -> None:
    """As root: the 'postgres' user must reach DIR, or initdb fails with a confusing message."""
    if os.geteuid() != 0:
        return
    probe = subprocess.run(_run_as() + ["test", "-x", str(directory)], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=30)
    if probe.returncode != 0:
        raise PgServerError(f"the postgres user cannot reach {directory}: every parent directory must be "
                            f"traversable by it (use a directory under /tmp, not under /root)")


def url_of(directory: os.PathLike | str) -> str:
    """The URL a started cluster in ``directory`` was given."""
    path = Path(directory) / "url"
    try:
        return path.read_text().strip()
    except OSError:
        raise PgServerError(f"no cluster was started in {directory}") from None


def _psql(directory: Path, port: int, sql: str, database: str = "postgres") -> None:
    _run([_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(directory / "sock"), "-p", str(port),
          "-U", "postgres", "-d", database, "-c", sql], f"psql {sql[:40]!r}")


def _pg_ctl_start(directory: Path) -> None:
    _run([_tool("pg_ctl"), "start", "-w", "-t", str(START_TIMEOUT), "-D", str(directory / "data"),
          "-l", str(directory / "postgres.log")], "pg_ctl start", timeout=START_TIMEOUT + 30)


def start(directory: os.PathLike | str, port: Optional[int] = None) -> str:
    """Make a cluster in ``directory`` (created if missing), start it and return its URL.

    The URL is ``postgresql+psycopg://sequent:sequent@127.0.0.1:PORT/sequent``: the role may
    create databases (tests make one each).  A port taken between choosing and binding is
    retried with another one.
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    _check_traversable(directory)
    data, sock = directory / "data", directory / "sock"
    if (data / "PG_VERSION").exists():
        raise PgServerError(f"{directory} already holds a cluster; stop it and use a fresh directory")
    for sub in (data, sock):
        sub.mkdir(exist_ok=True)
        os.chmod(sub, 0o700)
        _own(sub)
    log = directory / "postgres.log"
    log.touch()
    _own(log)
    _run([_tool("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--auth-host=scram-sha-256",
          "-E", "UTF8", "--locale=C", "--no-instructions"], "initdb")
    attempts = 1 if port else 3
    for attempt in range(attempts):
        chosen = port or free_port()
        settings = dict(SETTINGS, port=str(chosen), unix_socket_directories=f"'{sock}'")
        conf = "".join(f"{key} = {value}\n" for key, value in settings.items())
        auto = data / "postgresql.auto.conf"  # read last: these override postgresql.conf
        with open(auto, "w") as f:
            f.write("# written by tests/pgserver.py\n" + conf)
        _own(auto)
        try:
            _pg_ctl_start(directory)
            break
        except PgServerError as exc:
            if attempt + 1 == attempts:
                raise PgServerError(f"{exc}\nserver log:\n{_log_tail(directory)}") from None
    _psql(directory, chosen, f"CREATE ROLE {USER} LOGIN CREATEDB PASSWORD '{PASSWORD}'")
    _psql(directory, chosen, f"CREATE DATABASE {DATABASE} OWNER {USER}")
    url = f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{chosen}/{DATABASE}"
    (directory / "url").write_text(url + "\n")
    return url


def _postmaster_pid(directory: Path) -> Optional[int]:
    try:
        return int((directory / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def running(directory: os.PathLike | str) -> bool:
    """True while the cluster in ``directory`` has a live postmaster."""
    pid = _postmaster_pid(Path(directory).resolve())
    return pid is not None and proctree.alive(pid)


def restart(directory: os.PathLike | str, mode: str = "fast") -> None:
    """Restart the cluster (``fast``: open transactions are rolled back, connections are cut)."""
    directory = Path(directory).resolve()
    _run([_tool("pg_ctl"), "restart", "-w", "-t", str(START_TIMEOUT), "-m", mode, "-D", str(directory / "data"),
          "-l", str(directory / "postgres.log")], "pg_ctl restart", timeout=START_TIMEOUT + 30)


def stop(directory: os.PathLike | str) -> None:
    """Stop the cluster: a fast shutdown, else an immediate one, else SIGKILL of the postmaster."""
    directory = Path(directory).resolve()
    if not (directory / "data" / "PG_VERSION").exists():
        return
    pid = _postmaster_pid(directory)
    if pid is None or not proctree.alive(pid):
        return
    for mode in ("fast", "immediate"):
        try:
            _run([_tool("pg_ctl"), "stop", "-w", "-t", str(STOP_TIMEOUT), "-m", mode, "-D", str(directory / "data")],
                 f"pg_ctl stop -m {mode}", timeout=STOP_TIMEOUT + 10)
            return
        except PgServerError:
            if not proctree.alive(pid):
                return
    proctree.send_signal([pid], signal.SIGKILL)  # the backends end with their postmaster
    proctree.wait_gone(lambda: {pid} if proctree.alive(pid) else set(), 10)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in ("start", "stop", "restart", "url"):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    command, directory = args
    try:
        if command == "start":
            print(start(directory), flush=True)
        elif command == "url":
            print(url_of(directory))
        elif command == "restart":
            restart(directory)
        else:
            stop(directory)
    except PgServerError as exc:
        print(f"pgserver {command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
