"""Delays: `poll` waits 2 seconds after `submit` succeeded before it starts, e.g. to give a
remote system time to pick up a file.  The coordinator does not poll meanwhile: it sleeps
until the delay is due.

Run it:  python examples/delays.py      (exit code 0 on success)
"""
import logging
import os
import sys
import time

import sequent as seq


def submit():
    logging.getLogger(os.getenv('SEQUENT_LOGGER_NAME')).info('submitted at %.2f', time.time())


def poll():
    logging.getLogger(os.getenv('SEQUENT_LOGGER_NAME')).info('polled at %.2f', time.time())


def build_flow(argv=(), **sequent_args):
    """The flow (``sequent run`` calls it with the arguments after ``--``; this one takes none)."""
    if argv:
        raise SystemExit(f'{__file__}: takes no arguments, got {" ".join(argv)}')
    flow = seq.Sequent(**sequent_args)
    first = flow.add_step('submit', func=submit)
    flow.add_step('poll', func=poll, delay=2, requires=((first, seq.STEP_SUCCESS),))
    return flow


if __name__ == '__main__':
    sys.exit(0 if build_flow(sys.argv[1:]).run() else 1)
