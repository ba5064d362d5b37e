"""Real OpenSSH "hosts" on one machine, for the distributed tests, CI and by hand::

    python3 tests/sshhosts.py start DIR [ADDRESS ...]   # prints DIR's ssh_config path
    python3 tests/sshhosts.py stop DIR                  # stops everything it started

``start`` runs one sshd per loopback address (h1, h2, h3 on 127.0.0.2, 127.0.0.3, 127.0.0.4 unless
other addresses are given), each on port 22 of its address, or on one free port shared by all of
them when 22 is taken on any.  Each sshd runs in a UTS namespace of its own whose hostname is the
host's name, so a command run over ssh on h2 sees ``socket.gethostname() == "h2"``.  It returns
once every host accepts an ssh connection.  ``stop`` kills, by PID, every listener and every
process of its hosts (connections, sessions, the commands they run, even commands that detached
themselves), and waits until they are gone.

DIR holds everything: ``ssh_config`` (hosts h1.., plus ``h1-badkey`` that reaches h1 with a key
that is not authorized, and ``nohost``, an address and port where nothing listens), the keys
(``client_key`` authorized, ``bad_key`` not, ``host_key``), ``authorized_keys``, one sshd config
and log per host (``hN.conf``, ``hN.log``) and ``state.json`` (addresses, port, listener PIDs).
Use it as ``ssh -F DIR/ssh_config h1 CMD`` or through :class:`SshHosts`.

Why this shape (see /work/shared/INFRA.md): sshd needs root, ``/run/sshd``, an absolute ``-f``
path, ``StrictModes no`` for keys under /tmp, more ``MaxStartups``/``MaxSessions`` than the
defaults for parallel connections, and ``SetEnv SHLVL=1`` so that root's .bashrc stays out of
every command; stopping a listener leaves its sessions running, so everything is stopped by PID.
Only the standard library is used (and tests/proctree.py beside it, which finds and kills the
processes), so .ci/run can call it with the system python3 before the virtualenv exists.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import proctree  # tests/proctree.py: this script's own folder is on sys.path

SSHD = "/usr/sbin/sshd"
ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
PORT = 22  # the port every host tries first
NOHOST_ADDRESS = "127.0.0.9"  # the "unreachable" host: nothing listens on its port
START_TIMEOUT = 30.0  # seconds for every host to accept connections
STOP_TIMEOUT = 10.0  # seconds for every process of a set to be gone after SIGKILL
PORT_ATTEMPTS = 3  # a chosen port taken between choosing and binding is retried with another one
STATE = "state.json"
CLIENT_OPTIONS = (  # for every client alias in ssh_config, after HostName/Port/identity
    ("User", "root"),
    ("IdentitiesOnly", "yes"),
    ("StrictHostKeyChecking", "no"),
    ("UserKnownHostsFile", "/dev/null"),
    ("LogLevel", "ERROR"),
    ("KexAlgorithms", "curve25519-sha256"),  # about 70 ms less per new connection
    ("BatchMode", "yes"),
    ("ConnectTimeout", "10"),
)
SSHD_COMMS = ("sshd", "sshd-session", "sshd-auth")  # the sshd processes (newer OpenSSH splits it)


class SshHostsError(RuntimeError):
    """The hosts could not be started, found or stopped; the message says why."""


# ----------------------------------------------------------------------------------- /proc helpers


def _uts(pid: int) -> Optional[str]:
    """The UTS namespace of a process (``uts:[inode]``), or None when it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/uts")
    except OSError:
        return None


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


def _is_sshd(pid: int) -> bool:
    """An sshd process (listener or connection), not a command it runs: by its comm, or by its
    title (``sshd: root@notty``)."""
    title = (_cmdline(pid) or [""])[0]
    return _comm(pid) in SSHD_COMMS or os.path.basename(title.split(":")[0].split(" ")[0]) in SSHD_COMMS


