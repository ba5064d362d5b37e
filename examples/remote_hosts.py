"""Remote hosts: a flow spread over the hosts named on the command line (or in its configuration),
sharing one PostgreSQL store.  See "Distributed operation" in README.rst for the set-up.

    prepare (first host)
       |
    +--batch, copied on the first two hosts: batch@h1, batch@h2------+
    |  extract -> transform        (twice: repeats [1, 2])           |
    +----------------------------------------------------------------+
       |  (waits for every copy)
    report (hosts: all of them, last first: runs once, on the first with room)
       |
    summary (no hosts: runs here, on the coordinator)

Run it:

    python examples/remote_hosts.py --store postgresql+psycopg://user:pw@dbhost/db \\
        --ssh-config ~/.ssh/sequent_config h1 h2 h3

or with SEQUENT_EXAMPLE_STORE, SEQUENT_EXAMPLE_SSH_CONFIG and SEQUENT_EXAMPLE_HOSTS ("h1 h2 h3") in
the environment; ``--config FILE`` reads a YAML configuration (``HOSTS``, ``ssh_config``,
``DATABASES``...), whose ``HOSTS`` keys are the hosts when none are named.  A host named here that
``HOSTS`` does not configure runs the agent with ``--python`` (default: this interpreter's path) and
this folder on its ``PYTHONPATH`` (the functions are in examples/remote_steps.py): both paths must
exist on the host, as when it shares this file system or was set up alike.  After the run it prints
where each task ran, from the store's history.  Exit code 0 on success, 1 on failure, 2 when the
run could not start (a host unreachable, a SQLite store...).
"""
import argparse
import ast
import os
import socket
import sys

import yaml

import sequent as seq
from remote_steps import work

HERE = os.path.dirname(os.path.abspath(__file__))


def build_flow(hosts, **sequent_args):
    """The flow over ``hosts`` (one or more host names)."""
    flow = seq.Sequent(**sequent_args)
    prepare = flow.add_step('prepare', func=work, args=('preparing',), hosts=hosts[:1])
    # a container on two hosts is copied once per host; the steps inside inherit its host
    batch = flow.add_step('batch', repeats=[1, 2], hosts=hosts[:2], requires=((prepare, seq.STEP_SUCCESS),))
    extract = batch.add_step('extract', func=work, args=('extracting',))
    batch.add_step('transform', func=work, args=('transforming',), requires=((extract, seq.STEP_SUCCESS),))
    # a processing step with several hosts runs once, on the first of them with room
    report = flow.add_step('report', func=work, args=('reporting',), hosts=hosts[::-1],
                           requires=((batch, seq.STEP_SUCCESS),))
    flow.add_step('summary', func=work, args=('summing up', 0), requires=((report, seq.STEP_SUCCESS),))
    return flow


def configuration(args):
    """The flow's configuration: the --config file, then the hosts and settings from the command line."""
    config = {}
    if args.config:
        with open(os.path.expanduser(args.config)) as f:
            config = yaml.safe_load(f) or {}
    hosts = args.hosts or os.environ.get('SEQUENT_EXAMPLE_HOSTS', '').replace(',', ' ').split()
    hosts = hosts or list(config.get('HOSTS') or {})
    if not hosts:
        raise SystemExit('name the hosts: remote_hosts.py ... h1 h2 h3, SEQUENT_EXAMPLE_HOSTS, '
                         'or HOSTS in the --config file')
    table = config.setdefault('HOSTS', {})
    for host in hosts:
        table.setdefault(host, {'python': args.python, 'env': {'PYTHONPATH': HERE}})
    ssh_config = args.ssh_config or os.environ.get('SEQUENT_EXAMPLE_SSH_CONFIG')
    if ssh_config:
        config['ssh_config'] = ssh_config
    if args.logdir:
        config.setdefault('LOGGING', {})['logdir'] = args.logdir
    if args.quiet:
        config.setdefault('LOGGING', {})['console'] = False
    return hosts, config


def where_it_ran(store, run_id, config):
    """One line per task: its step, sequence, status, the host it was placed on and the name that
    host gives itself (what the step's function returned)."""
    lines = [f"{'step':<22} {'sequence':<9} {'status':<8} {'host':<10} ran on"]
    for task in seq.run_tasks(store, run_id, config=config):
        try:
            ran_on = ast.literal_eval(task.result) if task.result else ''
        except (ValueError, SyntaxError):
            ran_on = task.result
        lines.append(f"{task.step:<22} {task.sequence:<9} {task.status:<8} {task.host or '':<10} {ran_on}")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description='Run a flow spread over remote hosts (see README.rst, '
                                                 '"Distributed operation").')
    parser.add_argument('hosts', nargs='*', metavar='HOST',
                        help='host names: HOSTS keys or ssh destinations (default: SEQUENT_EXAMPLE_HOSTS, '
                             'else the HOSTS of --config)')
    parser.add_argument('--store', metavar='URL', default=os.environ.get('SEQUENT_EXAMPLE_STORE'),
                        help='a PostgreSQL URL or a DATABASES key every host reaches (default: '
                             'SEQUENT_EXAMPLE_STORE)')
    parser.add_argument('--ssh-config', metavar='PATH', help='the ssh client configuration file (default: '
                                             "SEQUENT_EXAMPLE_SSH_CONFIG, else ssh's own)")
    parser.add_argument('--config', metavar='FILE', help='a YAML configuration file (HOSTS, ssh_config, DATABASES, LOGGING...)')
    parser.add_argument('--python', metavar='PATH', default=sys.executable,
                        help='the interpreter on hosts that HOSTS does not configure (default: %(default)s)')
    parser.add_argument('--logdir', metavar='DIR', help='the log folder (LOGGING.logdir)')
    parser.add_argument('--quiet', action='store_true', help='no log lines on the console')
    args = parser.parse_args(argv)
    if not args.store:
        parser.error('give the store: --store URL (a PostgreSQL URL every host reaches) or SEQUENT_EXAMPLE_STORE')
    hosts, config = configuration(args)

    flow = build_flow(hosts, name='remote_hosts', store=args.store, config=config)
    try:
        ok = flow.run()
    except seq.SequentError as exc:
        print(f'remote_hosts: the run did not start: {exc}', file=sys.stderr)
        return 2
    print(f'\nRun {flow.run_id} on {", ".join(hosts)} (coordinator: {socket.gethostname()}): '
          f'{"success" if ok else "failure"}')
    print(where_it_ran(args.store, flow.run_id, config))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
