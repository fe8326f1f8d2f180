"""Steady-state cost of one check run, side by side with the bundled check's approach.

    python3 dev.py bench

Starts a real gunicorn (4 sync workers), then times, in this one process:
- ours: `GunicornCheck.run()`, after a first run has found the master;
- the reference: what the Agent's bundled check does every run — read the command
  line of every process to find the master, sample its workers' CPU times, sleep
  0.1 s, sample again;
then starts 2,000 idle processes and times ours again; last, with 8 workers and
1,000 unrelated sockets in /proc/net/tcp. Prints medians and whether each target
holds; exits 1 when one does not.
"""

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

from datadog_checks.base import AgentCheck
from datadog_checks.base.stubs import aggregator
from datadog_checks.gunicorn import GunicornCheck

APP_DIR = Path(__file__).resolve().parent.parent / 'tests' / 'app'
NAME = 'bench'


class BundledApproach(AgentCheck):
    """The bundled check's way, written here as a yardstick: full cmdline scan and a 0.1 s CPU sample."""

    def check(self, _):
        title = f'gunicorn: master [{self.instance["proc_name"]}]'
        masters = []
        for proc in psutil.process_iter():
            try:
                if ' '.join(proc.cmdline()).strip() == title:
                    masters.append(proc)
            except psutil.Error:
                pass
        workers = [child for master in masters for child in master.children()]
        before = {w.pid: sum(w.cpu_times()[:2]) for w in workers}
        time.sleep(0.1)
        working = sum(1 for w in workers if sum(w.cpu_times()[:2]) > before[w.pid])
        tags = [f'app:{self.instance["proc_name"]}']
        self.gauge('gunicorn.workers', working, tags=[*tags, 'state:working'])
        self.gauge('gunicorn.workers', len(workers) - working, tags=[*tags, 'state:idle'])
        self.service_check('gunicorn.is_running', self.OK if workers else self.CRITICAL, tags=tags)


def median_ms(check, runs):
    check.run()  # the first run finds the master; steady state starts after it
    samples = []
    for _ in range(runs):
        aggregator.reset()
        start = time.perf_counter()
        error = check.run()
        samples.append(time.perf_counter() - start)
        if error:
            raise SystemExit(f'{type(check).__name__} failed: {error}')
    return 1000 * statistics.median(samples)


def unrelated_sockets(count):
    """`count` ESTABLISHED TCP sockets (both ends of count/2 loopback connections) that
    have nothing to do with gunicorn, for the check to wade through in /proc/net/tcp."""
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(count)
    sockets = [listener]
    for _ in range(count // 2):
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        sockets += [client, server]
    return sockets


def start_gunicorn(workers):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, '-m', 'gunicorn', '--name', NAME, '--workers', str(workers), '--bind', f'127.0.0.1:{port}']
        + ['--chdir', str(APP_DIR), '--no-control-socket', '--log-level', 'warning', 'sample:application']
    )
    deadline = time.monotonic() + 30
    while len(psutil.Process(server.pid).children()) < workers:
        if time.monotonic() > deadline:
            raise SystemExit('gunicorn did not start its workers in 30 s')
        time.sleep(0.1)
    time.sleep(0.5)  # let the workers finish booting, so the runs sample idle workers
    return server


def settle(processes, timeout=60):
    """Wait until every new process sleeps in its own program: 2,000 forks and execs still
    in flight would compete for the CPU with the runs being timed."""
    deadline = time.monotonic() + timeout
    pending = [psutil.Process(p.pid) for p in processes]
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if p.status() != psutil.STATUS_SLEEPING or p.name() != 'sleep']
        time.sleep(0.2)
    time.sleep(1)


def stop(processes):
    for proc in processes:
        proc.send_signal(signal.SIGTERM)
    for proc in processes:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=500, help='timed runs of our check per scenario')
    parser.add_argument('--reference-runs', type=int, default=15, help='timed runs of the reference')
    parser.add_argument('--idle-processes', type=int, default=2000)
    parser.add_argument('--unrelated-sockets', type=int, default=1000)
    args = parser.parse_args()

    instance = {'proc_name': NAME}
    server = start_gunicorn(workers=4)
    idle = []
    try:
        ours = median_ms(GunicornCheck('gunicorn', {}, [instance]), args.runs)
        reference = median_ms(BundledApproach('gunicorn', {}, [instance]), args.reference_runs)

        idle = [subprocess.Popen(['sleep', '3600']) for _ in range(args.idle_processes)]
        settle(idle)
        ours_crowded = median_ms(GunicornCheck('gunicorn', {}, [instance]), args.runs)
        reference_crowded = median_ms(BundledApproach('gunicorn', {}, [instance]), 5)
    finally:
        stop(idle + [server])

    server = start_gunicorn(workers=8)
    sockets = unrelated_sockets(args.unrelated_sockets)
    try:
        ours_sockets = median_ms(GunicornCheck('gunicorn', {}, [instance]), args.runs)
    finally:
        for sock in sockets:
            sock.close()
        stop([server])

    results = [
        ('median run, 4 workers', ours, 2.0, 'ms', ours <= 2.0),
        ('speed-up over the reference', reference / ours, 50, 'x', reference / ours >= 50),
        (
            f'median with {args.idle_processes} idle processes, vs without',
            ours_crowded / ours,
            1.5,
            'x',
            ours_crowded / ours <= 1.5,
        ),
        (
            f'median run, 8 workers, {args.unrelated_sockets} unrelated sockets',
            ours_sockets,
            3.0,
            'ms',
            ours_sockets <= 3.0,
        ),
    ]
    print(f'ours:      {ours:8.3f} ms median of {args.runs} runs')
    print(f'reference: {reference:8.3f} ms median of {args.reference_runs} runs')
    print(f'with {args.idle_processes} idle processes: ours {ours_crowded:.3f} ms, ', end='')
    print(f'reference {reference_crowded:.3f} ms')
    print(f'8 workers and {args.unrelated_sockets} unrelated sockets: ours {ours_sockets:.3f} ms')
    print()
    for label, value, target, unit, ok in results:
        bound = '<=' if unit == 'ms' or 'vs without' in label else '>='
        print(f'{"PASS" if ok else "FAIL"}  {label}: {value:.2f}{unit} (target {bound} {target}{unit})')
    return 0 if all(ok for *_, ok in results) else 1


if __name__ == '__main__':
    sys.exit(main())
