"""Where one steady run's time goes, part by part, and which system calls it makes.

    .venv/bin/python benchmarks/profile_run.py [--workers 4] [--runs 2000] [--strace]

Starts gunicorn (idle sync workers), lets the check find it, then times each part of a run
with wrappers around the functions that make it up (cheaper and less distorting than
cProfile, whose per-call cost inflates the parts made of many small calls). With --strace
(strace installed, root), counts the system calls of the same runs, per run.
"""

import argparse
import collections
import functools
import logging
import os
import re
import signal
import subprocess
import sys
import time

from bench_check import Gunicorn, SettledRun

from datadog_checks.base import AgentCheck
from datadog_checks.base.stubs import aggregator
from datadog_checks.gunicorn import check, discovery, sockets, workers

# Part name -> (owner, attribute). Nested parts (a submission inside submit_sockets) are
# subtracted from the part that calls them, so the parts add up to the run.
PARTS = {
    'discovery': (discovery.Discovery, 'run'),
    'worker fds': (check.GunicornCheck, 'read_fds'),
    'sockets (sock_diag)': (sockets.Sockets, 'sample'),
    'heartbeat ages': (check.GunicornCheck, 'heartbeat_ages'),
    'worker history': (workers.WorkerHistory, 'compare'),
    'version': (check.GunicornCheck, 'submit_version'),
    'submissions': None,  # every gauge, count, monotonic_count and service_check
}
SUBMISSIONS = ('gauge', 'count', 'monotonic_count', 'service_check')


class Timers:
    def __init__(self):
        self.totals = collections.Counter()
        self.stack = []

    def wrap(self, part, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            self.stack.append(0.0)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                inner = self.stack.pop()
                self.totals[part] += elapsed - inner
                if self.stack:
                    self.stack[-1] += elapsed

        return timed

    def install(self):
        for part, where in PARTS.items():
            if where is not None:
                owner, name = where
                setattr(owner, name, self.wrap(part, getattr(owner, name)))
        for name in SUBMISSIONS:
            setattr(AgentCheck, name, self.wrap('submissions', getattr(AgentCheck, name)))


def strace_counts(runs, run):
    """System calls per run, from `strace -c` attached to this process during `runs` runs."""
    output = f'/tmp/profile_run.strace.{os.getpid()}'
    tracer = subprocess.Popen(['strace', '-c', '-o', output, '-p', str(os.getpid())], stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached by then
    for _ in range(runs):
        run.prepare()
        run()
    tracer.send_signal(signal.SIGINT)
    tracer.wait()
    with open(output) as f:
        text = f.read()
    os.unlink(output)
    calls = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and re.fullmatch(r'[\d.]+', fields[0]) and fields[-1] != 'total':
            calls[fields[-1]] = int(fields[3])
    return {name: count / runs for name, count in sorted(calls.items(), key=lambda item: -item[1])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--workers', type=int, default=4)
    parser.add_argument('--runs', type=int, default=2000)
    parser.add_argument('--strace', action='store_true')
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    app = Gunicorn(args.workers).wait_ready()
    try:
        run = SettledRun()
        for _ in range(50):
            run.prepare()
            run()
        untimed = []
        for _ in range(args.runs):
            run.prepare()
            start = time.perf_counter()
            run()
            untimed.append(time.perf_counter() - start)
        timers = Timers()
        timers.install()
        start = time.perf_counter()
        for _ in range(args.runs):
            aggregator.reset()
            run()
        wrapped = (time.perf_counter() - start) / args.runs
        untimed.sort()
        print(f'{args.workers} idle sync workers: median run {1000 * untimed[len(untimed) // 2]:.3f} ms')
        print(f'with the part timers: {1000 * wrapped:.3f} ms a run, of which:')
        rest = wrapped - sum(timers.totals.values()) / args.runs
        for part, total in [*timers.totals.most_common(), ('the rest of run()', rest * args.runs)]:
            share = total / args.runs
            print(f'  {part:22s} {1e6 * share:8.1f} us  {100 * share / wrapped:5.1f} %')
        if args.strace:
            counts = strace_counts(min(args.runs, 500), run)
            print(f'system calls per run: {sum(counts.values()):.1f}')
            for name, count in counts.items():
                print(f'  {name:22s} {count:6.1f}')
    finally:
        app.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
