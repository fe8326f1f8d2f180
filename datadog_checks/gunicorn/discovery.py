"""Which gunicorn masters of one app are running, and which of their children are HTTP workers.

A master is found by its title, `gunicorn: master [NAME]`, in a scan of the process
table. It is remembered (pid and start time) so that later runs read only that master
and its children; the table is scanned again when a remembered master is gone, when
none is known, and every `rescan_interval` seconds to find new masters.

Only a master's children are its workers, and only one master may be found under another:
the one USR2 starts, titled `master [NAME.2]` under `master [NAME]`. A top-level
`master [NAME.2]` is another app, started with that name, unless it was seen as such a
successor: between the old master's exit and its own retitling (one gunicorn loop), the
promoted master is a top-level `master [NAME.2]` that serves the app.
"""

from typing import NamedTuple

import psutil

from . import containers, procfs

# /proc/PID/comm keeps 15 characters of the title: a cheap filter before reading cmdline.
MASTER_COMM = 'gunicorn: maste'
MASTER_TITLE = 'gunicorn: master [{}]'
MASTER_TITLE_PREFIX = 'gunicorn: master ['
WORKER_TITLE_PREFIX = 'gunicorn: worker ['
# gunicorn names the master started by USR2 after the old one's proc_name plus this suffix.
UPGRADE_SUFFIX = '.2'

WORKER = 'worker'
USR2_MASTER = 'USR2 master'
OTHER = 'other'  # dirty arbiter: a gunicorn process that serves no HTTP
# A process sets these titles once, for itself, and keeps them for life. Any other title of a
# master's child may still change: a fresh fork shows the title its master had when it forked.
FINAL_KINDS = frozenset({WORKER, OTHER})


class Proc(NamedTuple):
    pid: int
    stat: procfs.Stat

    @property
    def key(self):
        """Identifies one process across runs, even after its pid is reused."""
        return self.pid, self.stat.start_ticks


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
    """A top-level master the last scan found."""

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
    if title.startswith('gunicorn: '):
        return OTHER
    return None  # exec'ing: its command line until gunicorn titles it


class Discovery:
    """Finds the masters of one app (of every app when `proc_name` is None) and their workers,
    run after run; with `pod_uid`, only the masters in that Kubernetes pod."""

    def __init__(self, proc_name, rescan_interval, root='/proc', pod_uid=None):
        self.proc_name = proc_name
        self.pod_uid = pod_uid
        self.rescan_interval = rescan_interval
        self.root = root

        # State kept between runs.
        self.masters = {}  # pid -> Known, of the top-level masters the last scan found
        self.last_scan = None  # monotonic time of that scan
        self.final_kinds = {}  # Proc.key -> kind, of the children whose kind is in FINAL_KINDS
        self.successors = set()  # Proc.key of the USR2 masters seen under a master of the app
        self.children_files = True  # False once the kernel turns out to lack /proc/PID/task/*/children

    def run(self, now):
        """Snapshot of the app's masters and workers; `now` is time.monotonic()."""
        if not self.masters or self.last_scan is None or now - self.last_scan >= self.rescan_interval:
            self.scan(now)
        snapshot = self._walk()
        if snapshot is None:  # a remembered master is gone: a USR2 successor or a restart may have replaced it
            self.scan(now)
            snapshot = self._walk() or Snapshot([], [])
        return snapshot

    def scan(self, now):
        """Read the whole process table for masters titled after the app, in scope."""
        found = {}
        for proc in psutil.process_iter(['name']):
            if not (proc.info['name'] or '').startswith(MASTER_COMM):
                continue
            try:
                title = procfs.read_title(proc.pid, self.root)
                stat = procfs.read_stat(proc.pid, self.root)
                app = self._app(title, (proc.pid, stat.start_ticks))
                if app is None or stat.state in procfs.DEAD_STATES:
                    continue
                container = containers.container_of(proc.pid, self.root)
            except (psutil.Error, procfs.ProcfsError):
                continue  # gone, hidden or garbled: the next scan looks again
            if self.pod_uid is None or (container is not None and container.pod_uid == self.pod_uid):
                found[proc.pid] = (stat, app, container)
        # A fresh fork shows its master's title until it sets its own.
        self.masters = {
            pid: Known(stat.start_ticks, app, container)
            for pid, (stat, app, container) in found.items()
            if stat.ppid not in found
        }
        self.last_scan = now

    def _app(self, title, key):
        """The app a master's title names, if it is one of ours; None otherwise. A top-level
        `master [NAME.2]` is an app of that name, unless it was seen as NAME's USR2 master."""
        app = app_of(title)
        if app is None:
            return None
        if app.endswith(UPGRADE_SUFFIX) and key in self.successors:
            app = app[: -len(UPGRADE_SUFFIX)]
        return app if self.proc_name is None or app == self.proc_name else None

    def _walk(self):
        trees, problems = [], []
        seen = set()
        for pid, known in self.masters.items():
            try:
                stat = procfs.read_stat(pid, self.root)
            except (psutil.Error, procfs.ProcfsError):
                return None
            if stat.start_ticks != known.start_ticks or stat.state in procfs.DEAD_STATES:
                return None
            masters, workers = [], []
            usr2_title = MASTER_TITLE.format(known.app + UPGRADE_SUFFIX)
            self._collect(Proc(pid, stat), usr2_title, masters, workers, problems, seen)
            trees.append(Tree(known.app, known.container, masters, workers))
        # Forget children that are gone, so the map does not grow with every recycled worker.
        self.final_kinds = {key: kind for key, kind in self.final_kinds.items() if key in seen}
        self.successors = {master.key for tree in trees for master in tree.masters} & self.successors
        return Snapshot(trees, problems)

    def _collect(self, master, usr2_title, masters, workers, problems, seen):
        masters.append(master)
        try:
            children = self._children(master.pid)
        except (psutil.AccessDenied, procfs.ProcfsError) as e:
            problems.append(f'Cannot list the children of gunicorn master {master.pid}: {procfs.describe(e)}')
            return
        except psutil.NoSuchProcess:
            return
        for pid in children:
            try:
                child = Proc(pid, procfs.read_stat(pid, self.root))
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

    def _children(self, pid):
        if self.children_files:
            try:
                return procfs.read_children(pid, self.root)
            except procfs.ChildrenUnsupported:
                self.children_files = False
        # Without the children files, psutil has to read the parent of every process.
        return [child.pid for child in psutil.Process(pid).children()]
