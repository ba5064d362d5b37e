"""The functions that examples/remote_hosts.py runs on the remote hosts.

A function that runs on another host travels by reference (its module and name), so it must be a
module-level function of a module the host can import: this file, on the agent's ``PYTHONPATH``
(remote_hosts.py sets ``HOSTS[...]['env']['PYTHONPATH']`` to this folder).  A lambda, a closure or
a function of the script itself (``__main__``) is refused before the run starts.

Each function logs through the task's logger (its records reach the run log on the coordinator,
and the task's own log file on the host) and returns the name the host gives itself, which the
store keeps as the task's result.
"""
import logging
import os
import socket
import time


def _log():
    return logging.getLogger(os.getenv('SEQUENT_LOGGER_NAME'))


def work(what, seconds=0.1):
    """Pretend to work for ``seconds``; return the host name this ran on."""
    here = socket.gethostname()
    _log().info('%s at %s/%s on %s', what, os.getenv('SEQUENT_STEP_NAME'), os.getenv('SEQUENT_STEP_SEQUENCE'),
                here)
    time.sleep(seconds)
    return here
