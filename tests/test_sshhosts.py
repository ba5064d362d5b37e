"""The real sshd hosts of the ``ssh_hosts`` fixture (tests/sshhosts.py), and their fault injections.

Each host answers as itself; a key that is not authorized and an address where nothing listens
fail as ssh reports such failures (status 255); a crashed host's sessions are gone; a paused link
holds a session's output back until it is resumed; and ``stop`` (in-process and from the command
line) leaves no process behind, detached remote commands included.  The start/stop tests use sets
of their own on other addresses, so they never meet the session's hosts.
"""

from __future__ import annotations

import os
import select
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sshhosts
from procs import is_alive, proc_stat

pytestmark = [pytest.mark.ssh, pytest.mark.timeout_seconds(60)]

SCRIPT = Path(__file__).resolve().parent / "sshhosts.py"
SYSTEM_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def wait_until(predicate, timeout: float = 10.0, what: str = "the condition"):
    """Poll ``predicate`` until it returns something true; fail (not hang) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout} s")
        time.sleep(0.02)
    return value


def session_pid_of(hosts: sshhosts.SshHosts, name: str, comm: str) -> int:
    """The PID of the session process named ``comm`` on host ``name``, once there is one."""
    def find():
        return next((pid for pid in hosts.session_pids(name) if sshhosts._comm(pid) == comm), None)
    return wait_until(find, what=f"a {comm!r} session process on {name}")


def detached_sleep(hosts: sshhosts.SshHosts, name: str, seconds: int) -> None:
    """Start ``sleep`` on host ``name`` detached from its session (setsid, no stdio): it outlives
    the ssh connection, as a daemon would."""
    done = hosts.run(name, f"setsid sleep {seconds} </dev/null >/dev/null 2>&1 &", timeout=30)
    assert done.returncode == 0, done.stderr
    # the shell returns once it has forked: the sleep may not have replaced setsid yet
    deadline = time.monotonic() + 10
    while not any(sshhosts._comm(pid) == "sleep" for pid in hosts.session_pids(name)):
        assert time.monotonic() < deadline, f"no detached sleep on {name} after 10 s"
        time.sleep(0.02)


def test_each_host_answers_with_its_own_name(ssh_hosts):
    assert ssh_hosts.names == ["h1", "h2", "h3"]
    for name in ssh_hosts.names:
        done = ssh_hosts.run(name, "hostname")
        assert (done.returncode, done.stdout, done.stderr) == (0, f"{name}\n", "")
    code = "import socket; print(socket.gethostname())"
    done = ssh_hosts.run("h2", shlex.quote(sys.executable), "-c", shlex.quote(code))
    assert (done.returncode, done.stdout) == (0, "h2\n"), done.stderr
    assert ssh_hosts.address("h2") == "127.0.0.3"


def test_a_key_that_is_not_authorized_is_refused(ssh_hosts):
    done = ssh_hosts.run("h1-badkey", "true")
    assert done.returncode == 255
    assert "Permission denied" in done.stderr


def test_an_unreachable_host_fails_with_255(ssh_hosts):
    done = ssh_hosts.run("nohost", "true")
    assert done.returncode == 255
    assert "Connection refused" in done.stderr


def test_kill_sessions_ends_the_running_commands_and_keeps_the_listener(ssh_hosts):
    client = subprocess.Popen(ssh_hosts.ssh_command("h3", "sleep 60"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        sleeper = session_pid_of(ssh_hosts, "h3", "sleep")
        killed = ssh_hosts.kill_sessions("h3")
        assert sleeper in killed and not is_alive(sleeper)
        assert client.wait(timeout=10) == 255  # the connection was cut, as by a crashed host
    finally:
        client.kill()
        client.wait()
    assert ssh_hosts.wait_no_sessions("h3", 5)
    assert ssh_hosts.session_pids("h3") == set()
    assert ssh_hosts.running("h3") and ssh_hosts.run("h3", "hostname").stdout == "h3\n"


def test_a_paused_link_holds_the_session_back_until_it_is_resumed(ssh_hosts):
    client = subprocess.Popen(ssh_hosts.ssh_command("h2", "echo start; sleep 0.5; echo end"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert client.stdout.readline() == b"start\n"
        paused = ssh_hosts.pause_link("h2")
        try:
            assert paused and ssh_hosts.listener_pid("h2") not in paused
            for pid in paused:  # only sshd stops, not the command it runs
                wait_until(lambda: proc_stat(pid)[0] == "T", what=f"sshd {pid} stopped")
            assert all(sshhosts._comm(pid) == "sshd" for pid in paused)
            time.sleep(1.5)  # the command ends meanwhile, but its output cannot pass
            assert select.select([client.stdout], [], [], 0)[0] == [] and client.poll() is None
        finally:
            ssh_hosts.resume_link("h2")
        out, err = client.communicate(timeout=10)
    finally:
        client.kill()
        client.wait()
    assert (client.returncode, out) == (0, b"end\n"), err
    wait_until(lambda: not any(map(is_alive, paused)), what="the connection's sshd processes gone")


def assert_all_gone(pids: set[int], directory: Path) -> None:
    """None of ``pids`` lives, and no live process names ``directory`` (an sshd of that set)."""
    assert [pid for pid in pids if is_alive(pid)] == []
    leftovers = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                 if is_alive(pid) and str(directory) in " ".join(sshhosts._cmdline(pid))]
    assert leftovers == []


def test_stop_leaves_no_process_behind(tmp_path):
    why = sshhosts.available()
    if why is not None:
        pytest.skip(f"[required] real sshd hosts: {why}")
    directory = tmp_path / "hosts"
    try:
        hosts = sshhosts.start(directory, addresses=("127.0.0.12", "127.0.0.13", "127.0.0.14"))
        assert [hosts.address(name) for name in hosts.names] == ["127.0.0.12", "127.0.0.13", "127.0.0.14"]
        assert hosts.run("h3", "hostname").stdout == "h3\n"
        client = subprocess.Popen(hosts.ssh_command("h1", "sleep 60"), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        session_pid_of(hosts, "h1", "sleep")
        detached_sleep(hosts, "h2", 60)
        processes = {hosts.listener_pid(name) for name in hosts.names} | hosts.session_pids("h1") \
            | hosts.session_pids("h2")
        assert any(sshhosts._comm(pid) == "sleep" for pid in hosts.session_pids("h2"))
    finally:
        sshhosts.stop(directory)
    assert client.wait(timeout=10) == 255
    assert_all_gone(processes, directory.resolve())
    assert not any(hosts.running(name) for name in hosts.names)
    sshhosts.stop(directory)  # a second stop is fine


def test_the_command_line_starts_and_stops_a_set(tmp_path):
    if sshhosts.available() is not None:
        pytest.skip(f"[required] real sshd hosts: {sshhosts.available()}")
    directory = (tmp_path / "cli").resolve()
    addresses = ["127.0.0.15", "127.0.0.16", "127.0.0.17"]
    try:
        # captured through pipes: a daemon holding one open would hang this call (and `$(...)` in .ci/run)
        done = subprocess.run([SYSTEM_PYTHON, str(SCRIPT), "start", str(directory), *addresses],
                              capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stdout, done.stderr) == (0, f"{directory / 'ssh_config'}\n", "")
        hosts = sshhosts.SshHosts(directory)
        listeners = {hosts.listener_pid(name) for name in hosts.names}
        for name in hosts.names:
            ssh = subprocess.run(["ssh", "-F", done.stdout.strip(), name, "hostname"], stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=30)
            assert ssh.stdout == f"{name}\n", ssh.stderr
        detached_sleep(hosts, "h3", 60)
        processes = listeners | hosts.session_pids("h3")
    finally:
        stopped = subprocess.run([SYSTEM_PYTHON, str(SCRIPT), "stop", str(directory)], capture_output=True,
                                 text=True, timeout=60)
    assert (stopped.returncode, stopped.stdout, stopped.stderr) == (0, "", "")
    assert_all_gone(processes, directory)
