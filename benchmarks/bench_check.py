"""Cost of the check's runs in every scenario of the performance targets, side by side with floors.

    python3 dev.py bench                 # every scenario; exits 1 when a target fails
    python3 dev.py bench --only 1,3      # some scenarios (numbers as printed)

Everything runs in this one process against real gunicorn masters, real loopback connections
and real idle processes. In each scenario the contenders are timed round after round, in
turn (the order rotating), so that a noisy neighbour on the machine slows them all alike:
- ours: `GunicornCheck.run()`, metric submissions to the Agent's stub aggregator included
  (with its test-time check of tag names off: the Agent's C binding makes none); in the
  steady scenarios, of a check past its first minute (`SettledRun`);
- the floor (floors.py): the least work the scenario needs, written plainly: the /proc files
  a run cannot do without, and one sock_diag dump; with fresh opens, and with the files and
  the netlink socket kept open (`floor, kept open`);
- the bundled check's approach where it applies (`BundledApproach`): a command-line scan
  of every process and a 0.1 s CPU sample.
Medians are printed with their interquartile range, to show how noisy the machine was.

Phases: (1) 4 idle sync workers; (2) 64 idle sync workers; then 10,000 ESTABLISHED sockets
(5,000 loopback connections to a throwaway listener) for (3) busy workers; then 2,000 idle
processes as well for (7) a first run, (4) a new master, (5) discovery over hours of runs
15 s apart, the hourly full scan included, and (6) no master; last, without either crowd,
(8) memory over 10,000 runs with worker churn.
"""

import argparse
import contextlib
import gc
import logging
import os
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import floors
import psutil

from datadog_checks.base import AgentCheck
from datadog_checks.base.stubs import aggregator
from datadog_checks.gunicorn import GunicornCheck, procfs, sockdiag
from datadog_checks.gunicorn.config_models.defaults import instance_rescan_interval
from datadog_checks.gunicorn.discovery import FULL_SCAN_INTERVAL

# The stub aggregator checks every submission's tag names against a list, for the tests; the
# Agent's aggregator, which it stands in for, does not: left on, it adds a tenth to a steady run.
os.environ['DDEV_SKIP_GENERIC_TAGS_CHECK'] = '1'

APP_DIR = Path(__file__).resolve().parent.parent / 'tests' / 'app'
NAME = 'bench'
ABSENT_NAME = 'bench-absent'
MANY_NAME = 'bench-64'
CHECK_INTERVAL = 15.0  # the Agent's default: what "over many runs" means in scenario 5
RESCAN_INTERVAL = instance_rescan_interval()
MS = 1000.0
# Leave out what tracemalloc and this benchmark allocate themselves.
SNAPSHOT_FILTERS = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]


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


class Run:
    """One check instance, called once per timed run; its aggregator is emptied before each."""

    def __init__(self, check_class=GunicornCheck, name=NAME):
        self.check = check_class('gunicorn', {}, [{'proc_name': name}])

    def prepare(self):
        aggregator.reset()

    def __call__(self):
        error = self.check.run()
        if error:
            raise SystemExit(f'{type(self.check).__name__} failed: {error}')


def workers_reported(run=None):
    """(working, idle) as the last run submitted them; with `run`, as one more run submits them."""
    if run is not None:
        run.prepare()
        run()
    counts = {}
    for metric in aggregator.metrics('gunicorn.workers'):
        for tag in metric.tags:
            if tag.startswith('state:'):
                counts[tag[6:]] = counts.get(tag[6:], 0) + metric.value
    return int(counts.get('working', 0)), int(counts.get('idle', 0))


# Timing.


def side_by_side(contenders, rounds, between=None, warmup=3):
    """name -> seconds of each call, the contenders called in turn `rounds` times; `between()`
    runs untimed before each round, a contender's `prepare()` untimed before each call."""
    for _ in range(warmup):
        if between:
            between()
        for contender in contenders.values():
            getattr(contender, 'prepare', lambda: None)()
            contender()
    samples = {name: [] for name in contenders}
    names = list(contenders)
    for index in range(rounds):
        if between:
            between()
        turn = names[index % len(names) :] + names[: index % len(names)]
        for name in turn:
            contender = contenders[name]
            getattr(contender, 'prepare', lambda: None)()
            start = time.perf_counter()
            contender()
            samples[name].append(time.perf_counter() - start)
    return samples


