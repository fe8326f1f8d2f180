"""Which gunicorn masters of one app are running, and which of their children are HTTP workers.

A master is found by its title, `gunicorn: master [NAME]`, and remembered (pid and start time),
so that a run reads only the masters it knows and their children. New masters are looked for
among the processes started since the previous run, which the kernel's counters tell apart:
- in the Agent's own pid namespace, /proc/loadavg names the last pid given out, and pids are
  given in turn: the new ones lie after the previous run's last pid, up to this one's (past
  pid_max, numbering starts again from the bottom);
- for a /proc of another pid namespace (a containerized Agent reading the host's), the kernel
  only counts forks: when the count moved, /proc is listed, and the pids not listed before are new.
Each new process is read once. gunicorn titles its master a moment after it starts (after
loading the app, with --preload), and a script may exec gunicorn after some work of its own,
so a new process not yet titled is read again at every run for `rescan_interval` seconds.
A full scan of the table (every process's 15-character comm) finds the masters running at the
first run, and is repeated hourly for what the counters cannot show: a process titled later
than that, or a pid given again after a whole round of the numbers between two runs. It comes
sooner when they cannot tell which pids are new (unreadable, or another namespace's numbering
started again), and when more new processes came than can be watched.

Only a master's children are its workers, and only one master may be found under another:
the one USR2 starts, titled `master [NAME.2]` under `master [NAME]`. A top-level
`master [NAME.2]` is another app, started with that name, unless it was seen as such a
successor: between the old master's exit and its own retitling (one gunicorn loop), the
promoted master is a top-level `master [NAME.2]` that serves the app.
"""

import time
from typing import NamedTuple

import psutil

from . import containers, procfs

# /proc/PID/comm keeps 15 characters of the title: a cheap filter before reading cmdline.
MASTER_COMM = 'gunicorn: maste'
GUNICORN_TITLE_PREFIX = 'gunicorn: '
MASTER_TITLE = 'gunicorn: master [{}]'
MASTER_TITLE_PREFIX = 'gunicorn: master ['
WORKER_TITLE_PREFIX = 'gunicorn: worker ['
# gunicorn names the master started by USR2 after the old one's proc_name plus this suffix.
UPGRADE_SUFFIX = '.2'
# What a process may show as comm before it is titled a gunicorn master: its interpreter's name
# or its script's (`gunicorn`, as the comm of every titled gunicorn process starts); once
# gunicorn imported setproctitle, the first 15 characters of the interpreter's path (seen with
# gunicorn 27.0.1 loading an app under --preload); a shell's, that may exec gunicorn.
BEFORE_TITLE_COMMS = ('python', 'pypy', 'gunicorn', '/', 'sh', 'bash', 'dash')

# The safety net. At 2,000 processes a full scan costs about 15 ms: hourly, about 0.06 ms a
# 15-second run, where every 60 s it would be 4 ms, some twenty times a steady run.
FULL_SCAN_INTERVAL = 3600.0
# More new pids than this since the previous run: listing /proc (about 1 us a process) costs
# less than reading the stat of every new pid (about 4 us for a pid no longer in use, 13 for one in use).
RANGE_LIMIT = 400
# New processes read again at every run while they may still become masters (about 1 us each).
WATCH_LIMIT = 256

WORKER = 'worker'
USR2_MASTER = 'USR2 master'
OTHER = 'other'  # dirty arbiter: a gunicorn process that serves no HTTP
# A process sets these titles once, for itself, and keeps them for life. Any other title of a
# master's child may still change: a fresh fork shows the title its master had when it forked.
FINAL_KINDS = frozenset({WORKER, OTHER})


class Proc(NamedTuple):
    pid: int
    stat: procfs.Stat
    key: tuple  # (pid, start ticks): one process across runs, even after its pid is reused

    @classmethod
    def of(cls, pid, stat):
        return cls(pid, stat, (pid, stat.start_ticks))


class Tree(NamedTuple):
    """A top-level master, the master USR2 started under it if any, and their workers."""

    app: str  # NAME of `master [NAME]`
    container: object  # containers.Container of the top-level master, None on the host
    masters: list  # of Proc: the top-level master first
    workers: list  # of Proc


