"""Handling a failure: `transmit` fails; `cleanup` runs whatever happened to it (STEP_COMPLETE),
and `notify` runs when either the transmission succeeded or the fallback copy did (or_).
Because the failure of `transmit` is required by a sibling, it is *handled*: the run succeeds.

Run it:  python examples/handle_failure.py      (exit code 0: every failure was handled)
"""
import logging
import os
import sys

import sequent as seq


def step(message, fail=False):
    logging.getLogger(os.getenv('SEQUENT_LOGGER_NAME')).info(message)
    if fail:
        raise RuntimeError(message + ': remote side refused the connection')


def build_flow(argv=(), **sequent_args):
    """The flow (``sequent run`` calls it with the arguments after ``--``; this one takes none)."""
    if argv:
        raise SystemExit(f'{__file__}: takes no arguments, got {" ".join(argv)}')
    flow = seq.Sequent(**sequent_args)
    extract = flow.add_step('extract', func=step, args=('extracting',))
    transmit = flow.add_step('transmit', func=step, args=('transmitting',), kwargs={'fail': True},
                             requires=((extract, seq.STEP_SUCCESS),))
    fallback = flow.add_step('fallback_copy', func=step, args=('copying to the drop folder',),
                             requires=((transmit, seq.STEP_FAILURE),))
    flow.add_step('cleanup', func=step, args=('removing temporary files',),
                  requires=((transmit, seq.STEP_COMPLETE),))
    flow.add_step('notify', func=step, args=('telling the client the data is there',),
                  requires=seq.or_((transmit, seq.STEP_SUCCESS), (fallback, seq.STEP_SUCCESS)))
    return flow


if __name__ == '__main__':
    sys.exit(0 if build_flow(sys.argv[1:]).run() else 1)