def median_ms(samples):
    return MS * statistics.median(samples)


def spread(samples):
    """Median and interquartile range, in ms."""
    if len(samples) < 4:
        return f'{median_ms(samples):9.3f} ms  ({len(samples)} runs: {", ".join(f"{MS * s:.3g}" for s in samples)})'
    q1, _, q3 = statistics.quantiles(samples, n=4)
    return f'{median_ms(samples):9.3f} ms  (IQR {MS * q1:.3f}-{MS * q3:.3f}, {len(samples)} runs)'


class FakeClock:
    """time.monotonic() as the check sees it when the Agent runs it every CHECK_INTERVAL
    seconds: the real clock plus CHECK_INTERVAL for every run so far. The check's own code
    reads time.monotonic() through the `time` module, so patching the module is enough."""

    def __init__(self):
        self.real = time.monotonic
        self.offset = 0.0

    def __call__(self):
        return self.real() + self.offset

    @contextlib.contextmanager
    def installed(self):
        time.monotonic = self
        try:
            yield self
        finally:
            time.monotonic = self.real


class SettledRun(Run):
    """A Run of a check that has been running for a while. At its first run a check finds the
    processes started in the last `rescan_interval` seconds that may still exec gunicorn or
    title themselves a master (this benchmark, `python`, and the shells that started it), and
    reads their comm again at every run until that time is up. A steady state is past that:
    after the first run (untimed), this run's clock is a minute and a run later."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.clock = FakeClock()
        self.prepare()
        super().__call__()
        self.clock.offset = RESCAN_INTERVAL + CHECK_INTERVAL

    def __call__(self):
        with self.clock.installed():
            super().__call__()


class ClockedRun(Run):
    """A Run that is CHECK_INTERVAL seconds after the previous one, on a FakeClock."""

    def __init__(self, clock, **kwargs):
        super().__init__(**kwargs)
        self.clock = clock

    def __call__(self):
        self.clock.offset += CHECK_INTERVAL
        with self.clock.installed():
            super().__call__()


# Processes and sockets.


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Gunicorn:
    """A gunicorn master with `workers` sync workers of tests/app/sample.py, on a 127.0.0.1 port."""

    def __init__(self, workers, name=NAME, args=()):
        self.port = free_port()
        self.expected = workers
        self.popen = subprocess.Popen(
            [sys.executable, '-m', 'gunicorn', '--name', name, '--workers', str(workers)]
            + ['--bind', f'127.0.0.1:{self.port}', '--chdir', str(APP_DIR), '--no-control-socket']
            + ['--log-level', 'warning', *args, 'sample:application']
        )
        self.pid = self.popen.pid
        self.master_title = f'gunicorn: master [{name}]'

    def workers(self):
        pids = []
        for pid in procfs.read_children(self.pid):
            try:
                if procfs.read_title(pid).startswith('gunicorn: worker ['):
                    pids.append(pid)
            except psutil.Error:
                pass
        return pids

    def wait_ready(self, timeout=60):
        """Until the master wears its title and every worker is up and idle."""
        deadline = time.monotonic() + timeout
        while procfs.read_title(self.pid) != self.master_title or len(self.workers()) < self.expected:
            if time.monotonic() > deadline or self.popen.poll() is not None:
                raise SystemExit(f'gunicorn did not start its {self.expected} workers in {timeout} s')
            time.sleep(0.05)
        # Let the workers finish importing the app, so that the runs sample idle workers.
        time.sleep(0.5 + 0.02 * self.expected)
        return self

    def stop(self):
        stop([self.popen])


def stop(processes):
    for proc in processes:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    for proc in processes:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard < needed and os.geteuid() == 0:
        hard = needed
    if hard < needed:
        raise SystemExit(f'{needed} open files needed, RLIMIT_NOFILE allows {hard}; run as root or raise it')
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def reset_on_close(sock):
    """Close with an RST: no TIME_WAIT left behind, and a worker reading the socket wakes at once."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    sock.close()