class Snapshot(NamedTuple):
    trees: list  # of Tree
    problems: list  # of str: what could not be read, for the Agent status page

    @property
    def masters(self):
        return [master for tree in self.trees for master in tree.masters]

    @property
    def workers(self):
        return [worker for tree in self.trees for worker in tree.workers]

    def pools(self):
        """(app, container) -> Tree of every master of that app in that container (or on the
        host, container None): what reports as one series."""
        pools = {}
        for tree in self.trees:
            key = tree.app, tree.container
            known = pools.get(key)
            pools[key] = (
                tree
                if known is None
                else known._replace(masters=known.masters + tree.masters, workers=known.workers + tree.workers)
            )
        return pools


class Known(NamedTuple):
    """A top-level master being followed from run to run."""

    start_ticks: int
    app: str
    container: object  # containers.Container, None on the host


def app_of(title):
    """NAME of a `gunicorn: master [NAME]` title, None for any other title."""
    if title.startswith(MASTER_TITLE_PREFIX) and title.endswith(']'):
        return title[len(MASTER_TITLE_PREFIX) : -1]
    return None


def classify_child(title, usr2_title):
    """What a master's child is, from its title; None for a child that is not counted now.
    `usr2_title` is the title of the master USR2 would start under this one, None under that
    master itself: gunicorn ignores a USR2 sent to a master that has a parent master."""
    if title.startswith(WORKER_TITLE_PREFIX):
        return WORKER
    if title == usr2_title:
        # Or a worker forked just before its master was promoted and retitled: looked at again next run.
        return USR2_MASTER
    if title.startswith(MASTER_TITLE_PREFIX):
        return None  # a fresh fork still showing its master's title, or the master of another app
    if title.startswith(GUNICORN_TITLE_PREFIX):
        return OTHER
    return None  # exec'ing: its command line until gunicorn titles it


