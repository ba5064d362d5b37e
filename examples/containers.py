"""Containers: a nightly load that repeats per region, with two independent extracts running in
parallel inside each region, then a transform that needs both, and a report at the end.

    +--regions (one iteration per region)---------+
    |  extract_orders --+                          |
    |                   +--> transform             |
    |  extract_stock ---+                          |
    +----------------------------------------------+ --> report

Run it:  python examples/containers.py      (exit code 0 on success, 1 on failure)
"""
import logging
import os
import sys
import time

import sequent as seq

REGIONS = ['emea', 'amer', 'apac']


def work(what):
    logger = logging.getLogger(os.getenv('SEQUENT_LOGGER_NAME'))
    logger.info('%s at %s/%s', what, os.getenv('SEQUENT_STEP_NAME'), os.getenv('SEQUENT_STEP_SEQUENCE'))
    time.sleep(0.1)


def build_flow(argv=(), **sequent_args):
    """The flow (``sequent run`` calls it with the arguments after ``--``; this one takes none)."""
    if argv:
        raise SystemExit(f'{__file__}: takes no arguments, got {" ".join(argv)}')
    sequent_args.setdefault('config', {'max_concurrent': 4})
    flow = seq.Sequent(**sequent_args)
    # repeats may be a callable returning an iterator: it is called when the container starts,
    # so the list of regions is read at run time, not when the flow is built.
    regions = flow.add_step('regions', repeats=lambda: iter(REGIONS))
    orders = regions.add_step('extract_orders', func=work, args=('extracting orders',))
    stock = regions.add_step('extract_stock', func=work, args=('extracting stock',))
    regions.add_step('transform', func=work, args=('transforming',),
                     requires=((orders, seq.STEP_SUCCESS), (stock, seq.STEP_SUCCESS)))
    flow.add_step('report', func=work, args=('reporting',), requires=((regions, seq.STEP_SUCCESS),))
    return flow


if __name__ == '__main__':
    sys.exit(0 if build_flow(sys.argv[1:]).run() else 1)