class UnrelatedSockets:
    """`count` ESTABLISHED TCP sockets of another app: both ends of count/2 loopback connections
    to a throwaway listener."""

    def __init__(self, count):
        raise_fd_limit(count + 4096)
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(1024)
        self.sockets = []
        try:
            for _ in range(count // 2):
                client = socket.create_connection(self.listener.getsockname())
                server, _ = self.listener.accept()
                self.sockets += [client, server]
        except BaseException:
            self.close()
            raise

    def close(self):
        for sock in self.sockets:
            reset_on_close(sock)
        self.sockets = []
        self.listener.close()


class BusyClients:
    """Keeps every sync worker of `app` holding a connection accepted since the previous run:
    `renew()` drops the previous connections and opens new ones that send half a request, so
    each worker blocks reading the rest."""

    def __init__(self, app):
        self.app = app
        self.clients = []

    def renew(self):
        for client in self.clients:
            reset_on_close(client)
        self.clients = []
        for _ in range(self.app.expected):
            client = socket.create_connection(('127.0.0.1', self.app.port))
            client.sendall(b'GET /sleep HTTP/1.1\r\nHost: bench\r\n')
            self.clients.append(client)
        # Until every worker accepted one and sleeps reading it, as the Agent finds them.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (self._queued() or not self._all_asleep()):
            time.sleep(0.0005)

    def _all_asleep(self):
        return all(procfs.read_stat(pid).state == 'S' for pid in self.app.workers())

    def _queued(self):
        listen = sockdiag.dump_tcp(socket.AF_INET, {procfs.TCP_LISTEN}, {self.app.port})
        return sum(sock.rx_queue for sock in listen)

    def close(self):
        for client in self.clients:
            reset_on_close(client)
        self.clients = []


def start_idle_processes(count):
    processes = [subprocess.Popen(['sleep', '3600']) for _ in range(count)]
    # Until every one sleeps in its own program: forks and execs still in flight would compete
    # for the CPU with the runs being timed.
    deadline = time.monotonic() + 60
    pending = [psutil.Process(p.pid) for p in processes]
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if p.status() != psutil.STATUS_SLEEPING or p.name() != 'sleep']
        time.sleep(0.2)
    time.sleep(1)
    return processes


def open_fds():
    return len(os.listdir('/proc/self/fd'))


# Results.


class Report:
    def __init__(self):
        self.rows = []

    def scenario(self, number, title):
        print(f'\n[{number}] {title}', flush=True)

    def line(self, label, samples):
        print(f'    {label:34s}{spread(samples)}', flush=True)

    def note(self, text):
        print(f'    {text}', flush=True)

    def target(self, number, label, ok, measured):
        self.rows.append((number, label, ok, measured))
        print(f'    {"PASS" if ok else "FAIL"}  {label}: {measured}', flush=True)

    def summary(self):
        print('\nTargets:')
        for number, label, ok, measured in self.rows:
            print(f'  {"PASS" if ok else "FAIL"}  [{number}] {label}: {measured}')
        failed = sum(1 for *_, ok, _ in self.rows if not ok)
        print(f'\n{len(self.rows) - failed} of {len(self.rows)} targets hold.')
        return 1 if failed else 0


# Scenarios.


def steady(report, app, args):
    report.scenario(1, '4 idle sync workers, steady, submissions included')
    samples = idle_side_by_side(report, app, SettledRun(), args.rounds, args.bundled_runs)
    median, floor = median_ms(samples['ours']), median_ms(samples['floor'])
    report.target(1, 'steady run, 4 idle workers <= 0.3 ms', median <= 0.3, f'{median:.3f} ms')
    report.target(1, 'steady run <= 3x its floor', median <= 3 * floor, f'{median / floor:.2f}x')
    return median


def many_workers(report, args):
    report.scenario(2, '64 idle sync workers')
    # An app of its own name: the 4 workers of the other app stay out of this one's runs.
    app = Gunicorn(64, name=MANY_NAME).wait_ready()
    try:
        samples = idle_side_by_side(
            report, app, SettledRun(name=MANY_NAME), args.rounds // 2, max(3, args.bundled_runs // 3)
        )
    finally:
        app.stop()
    median = median_ms(samples['ours'])
    report.target(2, 'steady run, 64 idle workers <= 2 ms', median <= 2.0, f'{median:.3f} ms')