class Discovery:
    """Finds the masters of one app (of every app when `proc_name` is None) and their workers,
    run after run; with `pod_uid`, only the masters in that Kubernetes pod."""

    def __init__(self, proc_name, rescan_interval, root='/proc', pod_uid=None):
        self.proc_name = proc_name
        self.pod_uid = pod_uid
        self.rescan_interval = rescan_interval  # how long a new process is watched for a master's title
        self.root = root
        # The kernel numbers the last pid for the reader's namespace only: for another, it counts forks.
        self.own_namespace = procfs.shows_own_pid_namespace(root)

        # State kept between runs.
        self.masters = {}  # pid -> Known, of the top-level masters followed
        self.final_kinds = {}  # Proc.key -> kind, of the children whose kind is in FINAL_KINDS
        self.successors = set()  # Proc.key of the USR2 masters seen under a master of the app
        self.children_files = True  # False once the kernel turns out to lack /proc/PID/task/*/children
        self.stats = procfs.StatReader(root)  # the /proc/PID/stat of the masters and their children
        self.children = procfs.ChildrenReader(root)  # the children files of the masters
        self.counter_file = procfs.LastPidReader(root) if self.own_namespace else procfs.ForkCountReader(root)
        self.next_full_scan = None  # monotonic time the next full scan is due; None before the first
        self.counter = None  # last pid, or fork count for another namespace, at the last look; None: unreadable
        self.listed = set()  # pids of the last listing of /proc, for another namespace only
        self.watched = {}  # pid -> monotonic time until which a new process not titled yet is read again
        self.comms = procfs.CommReader(root)  # the /proc/PID/comm of the watched processes

    def run(self, now):
        """Snapshot of the app's masters and workers; `now` is time.monotonic()."""
        new_pids = None
        if self.next_full_scan is not None and now < self.next_full_scan:
            new_pids = self._new_pids()
        if new_pids is None:
            self.full_scan(now)
            new_pids = ()
        trees, problems, seen = [], [], set()
        self._walk(self.masters, trees, problems, seen)
        followed = {*self.masters, *(master.pid for tree in trees for master in tree.masters)}
        new = self._top_level(self._newcomers(new_pids, trees, now), followed)
        self._walk(new, trees, problems, seen)
        self.masters.update(new)
        # Forget children that are gone, so the map does not grow with every recycled worker.
        self.final_kinds = {key: kind for key, kind in self.final_kinds.items() if key in seen}
        self.successors = {master.key for tree in trees for master in tree.masters} & self.successors
        self.stats.sweep()
        self.children.sweep()
        self.comms.sweep()
        return Snapshot(trees, problems)

    def full_scan(self, now):
        """Read every process's comm, for masters titled after the app, in scope; and watch the
        young processes whose comm says they may still become one (a master loading its app)."""
        self.counter = self._counter()  # first: a process started during the scan is new at the next run
        if not self.own_namespace:
            self.listed = set(procfs.list_pids(self.root))
        comms = procfs.find_comms((MASTER_COMM, *BEFORE_TITLE_COMMS), self.root)
        found, untitled = {}, []
        for pid, comm in comms.items():
            if comm == MASTER_COMM:
                self._examine(pid, found)
            elif not comm.startswith(GUNICORN_TITLE_PREFIX):
                untitled.append(pid)
        self.masters = self._top_level(found, set())
        self.next_full_scan = now + FULL_SCAN_INTERVAL
        self._watch_young(untitled, now)

    def _counter(self):
        try:
            return self.counter_file.read()
        except procfs.ProcfsError:
            return None  # then every run scans in full, as nothing tells which processes are new

    def _new_pids(self):
        """The pids given out since the previous look; None when the counters cannot tell them."""
        counter = self._counter()
        previous, self.counter = self.counter, counter
        if counter is None or previous is None:
            return None
        if counter == previous:
            return ()
        return self._pids_after(previous, counter) if self.own_namespace else self._unlisted_pids()

    def _pids_after(self, previous, last):
        """The pids after `previous` up to `last`, in the Agent's own pid namespace."""
        if previous < last <= previous + RANGE_LIMIT:
            return range(previous + 1, last + 1)  # threads' ids among them
        pids = procfs.list_pids(self.root)
        if previous < last:
            return [pid for pid in pids if previous < pid <= last]
        # Numbering went past pid_max and started again from the bottom.
        return [pid for pid in pids if pid > previous or pid <= last]

    def _unlisted_pids(self):
        """The pids listed now and not at the previous listing, for a /proc of another pid
        namespace; None when one of them is below the highest listed then: numbering went past
        pid_max and started again, and may have given a pid listed then to a new process."""
        pids = set(procfs.list_pids(self.root))
        new = pids - self.listed
        wrapped = bool(new and self.listed) and min(new) < max(self.listed)
        self.listed = pids
        return None if wrapped else new

    def _newcomers(self, new_pids, trees, now):
        """pid -> (Stat, app, container) of the masters of ours in scope that are new to this run:
        USR2 masters whose old master is gone, watched processes now titled, and new processes."""
        found = {}
        walked = {master.key for tree in trees for master in tree.masters}
        for key in self.successors - walked:
            self._examine(key[0], found)
        self._read_watched(now, found)
        for pid in new_pids:
            if pid not in self.masters:  # one the full scan found after reading the counter
                self._probe(pid, now, found)
        return found

    def _probe(self, pid, now, found):
        """Look at a pid given out since the previous run: a master, or watched until titled."""
        try:
            task = procfs.read_task(pid, self.root)
        except (psutil.Error, procfs.ProcfsError):
            return  # already gone, or not readable: nothing to follow
        if task.thread or task.stat.state in procfs.DEAD_STATES:
            return
        if task.comm == MASTER_COMM:
            self._examine(pid, found, task.stat)
        elif not task.comm.startswith(GUNICORN_TITLE_PREFIX):  # a worker or arbiter stays one
            self._watch(pid, now + self.rescan_interval)

    def _read_watched(self, now, found):
        """Read each watched process's comm again; stop watching it once titled, gone or old."""
        for pid, until in list(self.watched.items()):
            try:
                comm = self.comms.read_comm(pid) if now < until else None
            except (psutil.Error, procfs.ProcfsError):
                comm = None  # gone
            if comm is not None and comm != MASTER_COMM:
                continue  # not titled yet: read again at the next run
            del self.watched[pid]
            if comm == MASTER_COMM:
                self._examine(pid, found)

    def _watch_young(self, pids, now):
        """Watch those of `pids` started less than `rescan_interval` ago, for the rest of that time."""
        uptime = time.clock_gettime(time.CLOCK_BOOTTIME)  # the clock of start_ticks
        for pid in pids:
            try:
                age = uptime - procfs.read_stat(pid, self.root).start_ticks / procfs.CLOCK_TICKS
            except (psutil.Error, procfs.ProcfsError):
                continue
            if age < self.rescan_interval:
                self._watch(pid, now + self.rescan_interval - age)

    def _watch(self, pid, until):
        if pid in self.watched or len(self.watched) < WATCH_LIMIT:
            self.watched[pid] = until
        else:
            # Too many to read at every run: a full scan finds what they became, once they had the time.
            self.next_full_scan = min(self.next_full_scan, until)

    def _examine(self, pid, found, stat=None):
        """Adds pid's (Stat, app, container) to `found` if it is a master of ours, in scope."""
        try:
            title = procfs.read_title(pid, self.root)
            if stat is None:
                stat = procfs.read_stat(pid, self.root)
            app = self._app(title, (pid, stat.start_ticks))
            if app is None or stat.state in procfs.DEAD_STATES:
                return
            container = containers.container_of(pid, self.root)
        except (psutil.Error, procfs.ProcfsError):
            return  # gone, hidden or garbled: the next full scan looks again
        if self.pod_uid is None or (container is not None and container.pod_uid == self.pod_uid):
            found[pid] = (stat, app, container)

    @staticmethod
    def _top_level(found, followed):
        """Known of each master in `found` whose parent is neither in `found` nor a master
        `followed`: a fresh fork shows its master's title until it sets its own, and a USR2
        master is walked under its old one."""
        parents = set(found) | followed
        return {
            pid: Known(stat.start_ticks, app, container)
            for pid, (stat, app, container) in found.items()
            if stat.ppid not in parents
        }

    def _app(self, title, key):
        """The app a master's title names, if it is one of ours; None otherwise. A top-level
        `master [NAME.2]` is an app of that name, unless it was seen as NAME's USR2 master."""
        app = app_of(title)
        if app is None:
            return None
        if app.endswith(UPGRADE_SUFFIX) and key in self.successors:
            app = app[: -len(UPGRADE_SUFFIX)]
        return app if self.proc_name is None or app == self.proc_name else None

    def _walk(self, masters, trees, problems, seen):
        """Adds the Tree of each of `masters` (pid -> Known) to `trees`; drops those gone."""
        for pid, known in list(masters.items()):
            try:
                stat = self.stats.read_stat(pid)
            except psutil.NoSuchProcess:
                stat = None
            except (psutil.AccessDenied, procfs.ProcfsError) as e:
                # Still followed: nothing says it stopped, and no full scan may come for an hour.
                problems.append(f'Cannot read gunicorn master {pid}: {procfs.describe(e)}')
                continue
            if stat is None or stat.start_ticks != known.start_ticks or stat.state in procfs.DEAD_STATES:
                del masters[pid]  # its USR2 master, if any, is found again at this run: see _newcomers
                continue
            tree_masters, workers = [], []
            usr2_title = MASTER_TITLE.format(known.app + UPGRADE_SUFFIX)
            self._collect(Proc.of(pid, stat), usr2_title, tree_masters, workers, problems, seen)
            trees.append(Tree(known.app, known.container, tree_masters, workers))

    def _collect(self, master, usr2_title, masters, workers, problems, seen):
        masters.append(master)
        try:
            children = self._children(master)
        except (psutil.AccessDenied, procfs.ProcfsError) as e:
            problems.append(f'Cannot list the children of gunicorn master {master.pid}: {procfs.describe(e)}')
            return
        except psutil.NoSuchProcess:
            return
        for pid in children:
            try:
                child = Proc.of(pid, self.stats.read_stat(pid))
            except psutil.NoSuchProcess:
                continue
            except (psutil.AccessDenied, procfs.ProcfsError) as e:
                problems.append(f'Cannot read child {pid} of gunicorn master {master.pid}: {procfs.describe(e)}')
                continue
            if child.stat.state in procfs.DEAD_STATES:
                continue
            kind = self._kind(child, usr2_title)
            if kind is None:
                continue
            seen.add(child.key)
            if kind == WORKER:
                workers.append(child)
            elif kind == USR2_MASTER:
                self.successors.add(child.key)
                self._collect(child, None, masters, workers, problems, seen)

    def _kind(self, child, usr2_title):
        kind = self.final_kinds.get(child.key)
        if kind is not None:
            return kind
        try:
            title = procfs.read_title(child.pid, self.root)
        except (psutil.Error, procfs.ProcfsError):
            return None  # gone, or unreadable for now: looked at again next run
        kind = classify_child(title, usr2_title)
        if kind in FINAL_KINDS:
            self.final_kinds[child.key] = kind
        return kind

    def _children(self, master):
        if self.children_files:
            try:
                return self.children.read_children(master.key)
            except procfs.ChildrenUnsupported:
                self.children_files = False
        # Without the children files, psutil has to read the parent of every process.
        return [child.pid for child in psutil.Process(master.pid).children()]
