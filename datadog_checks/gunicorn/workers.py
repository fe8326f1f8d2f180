"""Per-worker state from samples: busy or idle, heartbeat, churn, memory and CPU.

A worker is `working` while it serves a request, whatever its CPU does: a worker waiting
on a database is busy. A worker that multiplexes connections (gthread, gevent, eventlet,
tornado, asgi, UvicornWorker: all hold an epoll instance) is working while a request is
in flight on a connection it holds; a connection kept alive between requests does not
make it working. A sync worker (no epoll: it blocks on one connection from accept to
close) is working while it holds any client connection. Telling either needs the
worker's fds (root or gunicorn's user); where they cannot be read the worker is
`working` when its CPU time advanced since the previous run, which misses workers
waiting on I/O. Nothing sleeps: the previous sample is the previous run.
"""

from typing import NamedTuple

import psutil

from . import procfs
from .metrics import IDLE, WORKING

HEARTBEAT_FILE = 'wgunicorn-'  # gunicorn's workertmp.py names each worker's unlinked temp file so
EPOLL = 'anon_inode:[eventpoll]'


class WorkerFds(NamedTuple):
    socket_fds: dict  # inode -> the number of an fd the worker holds that socket at
    heartbeat_fd: int  # -1 when the worker has none open (yet)
    multiplexes: bool  # holds an epoll instance: may serve, or keep alive, several connections at once
    heartbeat_time: float  # st_ctime of the heartbeat file, None without one


class PoolChange(NamedTuple):
    cpu_advanced: dict  # Proc.key -> bool, for workers seen at the previous run too
    started: int  # workers not seen at the previous run; None at the first run
    cpu_percent: float  # CPU of all workers over the elapsed time, % of one core; None at the first run


def read_worker_fds(worker, tables):
    """WorkerFds of one worker (a FdTables keeps what it needs between runs);
    psutil.AccessDenied where the Agent may not read its fds."""
    return tables.read(worker)


def heartbeat_age(fds, wall_now):
    """Seconds since the worker last touched its heartbeat file (None without one).
    gunicorn moves the file's ctime at every notify, whatever the version."""
    if fds.heartbeat_time is None:
        return None
    return max(0.0, wall_now - fds.heartbeat_time)


class FdTables:
    """The workers' fds and heartbeat times, read through /proc/PID/fd folders kept open between
    runs. A process's fd table and its heartbeat file change only by its own system calls: a
    single-threaded worker (every sync worker) whose run time has not moved since the previous
    run has the same fds and heartbeat, and is not read again. An idle pool then costs one small
    read per worker instead of a readlink per fd."""

    def __init__(self, root='/proc'):
        self.reader = procfs.FdReader(root)
        self.run_times = procfs.RunTimeReader(root)

        # State kept between runs.
        self.seen = {}  # Proc.key -> (its run time in ns when read, its WorkerFds)
        self.read_now = set()  # Proc.key of the workers asked for at this run

    def read(self, worker):
        self.read_now.add(worker.key)
        run_time = self._run_time(worker) if worker.stat.num_threads == 1 else None
        known = self.seen.get(worker.key)
        if run_time is not None and known is not None and known[0] == run_time:
            return known[1]
        links = self.reader.read_fd_links(worker.key)
        heartbeat = next((fd for fd, target in links.items() if HEARTBEAT_FILE in target), -1)
        changed = self._changed(worker, heartbeat)
        fds = WorkerFds(procfs.socket_fds(links), heartbeat, EPOLL in links.values(), changed)
        self.seen[worker.key] = (run_time, fds)
        return fds

    def sweep(self):
        """Forget the workers not asked for since the previous sweep: call once a run."""
        self.seen = {key: value for key, value in self.seen.items() if key in self.read_now}
        self.read_now = set()
        self.reader.sweep()
        self.run_times.sweep()

    def _run_time(self, worker):
        try:
            return self.run_times.read_run_time(worker.pid)
        except (psutil.AccessDenied, procfs.ProcfsError):
            return None  # unknown: its fds are read at every run

    def _changed(self, worker, heartbeat):
        if heartbeat < 0:
            return None
        try:
            return self.reader.fd_change_time(worker.key, heartbeat)
        except (psutil.Error, procfs.ProcfsError):
            return None  # closed or unreadable since the listing: no age this run


def worker_states(workers, fds_by_key, connections, cpu_advanced):
    """Proc.key -> WORKING or IDLE. `connections`: inode -> sockets.Connection the workers hold.
    A worker whose fds are unknown is judged by its CPU; one seen for the first time then
    counts as idle: there is no evidence yet that it works."""
    states = {}
    for worker in workers:
        fds = fds_by_key.get(worker.key)
        if fds is not None:
            busy = is_serving(fds, connections)
        else:
            busy = cpu_advanced.get(worker.key, False)
        states[worker.key] = WORKING if busy else IDLE
    return states


def is_serving(fds, connections):
    held = held_connections(fds, connections)
    if not fds.multiplexes:
        return bool(held)
    return any(connection.in_flight is not False for connection in held)


def requests_in_flight(fds_by_key, connections):
    """Requests in flight over all workers: connections the kernel says carry one, and those
    it cannot tell about (Unix sockets, another network namespace), which count as busy."""
    held = (connection for fds in fds_by_key.values() for connection in held_connections(fds, connections))
    return sum(1 for connection in held if connection.in_flight is not False)


def held_connections(fds, connections):
    return [connections[inode] for inode in fds.socket_fds if inode in connections]


class WorkerHistory:
    """What the previous run saw of the workers, to compare each run against."""

    def __init__(self):
        self.cpu_ticks = None  # Proc.key -> utime + stime at the previous run; None before the first run
        self.sampled_at = None  # time.monotonic() of the previous run

    def compare(self, workers, now):
        current = {worker.key: worker.stat.cpu_ticks for worker in workers}
        previous, sampled_at = self.cpu_ticks, self.sampled_at
        self.cpu_ticks, self.sampled_at = current, now
        if previous is None:
            return PoolChange({}, None, None)
        used_ticks = {key: ticks - previous[key] for key, ticks in current.items() if key in previous}
        started = len(current) - len(used_ticks)
        elapsed = now - sampled_at
        percent = 100.0 * sum(used_ticks.values()) / procfs.CLOCK_TICKS / elapsed if elapsed > 0 else None
        return PoolChange({key: used > 0 for key, used in used_ticks.items()}, started, percent)
