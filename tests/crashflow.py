"""A coordinator program for tests/test_crash.py: runs (or recovers) one flow, to be killed or signalled.

    python crashflow.py KIND MODE STORE RUN_ID JOURNAL LOGDIR SLEEP GRACE

KIND      big (a root chain, a container of two parallel steps and a dependent repeated 3 times,
          a container of a chain of two repeated twice, a last step: 19 tasks), sleepers (two
          process tasks s1, s2 and 'after' depending on both, and 'late' delayed by 1.5 s),
          ignorer ('stubborn', a process task that ignores SIGTERM, and 'after' depending on it),
          threads (one thread task t1); every processing step sleeps SLEEP
MODE      restart or recover
SLEEP     seconds each processing step sleeps
GRACE     the config's shutdown_grace

Each processing step appends to JOURNAL (O_APPEND, one write a line):
``start STEP SEQUENCE ATTEMPT PID PPID TIME`` before its work, ``done STEP SEQUENCE ATTEMPT PID`` after it.
Exit code: 0 when run() returned True, 1 when False, 130 on KeyboardInterrupt.
With CRASHFLOW_SIGTERM_AFTER_LOOP=1 in the environment the coordinator sends itself SIGTERM as soon as
the scheduler's loop has returned (fault injection for a signal arriving at the very end of a run).
"""

import os
import signal
import sys
import time

import sequent as seq

KIND, MODE, STORE, RUN_ID, JOURNAL, LOGDIR = sys.argv[1:7]
SLEEP, GRACE = float(sys.argv[7]), float(sys.argv[8])
OK = seq.STEP_SUCCESS


def journal(line: str) -> None:
    fd = os.open(JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + '\n').encode())
    finally:
        os.close(fd)


def work(ignore_term: bool = False) -> None:
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    name, sequence = os.environ['SEQUENT_STEP_NAME'], os.environ['SEQUENT_STEP_SEQUENCE']
    attempt = os.environ['SEQUENT_STEP_RECOVERY']
    journal(f'start {name} {sequence} {attempt} {os.getpid()} {os.getppid()} {time.time():.6f}')
    time.sleep(SLEEP)
    journal(f'done {name} {sequence} {attempt} {os.getpid()}')


def build() -> seq.Sequent:
    construct = 'thread' if KIND == 'threads' else 'process'
    config = {'task_construct': construct, 'shutdown_grace': GRACE,
              'LOGGING': {'logdir': LOGDIR, 'console': False}}
    flow = seq.Sequent(name='crashflow', store=STORE, config=config,
                       run_mode=seq.RUN_RECOVER if MODE == 'recover' else seq.RUN_RESTART, run_id=RUN_ID)
    if KIND == 'big':
        r1 = flow.add_step('r1', func=work)
        r2 = flow.add_step('r2', func=work, requires=((r1, OK),))
        r3 = flow.add_step('r3', func=work, requires=((r2, OK),))
        c = flow.add_step('c', repeats=[1, 2, 3], requires=((r3, OK),))
        p1 = c.add_step('p1', func=work)
        p2 = c.add_step('p2', func=work)
        c.add_step('d', func=work, requires=((p1, OK), (p2, OK)))
        c2 = flow.add_step('c2', repeats=[1, 2], requires=((c, OK),))
        q1 = c2.add_step('q1', func=work)
        c2.add_step('q2', func=work, requires=((q1, OK),))
        flow.add_step('z', func=work, requires=((c2, OK),))
    elif KIND == 'sleepers':
        s1 = flow.add_step('s1', func=work)
        s2 = flow.add_step('s2', func=work)
        flow.add_step('after', func=work, requires=((s1, OK), (s2, OK)))
        flow.add_step('late', func=work, delay=1.5)
    elif KIND == 'ignorer':
        stubborn = flow.add_step('stubborn', func=work, kwargs={'ignore_term': True})
        flow.add_step('after', func=work, requires=((stubborn, OK),))
    elif KIND == 'threads':
        flow.add_step('t1', func=work)
    else:
        raise SystemExit(f'unknown kind {KIND!r}')
    return flow


def sigterm_after_the_scheduler_loop() -> None:
    """Fault injection: SIGTERM arrives just as the scheduler's loop has ended (the last task done)."""
    from sequent.eventor import coordinator as scheduler

    loop = scheduler.Coordinator.run

    def run_then_sigterm(self):
        outcome = loop(self)
        os.kill(os.getpid(), signal.SIGTERM)
        return outcome

    scheduler.Coordinator.run = run_then_sigterm


if __name__ == '__main__':
    if os.environ.get('CRASHFLOW_SIGTERM_AFTER_LOOP'):
        sigterm_after_the_scheduler_loop()
    try:
        ok = build().run()
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0 if ok else 1)