def idle_side_by_side(report, app, ours, rounds, bundled_runs):
    """Steady runs of `ours` on the idle `app`, timed in turns with the floor (fresh opens and
    files kept open) and beside the bundled approach; reported, and returned by contender."""
    pids = [app.pid, *app.workers()]
    fresh, kept = floors.SteadyFloor(pids), floors.SteadyFloor(pids, kept=True)
    try:
        ours()
        samples = side_by_side({'ours': ours, 'floor': fresh, 'floor, kept open': kept}, rounds)
        bundled = side_by_side({'bundled': Run(BundledApproach)}, bundled_runs, warmup=1)['bundled']
    finally:
        fresh.close()
        kept.close()
    report.line('ours', samples['ours'])
    report.line(f'floor: stat x{len(pids)} + LISTEN dump', samples['floor'])
    report.line('floor, kept open', samples['floor, kept open'])
    report.line('bundled approach', bundled)
    report.note(f'ours reported (working, idle) = {workers_reported(ours)}')
    return samples


def busy(report, app, args):
    report.scenario(3, f'4 busy workers, each holding a new connection every run, {args.sockets} other sockets')
    clients = BusyClients(app)
    floor = floors.BusyFloor(app.pid, app.workers(), app.port)
    contenders = {'ours': None, 'floor': floor}
    try:
        contenders['floor, pidfd_getfd'] = floors.PidfdFloor(app.pid, app.workers(), app.port)
    except OSError as e:
        report.note(f'no pidfd_getfd floor: {e}')
    ours = SettledRun()
    seen = []

    def counted():
        ours()
        seen.append(workers_reported()[0])

    counted.prepare = ours.prepare

    def unfiltered():
        # What listing connections cost when Python walks the whole table to find the app's.
        return sockdiag.dump_tcp(socket.AF_INET, {procfs.TCP_ESTABLISHED, procfs.TCP_CLOSE_WAIT}, None, info=True)

    bundled = Run(BundledApproach)
    try:
        ours()
        contenders.update(ours=counted)
        samples = side_by_side(contenders, args.rounds // 3, between=clients.renew)
        # Apart: its 10,000 objects a call would set off the garbage collector in the others' turns.
        samples.update(side_by_side({'unfiltered': unfiltered}, args.bundled_runs, warmup=1))
        samples.update(side_by_side({'bundled': bundled}, 3, between=clients.renew, warmup=0))
        bundled_saw = workers_reported()
    finally:
        clients.close()
        for each in contenders.values():
            getattr(each, 'close', lambda: None)()
    report.line('ours', samples['ours'])
    report.line('floor: steady + port dump + fds', samples['floor'])
    if 'floor, pidfd_getfd' in samples:
        report.line('floor, pidfd_getfd, no dump', samples['floor, pidfd_getfd'])
    report.line('dump of every connection, unfiltered', samples['unfiltered'])
    report.line('bundled approach', samples['bundled'])
    report.note(f'ours saw all {app.expected} workers working in {seen.count(app.expected)} of {len(seen)} runs')
    report.note(f'the bundled approach reported (working, idle) = {bundled_saw} at its last run')
    median = median_ms(samples['ours'])
    report.target(3, 'busy run, 4 workers, 10,000 other sockets <= 1 ms', median <= 1.0, f'{median:.3f} ms')


def first_run(report, app, args):
    report.scenario(7, f'first run, {args.idle_processes} extra processes and {args.sockets} other sockets')
    fresh_runs = []
    floor = floors.FirstRunFloor([app.pid, *app.workers()])

    class FirstRun:
        def prepare(self):
            aggregator.reset()
            fresh_runs.append(Run())

        def __call__(self):
            fresh_runs[-1]()

    try:
        samples = side_by_side({'ours': FirstRun(), 'floor': floor}, args.first_runs, warmup=1)
        bundled = side_by_side({'bundled': Run(BundledApproach)}, max(3, args.bundled_runs // 5), warmup=0)
    finally:
        floor.close()
    report.line('ours', samples['ours'])
    report.line('floor: comm of every pid + steady', samples['floor'])
    report.line('bundled approach', bundled['bundled'])
    report.note(f'ours reported (working, idle) = {workers_reported(Run())}')
    median = median_ms(samples['ours'])
    report.target(7, 'first run, 2,000 processes, 10,000 sockets <= 20 ms', median <= 20.0, f'{median:.3f} ms')


def new_master(report, app):
    report.scenario(4, 'a second master with the configured name, started beside the known one')
    ours = Run()
    for _ in range(3):
        ours.prepare()
        ours()
    known = sum(workers_reported())
    second = Gunicorn(2)
    try:
        second.wait_ready()
        ours.prepare()
        start = time.perf_counter()
        ours()
        elapsed = time.perf_counter() - start
        counted = sum(workers_reported())
    finally:
        second.stop()
    report.note(f'workers before: {known}; at the next run: {counted} (expected {known + second.expected})')
    report.line('that run', [elapsed])
    report.target(
        4,
        'a new master is reported at the next run',
        counted == known + second.expected,
        f'{counted} workers counted, {known + second.expected} running',
    )


def discovery_over_time(report, steady_ms, args):
    runs = round(FULL_SCAN_INTERVAL / CHECK_INTERVAL)
    report.scenario(
        5,
        f'discovery over many runs, {args.idle_processes} extra processes: {args.hours} hours of runs '
        f'{CHECK_INTERVAL:.0f} s apart ({runs} runs an hour, the hourly full scan among them)',
    )
    clock = FakeClock()
    ours = ClockedRun(clock)
    ours()  # the first run: its full scan is scenario 7's
    hourly, slowest, every_run = [], [], []
    for _ in range(args.hours):
        samples = side_by_side({'ours': ours}, runs, warmup=0)['ours']
        hourly.append(sum(samples) / runs)
        slowest.append(f'{MS * max(samples):.1f}')
        every_run += samples
    report.line(f'ours, each run {CHECK_INTERVAL:.0f} s after the previous', every_run)
    report.note(f'the slowest run of each hour (its full scan): {", ".join(slowest)} ms')
    report.line('ours, mean run of each hour', hourly)
    amortized = median_ms(hourly)
    report.note(f'steady run without the extra processes (scenario 1): {steady_ms:.3f} ms')
    report.target(
        5,
        'discovery amortized <= 1.5x the steady run',
        amortized <= 1.5 * steady_ms,
        f'{amortized:.3f} ms a run over an hour, {amortized / steady_ms:.2f}x',
    )


def no_master(report, args):
    report.scenario(6, f'no master running, {args.idle_processes} extra processes, runs {CHECK_INTERVAL:.0f} s apart')
    clock = FakeClock()
    ours = ClockedRun(clock, name=ABSENT_NAME)
    samples = side_by_side({'ours': ours, 'floor': floors.list_proc}, args.absent_runs, warmup=1)
    bundled = side_by_side({'bundled': Run(BundledApproach, ABSENT_NAME)}, 3, warmup=0)
    report.line('ours', samples['ours'])
    report.line('floor: list /proc', samples['floor'])
    report.line('bundled approach', bundled['bundled'])
    median = median_ms(samples['ours'])
    report.target(6, 'no master, 2,000 processes <= 3 ms a run', median <= 3.0, f'{median:.3f} ms')


def settle(app, run):
    """Until the pool has had its size for a while (a signal or --max-requests may have just
    replaced a worker), then two runs: the check then keeps files open for the processes
    running and for nothing else, so that two checkpoints compare alike."""
    deadline, steady_since = time.monotonic() + 30, None
    while steady_since is None or time.monotonic() - steady_since < 0.3:
        if time.monotonic() > deadline:
            raise SystemExit(f'gunicorn did not settle at {app.expected} workers in 30 s')
        if len(app.workers()) == app.expected:
            steady_since = steady_since or time.monotonic()
        else:
            steady_since = None
        time.sleep(0.02)
    for _ in range(2):
        run.prepare()
        run()


def memory(report, args):
    report.scenario(8, f'memory over {args.memory_runs} runs, workers churning (TTIN/TTOU, --max-requests 25)')
    app = Gunicorn(4, args=('--max-requests', '25')).wait_ready()
    ours = Run()
    checkpoints, snapshots = [], []
    # Worker pids now, and how many new ones appeared, to show the churn (kept to a count: a
    # set of every pid seen would grow, and be counted as the check's growth).
    workers, replaced = set(app.workers()), 0
    own = 0  # bytes traced that this benchmark holds
    try:
        ours()
        tracemalloc.start()
        start = time.perf_counter()
        for index in range(1, args.memory_runs + 1):
            if index % 5 == 0:
                # A request now and then: new connections, and workers recycled by --max-requests.
                with contextlib.suppress(OSError), socket.create_connection(('127.0.0.1', app.port), 5) as client:
                    client.sendall(b'GET / HTTP/1.0\r\n\r\n')
                    client.recv(4096)
            if index % 100 == 0:
                os.kill(app.pid, signal.SIGTTIN if index % 200 else signal.SIGTTOU)
                current = set(app.workers())
                replaced += len(current - workers)
                workers = current
            ours.prepare()
            ours()
            if index % (args.memory_runs // 10) == 0:
                settle(app, ours)
                gc.collect()
                checkpoints.append((index, tracemalloc.get_traced_memory()[0] - own, open_fds()))
                if len(checkpoints) in (2, 10):
                    # The snapshot kept for the comparison is this benchmark's memory, not the check's.
                    before = tracemalloc.get_traced_memory()[0]
                    snapshots.append(tracemalloc.take_snapshot().filter_traces(SNAPSHOT_FILTERS))
                    own += tracemalloc.get_traced_memory()[0] - before
        elapsed = time.perf_counter() - start
    finally:
        tracemalloc.stop()
        app.stop()
    for index, traced, fds in checkpoints:
        report.note(f'after {index:6d} runs: {traced / 1024:8.1f} KiB traced, {fds} fds open')
    report.note(f'{args.memory_runs} runs in {elapsed:.1f} s under tracemalloc; {replaced} new workers seen')
    if len(snapshots) == 2:
        for stat in snapshots[1].compare_to(snapshots[0], 'lineno')[:3]:
            report.note(f'  grew most: {stat}')
    # From the second checkpoint on: the first includes what a check fills once (caches, imports).
    _, base, base_fds = checkpoints[1]
    _, last, last_fds = checkpoints[-1]
    growth = (last - base) / 1024
    report.target(
        8,
        'memory flat over the runs (< 64 KiB growth, no fd growth)',
        growth < 64 and last_fds <= base_fds,
        f'{growth:+.1f} KiB, {last_fds - base_fds:+d} fds',
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', default='', help='comma-separated scenario numbers (default: all)')
    parser.add_argument('--rounds', type=int, default=600, help='timed rounds of scenario 1 (others scale from it)')
    parser.add_argument('--bundled-runs', type=int, default=15)
    parser.add_argument('--idle-processes', type=int, default=2000)
    parser.add_argument('--sockets', type=int, default=10000, help='ESTABLISHED sockets of another app')
    parser.add_argument('--first-runs', type=int, default=9)
    parser.add_argument('--hours', type=int, default=5, help='scenario 5: hours of runs, each amortized on its own')
    parser.add_argument('--absent-runs', type=int, default=20)
    parser.add_argument('--memory-runs', type=int, default=10000)
    args = parser.parse_args()
    only = {int(n) for n in args.only.split(',') if n}

    def wanted(*numbers):
        return not only or bool(only & set(numbers))

    # The check logs what the Agent would show (no master running, ...): not benchmark output.
    logging.disable(logging.WARNING)
    report = Report()
    started = time.monotonic()
    steady_ms = None
    app = Gunicorn(4).wait_ready()
    sockets, crowd = None, []
    try:
        if wanted(1, 5):
            steady_ms = steady(report, app, args)
        if wanted(2):
            many_workers(report, args)
        if wanted(3, 7, 4, 5, 6):
            sockets = UnrelatedSockets(args.sockets)
        if wanted(3):
            busy(report, app, args)
        if wanted(7, 4, 5, 6):
            crowd = start_idle_processes(args.idle_processes)
        if wanted(7):
            first_run(report, app, args)
        if wanted(4):
            new_master(report, app)
        if wanted(5):
            discovery_over_time(report, steady_ms, args)
        if wanted(6):
            no_master(report, args)
    finally:
        stop(crowd)
        if sockets:
            sockets.close()
        app.stop()
    if wanted(8):
        memory(report, args)
    print(f'\n{time.monotonic() - started:.0f} s in all.')
    return report.summary()


if __name__ == '__main__':
    sys.exit(main())
