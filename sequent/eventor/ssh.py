"""How the coordinator reaches a remote host: the OpenSSH client's fixed argument list, the
bootstrap the agent starts with, and the words for ssh's failures.

Nothing from step names, arguments or configuration values ever reaches a shell: the remote
command is a fixed text (the interpreter's path, quoted, and :data:`BOOTSTRAP`), and everything
else the agent needs (its environment, working folder, the run) travels as data over the
session's standard input.  Connection sharing (``ControlMaster``) lets every run on this machine
reuse one SSH connection per host (as the flow names it); the shared connection outlives the last
session by :data:`CONTROL_PERSIST` seconds, then ends by itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import struct
import tempfile
from dataclasses import dataclass
from typing import Optional

from .errors import EventorError

#: Seconds an idle shared connection stays up after its last session, then it ends by itself:
#: runs that overlap (or follow within this) share one connection per host; nothing lingers.
CONTROL_PERSIST = 2

#: The remote command's program: reads one JSON frame (environment, sys.path, working folder), then
#: runs the agent.  Fixed text: no value of a flow or its configuration is ever part of it.
BOOTSTRAP = """\
import json, os, struct, sys
def _read(n):
    data = b''
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            sys.exit(0)
        data += chunk
    return data
_boot = json.loads(_read(struct.unpack('!I', _read(4))[0]))
os.environ.update(_boot['env'])
sys.path[0:0] = _boot['path']
if _boot['workdir']:
    try:
        os.chdir(os.path.expanduser(_boot['workdir']))
    except OSError as exc:
        sys.stderr.write('sequent-agent: cannot use workdir: %s\\n' % exc)
        sys.exit(4)
try:
    from sequent.eventor import agent
except ImportError as exc:
    sys.stderr.write('sequent-agent: cannot import sequent: %s\\n' % exc)
    sys.exit(3)
agent.main()
"""


@dataclass(frozen=True)
class SshOptions:
    """The ssh settings of a run (from its configuration)."""

    config_file: Optional[str] = None  # ssh's -F; None: ssh's own (~/.ssh/config)
    alive_interval: float = 5.0  # ServerAliveInterval
    alive_count: int = 3  # ServerAliveCountMax: a silent link is noticed after interval x count
    connect_timeout: float = 10.0


def control_dir() -> str:
    """A private folder for the shared connections' sockets, short enough for a unix socket path."""
    path = os.path.join(tempfile.gettempdir(), f"sequent-ssh-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise EventorError(f"{path} must be a folder of this user's that nobody else can reach (mode 0700); "
                           f"it holds the SSH connection sockets: remove it, or fix its owner and mode")
    return path


def agent_argv(destination: str, python: str, options: SshOptions) -> list[str]:
    """The ssh command that starts an agent on ``destination`` (a fixed list: no local shell)."""
    argv = ["ssh"]
    path = ""
    if options.config_file:
        path = os.path.abspath(os.path.expanduser(options.config_file))
        if not os.path.isfile(path):
            raise EventorError(f"ssh_config file {options.config_file!r} not found")
        argv += ["-F", path]
    # one shared connection per destination *as written* and ssh_config file: ssh's own %C hashes the
    # resolved address, so two aliases of one address (other keys, another ProxyJump) would share one
    key = hashlib.sha256(f"{path}\0{destination}".encode()).hexdigest()[:24]
    argv += ["-T", "-o", "BatchMode=yes", "-o", "ControlMaster=auto",
             "-o", f"ControlPath={control_dir()}/{key}", "-o", f"ControlPersist={CONTROL_PERSIST}",
             "-o", f"ServerAliveInterval={_seconds(options.alive_interval)}",
             "-o", f"ServerAliveCountMax={int(options.alive_count)}",
             "-o", f"ConnectTimeout={_seconds(options.connect_timeout)}",
             "--", destination, f"{shlex.quote(python)} -c {shlex.quote(BOOTSTRAP)}"]
    return argv


def _seconds(value: float) -> int:
    return max(1, int(round(value)))


def boot_frame(env: dict[str, str], workdir: Optional[str]) -> bytes:
    """The first bytes the agent reads: its environment, import path and working folder (JSON)."""
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    data = json.dumps({"env": env, "path": path, "workdir": workdir}).encode()
    return struct.pack("!I", len(data)) + data


def describe_failure(returncode: Optional[int], stderr: str, python: str) -> str:
    """Why an agent could not start, from ssh's exit status and what it and the host wrote."""
    text = stderr.strip()
    last = text.splitlines()[-1] if text else ""
    if "sequent-agent: cannot import sequent" in text:
        return f"sequent is not installed for {python} there ({last.split(': ', 2)[-1]})"
    if "sequent-agent: cannot use workdir" in text:
        return f"its workdir is unusable ({last.split(': ', 2)[-1]})"
    if "Permission denied" in text:
        return f"authentication was refused ({last})"
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return f"its host key could not be verified ({last})"
    if "Could not resolve hostname" in text:
        return f"its name does not resolve ({last})"
    if returncode == 255 and ("not responding" in text or "Broken pipe" in text or "closed by remote host" in text
                              or "Connection reset" in text):
        return f"the connection was lost ({last})"
    if returncode == 255:
        return f"it is unreachable ({last or 'ssh failed with exit status 255'})"
    if returncode == 127 or "not found" in text or "No such file or directory" in text:
        return f"its python {python!r} was not found ({last or 'exit status 127'})"
    if returncode is not None and returncode < 0:
        return f"ssh was killed by signal {-returncode}"
    return f"the agent ended (exit status {returncode}){': ' + last if last else ''}"
