"""The seed's simple example: s2 runs after container s1, which repeats twice around s11 (twice
around s111 -> s112) and s12.  Run it from cron or a shell:  python examples/simple.py

Exit code 0 when the flow succeeded, 1 when it failed.
"""
import logging
import os
import sys

import sequent as seq


def prog(progname, success=True):
    logger = logging.getLogger(os.getenv("SEQUENT_LOGGER_NAME"))
    logger.info("doing what {} is doing".format(progname))
    if not success:
        raise Exception("{} failed".format(progname))
    return progname


def build_flow(**sequent_args):
    myflow = seq.Sequent(**sequent_args)

    s1 = myflow.add_step('s1', repeats=[1, 2])

    s11 = s1.add_step('s11', repeats=[1, 2])

    s111 = s11.add_step('s111', func=prog, kwargs={'progname': 'prog1'})
    s112 = s11.add_step('s112', func=prog, kwargs={'progname': 'prog2'},
                        requires=((s111, seq.STEP_SUCCESS),))

    s12 = s1.add_step('s12', func=prog, kwargs={'progname': 'prog3'},
                      requires=((s11, seq.STEP_SUCCESS),))

    s2 = myflow.add_step('s2', func=prog, kwargs={'progname': 'prog4'},
                         requires=((s1, seq.STEP_SUCCESS),))
    return myflow


if __name__ == '__main__':
    myflow = build_flow(config={'LOGGING': {'logging_level': logging.INFO}})
    sys.exit(0 if myflow.run() else 1)