def _tree(roots: Iterable[int], namespaces: Iterable[Optional[str]]) -> set[int]:
    """Every live process descending from ``roots`` or living in one of the UTS ``namespaces`` (and
    their descendants): hosts' processes, including commands that detached from their session."""
    namespaces = set(namespaces) - {None}
    return proctree.tree(roots, lambda pid, _: bool(namespaces) and _uts(pid) in namespaces)


def _kill_all(collect: Callable[[], set[int]], timeout: float = STOP_TIMEOUT) -> set[int]:
    """SIGKILL what ``collect()`` returns until it returns nothing, and return every PID killed
    (:func:`proctree.kill_all`, swept again every 20 ms: a listener still accepts connections)."""
    return proctree.kill_all(collect, timeout, SshHostsError, settle=0.02)


# ------------------------------------------------------------------------------------------ the hosts


class SshHosts:
    """A running set of hosts, loaded from the directory ``start`` made (its ``state.json``).

    ``config`` is the ssh_config path (``ssh -F config NAME``), ``names`` the host names
    (``["h1", "h2", "h3"]``).  The fault injections act on one host's processes only: its
    listener keeps accepting new connections.
    """

    def __init__(self, directory: os.PathLike | str) -> None:
        self.directory = Path(directory).resolve()
        try:
            self._state = json.loads((self.directory / STATE).read_text())
        except (OSError, ValueError) as exc:
            raise SshHostsError(f"no ssh hosts were started in {self.directory}: {exc}") from None
        self._hosts = {host["name"]: host for host in self._state["hosts"]}
        self.config: str = self._state["config"]
        self.names: list[str] = [host["name"] for host in self._state["hosts"]]
        self.port: int = self._state["port"]
        self.identity: str = self._state["client_key"]  # the authorized private key
        self.bad_identity: str = self._state["bad_key"]  # a private key that is not authorized

    def __repr__(self) -> str:
        return f"SshHosts({str(self.directory)!r}, names={self.names}, port={self.port})"

    def _host(self, name: str) -> dict:
        try:
            return self._hosts[name]
        except KeyError:
            raise SshHostsError(f"no host {name!r} here (hosts: {', '.join(self.names)})") from None

    def address(self, name: str) -> str:
        """The loopback address host ``name`` listens on."""
        return self._host(name)["address"]

    def listener_pid(self, name: str) -> int:
        """The PID of host ``name``'s sshd listener (whether or not it still runs)."""
        return self._host(name)["pid"]

    def running(self, name: str) -> bool:
        """True while host ``name``'s listener runs (the very process start() started)."""
        host = self._host(name)
        return host["pid"] is not None and proctree.alive(host["pid"], host["start_time"])

    def _processes(self, name: str) -> set[int]:
        """The listener and every live process of host ``name``; empty when the listener has ended.

        Processes are found by parentage and by the listener's UTS namespace, which every
        command run there inherits even when it detaches itself (setsid, double fork).  The
        namespace is only trusted while the listener lives: a namespace's id is reused soon
        after it ends."""
        host = self._host(name)
        if not self.running(name) or _uts(host["pid"]) != host["uts"]:
            return set()
        return _tree([host["pid"]], [host["uts"]])

    def session_pids(self, name: str) -> set[int]:
        """Every live process of host ``name`` except its listener: the sshd connection
        processes, the sessions and the commands they run (zombies excluded)."""
        return self._processes(name) - {self.listener_pid(name)}

    def kill_sessions(self, name: str, timeout: float = STOP_TIMEOUT) -> set[int]:
        """SIGKILL every session process of host ``name`` (the host crashes mid-task) and
        return their PIDs once they are all gone; the listener stays."""
        host = self._host(name)
        uts = _uts(host["pid"]) if self.running(name) else None
        if uts != host["uts"]:
            return set()
        listener = host["pid"]
        return _kill_all(lambda: _tree([listener], [uts]) - {listener}, timeout)

    def wait_no_sessions(self, name: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until host ``name`` has no session process left."""
        deadline = time.monotonic() + timeout
        while self.session_pids(name):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def pause_link(self, name: str, include_listener: bool = False) -> set[int]:
        """SIGSTOP host ``name``'s sshd connection processes (not the commands they run): its
        established connections fall silent, as over a dead network link.  With
        ``include_listener`` the listener is stopped too, so new connections hang as well
        (the kernel still completes their TCP handshake).  Returns the PIDs stopped."""
        pids = {pid for pid in self.session_pids(name) if _is_sshd(pid)}
        if include_listener and self.running(name):
            pids.add(self.listener_pid(name))
        proctree.send_signal(pids, signal.SIGSTOP)
        return pids

    def resume_link(self, name: str) -> set[int]:
        """SIGCONT every sshd process of host ``name`` (listener included): undo pause_link."""
        pids = {pid for pid in self._processes(name) if _is_sshd(pid)}
        proctree.send_signal(pids, signal.SIGCONT)
        return pids

    def ssh_command(self, name: str, *argv: str) -> list[str]:
        """The argv of ``ssh -F config -n NAME ARGV...`` (ssh joins ARGV with spaces for the remote
        shell, as always; ``-n``: stdin is not read)."""
        return ["ssh", "-F", self.config, "-n", name, *argv]

    def run(self, name: str, *argv: str, timeout: float = 30.0, input: Optional[str] = None,
            check: bool = False) -> subprocess.CompletedProcess:
        """Run ``ssh -F config NAME ARGV...`` and return its CompletedProcess (text stdout and
        stderr).  ``input`` is sent to the remote command's stdin; without it stdin is empty."""
        cmd = ["ssh", "-F", self.config, name, *argv]
        return subprocess.run(cmd, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=check)


# ----------------------------------------------------------------------------------- start and stop


def available() -> Optional[str]:
    """None when hosts can be started here, else the reason they cannot."""
    if not os.access(SSHD, os.X_OK):
        return f"no {SSHD} (install openssh-server)"
    if os.geteuid() != 0:
        return "not running as root (sshd, unshare and port 22 need it)"
    for tool in ("unshare", "ssh", "ssh-keygen", "ss"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH"
    probe = subprocess.run(["unshare", "--uts", "true"], stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=30)
    if probe.returncode != 0:
        return f"unshare --uts fails here: {probe.stderr.strip()[-300:]}"
    return None


def _bindable(address: str, port: int) -> Optional[int]:
    """The port bound on ``address`` (``port``, or a free one for 0), or None when it is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as sshd does
        try:
            sock.bind((address, port))
        except OSError:
            return None
        return sock.getsockname()[1]


def _choose_port(addresses: Sequence[str], first: Optional[int]) -> int:
    """``first`` (default 22) if free on every address, else a port free on all of them."""
    if first is not None and all(_bindable(address, first) for address in addresses):
        return first
    for _ in range(100):
        port = _bindable(addresses[0], 0)
        if port and all(_bindable(address, port) for address in addresses[1:]):
            return port
    raise SshHostsError(f"found no port free on all of {', '.join(addresses)}")


def _keygen(path: Path, comment: str) -> None:
    for old in (path, path.with_name(path.name + ".pub")):
        old.unlink(missing_ok=True)
    done = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise SshHostsError(f"ssh-keygen {path.name} failed: {done.stderr.strip()}")
    os.chmod(path, 0o600)


def _sshd_config(directory: Path, address: str, port: int, name: str) -> str:
    settings = [
        ("ListenAddress", f"{address}:{port}"),
        ("HostKey", directory / "host_key"),
        ("PidFile", directory / f"{name}.pid"),
        ("AuthorizedKeysFile", directory / "authorized_keys"),
        ("StrictModes", "no"),  # the keys may be under /tmp, whose parent is world-writable
        ("PermitRootLogin", "prohibit-password"),
        ("PubkeyAuthentication", "yes"),
        ("PasswordAuthentication", "no"),
        ("KbdInteractiveAuthentication", "no"),
        ("UsePAM", "no"),
        ("UseDNS", "no"),
        ("MaxStartups", "200"),  # the defaults drop parallel connections
        ("MaxSessions", "100"),
        ("SetEnv", "SHLVL=1"),  # keeps root's .bashrc (pyenv init) out of every command
        ("ClientAliveInterval", "2"),
        ("ClientAliveCountMax", "3"),
        ("PrintMotd", "no"),
        ("PrintLastLog", "no"),
        ("X11Forwarding", "no"),
        ("Subsystem", "sftp internal-sftp"),
        ("LogLevel", "INFO"),
    ]
    return f"# {name}: written by tests/sshhosts.py\n" + "".join(f"{k} {v}\n" for k, v in settings)


def _client_block(alias: str, address: str, port: int, key: Path) -> str:
    lines = [f"Host {alias}", f"    HostName {address}", f"    Port {port}", f"    IdentityFile {key}"]
    lines += [f"    {key_} {value}" for key_, value in CLIENT_OPTIONS]
    return "\n".join(lines) + "\n\n"


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return "(no sshd log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty sshd log)"


def _listening(pid: int, address: str, port: int) -> bool:
    """True when process ``pid`` owns a socket listening on ``address:port`` (``ss -ltnpH``)."""
    done = subprocess.run(["ss", "-ltnpH"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[3] == f"{address}:{port}" and f"pid={pid}," in line:
            return True
    return False


def _write_state(directory: Path, state: dict) -> None:
    tmp = directory / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, directory / STATE)


def _launch(host: dict) -> subprocess.Popen:
    """Start one host's sshd in a UTS namespace of its own named after the host."""
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # /run is tmpfs: sshd refuses to start without it
    script = f"hostname {host['name']} && exec {SSHD} -D -f {host['conf']} -E {host['log']}"
    with open(host["log"], "ab") as log:  # what fails before sshd opens its -E log lands there too
        return subprocess.Popen(["unshare", "--uts", "sh", "-c", script], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log, cwd="/",
                                start_new_session=True)  # detached: a terminal's ^C or a CLI's exit leaves it


def _wait_ready(hosts: SshHosts, procs: dict[str, subprocess.Popen], deadline: float) -> None:
    """Return once every listener owns its socket and ``ssh NAME true`` works; raise if one fails."""
    for name in hosts.names:
        host = hosts._host(name)
        log = Path(host["log"])
        while not _listening(host["pid"], host["address"], hosts.port):
            if procs[name].poll() is not None:
                raise SshHostsError(f"sshd of {name} ({host['address']}:{hosts.port}) exited with status "
                                    f"{procs[name].returncode}; its log:\n{_log_tail(log)}")
            if time.monotonic() > deadline:
                raise SshHostsError(f"sshd of {name} does not listen on {host['address']}:{hosts.port}; "
                                    f"its log:\n{_log_tail(log)}")
            time.sleep(0.02)
        while True:
            try:
                done = hosts.run(name, "true", timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                done = None
            if done is not None and done.returncode == 0:
                break
            if time.monotonic() > deadline or procs[name].poll() is not None:
                why = "timed out" if done is None else f"status {done.returncode}: {done.stderr.strip()}"
                raise SshHostsError(f"ssh {name} true failed ({why}); sshd log:\n{_log_tail(log)}")
            time.sleep(0.1)


def _start_once(directory: Path, addresses: Sequence[str], port: int, nohost_port: int) -> SshHosts:
    """Write ssh_config and the sshd configs for ``port``, start the daemons and wait for them."""
    names = [f"h{i}" for i in range(1, len(addresses) + 1)]
    client_key, bad_key = directory / "client_key", directory / "bad_key"
    blocks = [_client_block(name, address, port, client_key) for name, address in zip(names, addresses)]
    blocks.append(_client_block(f"{names[0]}-badkey", addresses[0], port, bad_key))
    blocks.append(_client_block("nohost", NOHOST_ADDRESS, nohost_port, client_key))
    config = directory / "ssh_config"
    config.write_text("# written by tests/sshhosts.py\n\n" + "".join(blocks))
    state = {"config": str(config), "port": port, "hosts": [], "client_key": str(client_key),
             "bad_key": str(bad_key), "host_key": str(directory / "host_key")}
    procs: dict[str, subprocess.Popen] = {}
    for name, address in zip(names, addresses):
        host = {"name": name, "address": address, "conf": str(directory / f"{name}.conf"),
                "log": str(directory / f"{name}.log"), "pid": None, "start_time": None, "uts": None}
        Path(host["conf"]).write_text(_sshd_config(directory, address, port, name))
        Path(host["log"]).write_text("")
        procs[name] = proc = _launch(host)
        host["pid"] = proc.pid
        stat = proctree.stat(proc.pid)
        host["start_time"] = None if stat is None else stat.start_time
        state["hosts"].append(host)
        _write_state(directory, state)  # at once, so that stop() finds whatever has started
    deadline = time.monotonic() + START_TIMEOUT
    for host in state["hosts"]:  # its own namespace is certain once sshd runs: `sh` unshared first
        while (_comm(host["pid"]) not in SSHD_COMMS and procs[host["name"]].poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.01)
        host["uts"] = _uts(host["pid"])
    _write_state(directory, state)
    hosts = SshHosts(directory)
    _wait_ready(hosts, procs, deadline)
    return hosts


def start(directory: os.PathLike | str, addresses: Sequence[str] = ADDRESSES,
          port: Optional[int] = None) -> SshHosts:
    """Make keys and configs in ``directory`` (created if missing), start one sshd per address
    (hosts h1, h2, ... in that order) and return the set once every host accepts connections.

    The port is ``port`` if given, else 22 when free on every address, else one free port shared
    by all; a chosen port taken before sshd binds it is retried with another.  On failure
    everything started is stopped and SshHostsError says why, with the sshd log's tail.
    """
    if not addresses:
        raise SshHostsError("no addresses to start hosts on")
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    if (directory / STATE).exists():
        old = SshHosts(directory)
        if any(old.running(name) for name in old.names):
            raise SshHostsError(f"{directory} holds running hosts; stop them first")
    for key in ("client_key", "bad_key", "host_key"):
        _keygen(directory / key, f"sequent-test-{key}")
    authorized = directory / "authorized_keys"
    authorized.write_text((directory / "client_key.pub").read_text())
    os.chmod(authorized, 0o600)
    nohost_port = _bindable(NOHOST_ADDRESS, 0)
    attempts = 1 if port else PORT_ATTEMPTS
    for attempt in range(attempts):
        chosen = port or _choose_port(addresses, PORT if attempt == 0 else None)
        try:
            return _start_once(directory, addresses, chosen, nohost_port)
        except BaseException as exc:
            stop(directory)
            if not (isinstance(exc, SshHostsError) and "Address already in use" in str(exc)
                    and attempt + 1 < attempts):
                raise
    raise AssertionError("not reached")


def stop(directory: os.PathLike | str) -> None:
    """Kill, by PID, every listener of the set in ``directory`` with all its processes, and wait
    until they are gone.  A directory without a set, or a set already stopped, is fine."""
    try:
        hosts = SshHosts(directory)
    except SshHostsError:
        return
    listeners, namespaces = [], []  # of the hosts still running, checked before any kill
    for name in hosts.names:
        if hosts.running(name):
            host = hosts._host(name)
            listeners.append(host["pid"])
            if _uts(host["pid"]) == host["uts"]:
                namespaces.append(host["uts"])
    _kill_all(lambda: _tree(listeners, namespaces))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] not in ("start", "stop") or (args[0] == "stop" and len(args) != 2):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    command, directory, addresses = args[0], args[1], args[2:]
    try:
        if command == "start":
            print(start(directory, addresses or ADDRESSES).config, flush=True)
        else:
            stop(directory)
    except SshHostsError as exc:
        print(f"sshhosts {command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
