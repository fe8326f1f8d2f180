"""Small readers of /proc files, one function per file, for the per-run hot path.

psutil finds masters during a scan; once they are known, a run reads these few files
directly, because each is one read of a small file while a psutil call may read several.
Every reader maps OS errors the same way (see `_read_text`), so callers handle three
exceptions: `psutil.NoSuchProcess`, `psutil.AccessDenied` and `ProcfsError`.
"""

import errno
import os
import socket
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


def describe(error):
    """One line for the Agent status page, for any of the exceptions these readers raise."""
    if isinstance(error, psutil.AccessDenied):
        return f'permission denied (pid {error.pid})'
    return str(error)


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


def read_cgroup(pid, root='/proc'):
    """/proc/PID/cgroup: one `ID:CONTROLLERS:PATH` line per hierarchy (cgroup v1), or `0::PATH` (v2)."""
    return _read_text(root, pid, 'cgroup')


def read_mapped_paths(pid, root='/proc'):
    """Paths of the files mapped into PID's memory (/proc/PID/maps, sixth column)."""
    paths = set()
    for line in _read_text(root, pid, 'maps').splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith('/'):
            paths.add(parts[5])
    return paths


# Socket states in /proc/net/tcp (include/net/tcp_states.h) and /proc/net/unix (SS_* of linux/net.h).
TCP_ESTABLISHED = 0x01
TCP_CLOSE_WAIT = 0x08
TCP_LISTEN = 0x0A
UNIX_CONNECTING = 0x02
UNIX_CONNECTED = 0x03
UNIX_ACCEPTING = 0x00010000  # __SO_ACCEPTCON in the Flags column: a listening socket


class TcpSocket(NamedTuple):
    local_ip: str
    local_port: int
    state: int
    rx_queue: int  # for a LISTEN socket: connections waiting in the accept queue
    inode: int  # 0 while a connection waits in the accept queue: no process holds it yet
    info: object = None  # sockdiag.TcpInfo where sock_diag was asked for it; /proc/net/tcp has none


class UnixSocket(NamedTuple):
    flags: int
    state: int
    inode: int  # 0 for a connection queued on a listener, not yet accepted
    path: str  # a listener's path; an accepted or queued connection inherits it


def _hex_ip(text):
    # The kernel prints the address as native-endian 32-bit words.
    raw = bytes.fromhex(text)
    words = b''.join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words)


def read_net_tcp(pid, name='tcp', root='/proc'):
    """Sockets of /proc/PID/net/tcp or tcp6, in PID's network namespace."""
    path = f'{root}/{pid}/net/{name}'
    sockets = []
    for line in _read_text(root, pid, f'net/{name}').splitlines()[1:]:
        fields = line.split()
        try:
            local_ip, local_port = fields[1].split(':')
            rx_queue = fields[4].split(':')[1]
            sockets.append(
                TcpSocket(_hex_ip(local_ip), int(local_port, 16), int(fields[3], 16), int(rx_queue, 16), int(fields[9]))
            )
        except (IndexError, ValueError, OSError):
            raise ProcfsError(path, f'unexpected line {line.strip()[:100]!r}') from None
    return sockets


def read_net_unix(pid, root='/proc', paths=None):
    """Sockets of /proc/PID/net/unix that have a path; with `paths`, only those paths."""
    path = f'{root}/{pid}/net/unix'
    sockets = []
    for line in _read_text(root, pid, 'net/unix').splitlines()[1:]:
        fields = line.split(None, 7)
        if len(fields) < 8:
            if len(fields) == 7:
                continue  # unnamed socket: no listener is ever unnamed
            raise ProcfsError(path, f'unexpected line {line.strip()[:100]!r}')
        if paths is not None and fields[7] not in paths:
            continue
        try:
            sockets.append(UnixSocket(int(fields[3], 16), int(fields[5], 16), int(fields[6]), fields[7]))
        except ValueError:
            raise ProcfsError(path, f'unexpected line {line.strip()[:100]!r}') from None
    return sockets


def read_fd_links(pid, root='/proc'):
    """fd number -> link target of every open file of PID (`socket:[INODE]`, a path, ...).
    Needs PID's user or CAP_SYS_PTRACE: psutil.AccessDenied otherwise."""
    folder = f'{root}/{pid}/fd'
    try:
        fds = os.listdir(folder)
    except (FileNotFoundError, ProcessLookupError):
        raise psutil.NoSuchProcess(pid) from None
    except PermissionError:
        raise psutil.AccessDenied(pid) from None
    links = {}
    for fd in fds:
        try:
            links[int(fd)] = os.readlink(f'{folder}/{fd}')
        except FileNotFoundError:
            continue  # closed since the listing
        except PermissionError:
            raise psutil.AccessDenied(pid) from None
    return links


def socket_inodes(links):
    """Inodes of the sockets among read_fd_links()'s targets."""
    return {int(target[8:-1]) for target in links.values() if target.startswith('socket:[')}


def fd_change_time(pid, fd, root='/proc'):
    """st_ctime of the file behind /proc/PID/fd/FD (gunicorn's heartbeat moves it)."""
    try:
        return os.stat(f'{root}/{pid}/fd/{fd}').st_ctime
    except (FileNotFoundError, ProcessLookupError):
        raise psutil.NoSuchProcess(pid) from None
    except PermissionError:
        raise psutil.AccessDenied(pid) from None
