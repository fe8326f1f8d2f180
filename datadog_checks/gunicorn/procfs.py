"""Small readers of /proc files, one function per file, for the per-run hot path.

psutil finds masters during a scan; once they are known, a run reads these few files
directly, because each is one read of a small file while a psutil call may read several.
Every reader maps OS errors the same way (see `_read_text`), so callers handle three
exceptions: `psutil.NoSuchProcess`, `psutil.AccessDenied` and `ProcfsError`.
"""

import errno
import os
from typing import NamedTuple

import psutil

CLOCK_TICKS = os.sysconf('SC_CLK_TCK')
PAGE_SIZE = os.sysconf('SC_PAGE_SIZE')

# Exited but not yet reaped (`Z`), or being torn down (`X`): no longer serving anything.
DEAD_STATES = frozenset('ZXx')


class ProcfsError(Exception):
    """A /proc file exists but does not say what the kernel documents (proc(5))."""

    def __init__(self, path, problem):
        super().__init__(f'{path}: {problem}')
        self.path = path


class ChildrenUnsupported(Exception):
    """The kernel has no /proc/PID/task/TID/children (built without CONFIG_PROC_CHILDREN)."""


class Stat(NamedTuple):
    state: str
    ppid: int
    cpu_ticks: int  # utime + stime, all threads
    start_ticks: int  # since boot; with the pid, identifies one process across runs
    num_threads: int
    rss_bytes: int


def _read_text(root, pid, name):
    path = f'{root}/{pid}/{name}'
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise psutil.NoSuchProcess(pid) from None
    except PermissionError:
        raise psutil.AccessDenied(pid) from None
    except OSError as e:
        # ESRCH comes back for a process that exits while its file is being read.
        if e.errno == errno.ESRCH:
            raise psutil.NoSuchProcess(pid) from None
        raise ProcfsError(path, e.strerror) from None


def read_stat(pid, root='/proc'):
    """Fields of /proc/PID/stat the check needs. comm may hold spaces and parentheses:
    everything after the LAST `)` is space-separated (proc(5) numbers fields from 1)."""
    text = _read_text(root, pid, 'stat')
    end_of_comm = text.rfind(')')
    fields = text[end_of_comm + 2 :].split()
    if end_of_comm < 0 or len(fields) < 22:
        raise ProcfsError(f'{root}/{pid}/stat', f'too few fields after comm in {text[:80]!r}')
    try:
        # fields[0] is field 3 (state).
        return Stat(
            state=fields[0],
            ppid=int(fields[1]),
            cpu_ticks=int(fields[11]) + int(fields[12]),
            start_ticks=int(fields[19]),
            num_threads=int(fields[17]),
            rss_bytes=int(fields[21]) * PAGE_SIZE,
        )
    except ValueError:
        raise ProcfsError(f'{root}/{pid}/stat', f'non-numeric field in {text[:80]!r}') from None


def read_children(pid, root='/proc'):
    """Pids of the direct children of every thread of PID, from /proc/PID/task/*/children."""
    try:
        tids = os.listdir(f'{root}/{pid}/task')
    except (FileNotFoundError, ProcessLookupError):
        raise psutil.NoSuchProcess(pid) from None
    except PermissionError:
        raise psutil.AccessDenied(pid) from None
    children = []
    for tid in tids:
        try:
            text = _read_text(root, pid, f'task/{tid}/children')
        except psutil.NoSuchProcess:
            if not os.path.exists(f'{root}/{pid}'):
                raise
            if not os.path.exists(f'{root}/{pid}/task/{tid}'):
                continue  # that thread ended between listdir and open
            raise ChildrenUnsupported(f'{root}/{pid}/task/{tid}/children does not exist') from None
        try:
            children.extend(int(child) for child in text.split())
        except ValueError:
            raise ProcfsError(f'{root}/{pid}/task/{tid}/children', f'not a list of pids: {text[:80]!r}') from None
    return children


def read_title(pid, root='/proc'):
    """The process title as `ps` shows it: /proc/PID/cmdline with its NUL separators and
    setproctitle's NUL padding turned into single spaces."""
    return ' '.join(part for part in _read_text(root, pid, 'cmdline').split('\0') if part)


def read_mapped_paths(pid, root='/proc'):
    """Paths of the files mapped into PID's memory (/proc/PID/maps, sixth column)."""
    paths = set()
    for line in _read_text(root, pid, 'maps').splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith('/'):
            paths.add(parts[5])
    return paths
