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


def build_flow(**sequent_args):
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
    sys.exit(0 if build_flow(config={'max_concurrent': 4}).run() else 1)
