"""Where steps run: the remote hosts a program names, the checks a run makes before anything
starts, and one :class:`~.executors.remote.RemoteExecutor` per remote host.

A step runs on the first of its hosts with room.  A name of this machine (``localhost``, its host
name, or the run's ``host``) runs the step here; any other name is a remote host, reached over SSH
as configured in ``HOSTS``.  A run with remote hosts needs a store every host reaches (PostgreSQL),
and steps whose function and arguments can be sent there: both are checked before anything starts.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from . import config as _config
from .errors import EventorError
from .model import Program, StepDef, TaskConstruct


def remote_hosts(program: Program, own: str) -> list[str]:
    """The remote hosts the program's processing steps name, in first-use order."""
    from .executors.remote import is_local

    seen: dict[str, None] = {}
    for step in program.step_list:
        if not step.is_container and step.config.task_construct is not TaskConstruct.dask:  # dask: worker names
            for host in step.hosts:
                if host not in seen and not is_local(host, own):
                    seen[host] = None
    return list(seen)


def check_dask(program: Program, config: Mapping[str, Any], target: Any, ssh_hosts: list[str]) -> None:
    """Refuse, before anything starts, a run whose Dask tasks could not be sent or recorded."""
    from .executors.remote import sendable_problem

    steps = [s for s in program.step_list if not s.is_container and s.config.task_construct is TaskConstruct.dask]
    if not steps:
        return
    address = (config.get("DASK") or {}).get("address")
    if target.is_memory or (target.is_sqlite and address):
        where = "an in-memory store (':memory:')" if target.is_memory else f"SQLite store {target.display}"
        raise EventorError(
            f"step {steps[0].name!r} runs on Dask{' at ' + address if address else ''}, but the store is {where}, "
            f"which its workers cannot reach: give the flow a database every worker reaches (a PostgreSQL URL "
            f"or a DATABASES key){'' if address else '; a file store works with the local cluster'}")
    clash = sorted({h for s in steps for h in s.hosts} & set(ssh_hosts))
    if clash:
        raise EventorError(f"{', '.join(repr(h) for h in clash)} names both a Dask worker (of a 'dask' step) and "
                           f"an SSH host (of another step): use distinct names")
    for step in steps:
        problem = sendable_problem(step)
        if problem:
            raise EventorError(f"step {step.name!r} runs on Dask, but {problem}")


def check_remote(program: Program, hosts: list[str], own: str, target: Any) -> None:
    """Refuse, before anything starts, a run that remote hosts could not serve."""
    from .executors.remote import is_local, sendable_problem

    if target.is_sqlite:
        where = "an in-memory SQLite store (':memory:')" if target.is_memory else f"SQLite store {target.display}"
        raise EventorError(
            f"steps run on remote host(s) {', '.join(repr(h) for h in hosts)}, but the store is {where}, which "
            f"other hosts cannot reach: give the flow a database every host reaches (a PostgreSQL URL such as "
            f"postgresql+psycopg://user:password@dbhost/db, or a DATABASES key)")
    for step in program.step_list:
        if step.is_container or step.config.task_construct is TaskConstruct.dask or \
                all(is_local(h, own) for h in step.hosts):
            continue
        problem = sendable_problem(step)
        if problem:
            raise EventorError(f"step {step.name!r} runs on host(s) {', '.join(step.hosts)}, but {problem}")


def function_modules(steps: Iterable[StepDef]) -> list[str]:
    """The modules of the steps' functions, once each: an agent imports them before anything starts
    (so each task finds them imported, and a missing one is an error first)."""
    modules = (getattr(step.func, "__module__", None) for step in steps if step.func is not None)
    return list(dict.fromkeys(m for m in modules if isinstance(m, str) and m not in ("__main__", "builtins")))


def step_modules(program: Program, host: str) -> list[str]:
    """The modules of the functions of the steps that may run on ``host``."""
    return function_modules(s for s in program.step_list if not s.is_container and host in s.hosts)


def remote_executors(hosts: list[str], config: Mapping[str, Any], report: Any, program: Program) -> dict:
    """One executor per remote host, as HOSTS configures it (none started yet)."""
    from .executors.remote import RemoteExecutor
    from .ssh import SshOptions

    options = SshOptions(config_file=config.get("ssh_config") or None,
                         alive_interval=float(config.get("ssh_alive_interval", 5)),
                         alive_count=int(config.get("ssh_alive_count", 3)),
                         connect_timeout=float(config.get("ssh_connect_timeout", 10)))
    made = {}
    for name in hosts:
        entry = _config.host_settings(name, config)
        made[name] = RemoteExecutor(name, entry.destination, python=entry.python, env=dict(entry.env),
                                    workdir=entry.workdir, max_concurrent=entry.max_concurrent, options=options,
                                    report=report, imports=step_modules(program, name))
    return made
