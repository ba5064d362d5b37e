"""The seed's simple example: s2 runs after container s1, which repeats twice around s11 (twice
around s111 -> s112) and s12.  Run it from cron or a shell, either way:

    python examples/simple.py                    # a plain script
    sequent run examples/simple.py               # a flow file: the module's build_flow(argv)

``--fail STEP`` (after ``--`` with ``sequent run``) makes a step fail, to try recovery::

    sequent run examples/simple.py -- --fail s1_s11_s112    # fails: exit code 1
    sequent recover examples/simple.py                      # runs only what did not succeed

Exit code 0 when the flow succeeded, 1 when it failed.
"""
import argparse
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


def build_flow(argv=(), **sequent_args):
    parser = argparse.ArgumentParser(prog='simple.py')
    parser.add_argument('--fail', action='append', default=[], metavar='STEP',
                        help='make this step fail (s1_s11_s111, s1_s11_s112, s1_s12 or s2)')
    failing = set(parser.parse_args(list(argv)).fail)
    sequent_args.setdefault('config', {'LOGGING': {'logging_level': logging.INFO}})
    myflow = seq.Sequent(**sequent_args)

    s1 = myflow.add_step('s1', repeats=[1, 2])

    s11 = s1.add_step('s11', repeats=[1, 2])

    s111 = s11.add_step('s111', func=prog,
                        kwargs={'progname': 'prog1', 'success': 's1_s11_s111' not in failing})
    s112 = s11.add_step('s112', func=prog,
                        kwargs={'progname': 'prog2', 'success': 's1_s11_s112' not in failing},
                        requires=((s111, seq.STEP_SUCCESS),))

    s12 = s1.add_step('s12', func=prog, kwargs={'progname': 'prog3', 'success': 's1_s12' not in failing},
                      requires=((s11, seq.STEP_SUCCESS),))

    s2 = myflow.add_step('s2', func=prog, kwargs={'progname': 'prog4', 'success': 's2' not in failing},
                         requires=((s1, seq.STEP_SUCCESS),))
    return myflow


if __name__ == '__main__':
    sys.exit(0 if build_flow(sys.argv[1:]).run() else 1)
