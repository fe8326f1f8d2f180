"""Small readers of /proc files, one function per file, for the per-run hot path.

A full scan reads one small file of every process (find_comms); once masters are known, a run
reads a few files of theirs directly, because each is one read of a small file while a
psutil call may read several. Files are read as bytes with os.open/os.read: a text-mode
open() costs twice the system calls (fstat, ioctl, lseek) and a decoder, for files that are
ASCII where it matters. Every reader maps OS errors the same way (see `_mapped`), so callers
handle three exceptions: `psutil.NoSuchProcess`, `psutil.AccessDenied` and `ProcfsError`.

`StatReader`, `CommReader` and `FdReader` keep a process's files open between runs, for
callers that read the same processes at every run: a pread is one system call where a fresh
read is three, and an open /proc file stays bound to the process it was opened for, so it
never reads another process that reused the pid (the kernel answers ESRCH or ENOENT instead).
"""

import os
import resource
import socket
import weakref
from typing import NamedTuple

import psutil

CLOCK_TICKS = os.sysconf('SC_CLK_TCK')
PAGE_SIZE = os.sysconf('SC_PAGE_SIZE')

# Exited but not yet reaped (`Z`), or being torn down (`X`): no longer serving anything.
DEAD_STATES = frozenset('ZXx')

# Files the kernel makes at once (stat, comm, cmdline, cgroup, loadavg) come back whole from
# one read this large; files made of records (maps, net/*, children) come back at most a page
# per read, whatever is asked, and are read until the kernel returns nothing.
READ_SIZE = 1 << 16
# The longest record of a children file: a pid below pid_max's ceiling (2**22), and a space.
CHILDREN_RECORD_SIZE = 8
STAT_READ_SIZE = 4096  # a stat line is well under 1 KiB
OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC
OPEN_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class ProcfsError(Exception):
    """A /proc file does not say what the kernel documents (proc(5)), or could not be read
    for another reason than its process being gone or out of reach."""

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


def _mapped(error, pid, path):
    """The exception callers handle for an OSError met on PID's file at `path`."""
    # ENOENT: the process is gone (its /proc directory, or an entry in it, no longer
    # exists). ESRCH: it exited while its file was open, or being read.
    if isinstance(error, FileNotFoundError | ProcessLookupError):
        return psutil.NoSuchProcess(pid)
    if isinstance(error, PermissionError):
        return psutil.AccessDenied(pid)
    return ProcfsError(path, error.strerror or str(error))


def _read_bytes(root, pid, name, whole=False):
    """The bytes of PID's file `name`. `whole`: the kernel makes the file at once (stat, comm,
    cmdline, cgroup), so a read shorter than asked is all of it, and no second read is needed."""
    path = f'{root}/{pid}/{name}'
    try:
        fd = os.open(path, OPEN_FLAGS)
        try:
            return _pread_whole(fd) if whole else _pread_to_end(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise _mapped(e, pid, path) from None


def _open(pid, path, flags=OPEN_FLAGS):
    """An fd on PID's file at `path`, for the caller to close."""
    try:
        return os.open(path, flags)
    except OSError as e:
        raise _mapped(e, pid, path) from None


def _read_text(root, pid, name, whole=False):
    return _read_bytes(root, pid, name, whole).decode('utf-8', 'replace')


def _listdir(pid, path, dir_fd=None):
    try:
        return os.listdir(path if dir_fd is None else dir_fd)
    except OSError as e:
        raise _mapped(e, pid, path) from None


def describe(error):
    """One line for the Agent status page, for any of the exceptions these readers raise."""
    if isinstance(error, psutil.AccessDenied):
        return f'permission denied (pid {error.pid})'
    return str(error)


def _read_stat_fd(fd):
    # /proc/PID/stat is generated whole at each read: one short read is all of it. pread, so
    # that a kept fd needs no seek back; a stat as long as the read (never seen) reads on.
    data = os.pread(fd, STAT_READ_SIZE, 0)
    while len(data) % STAT_READ_SIZE == 0 and data:
        more = os.pread(fd, STAT_READ_SIZE, len(data))
        if not more:
            break
        data += more
    return data


def read_stat(pid, root='/proc'):
    """Fields of /proc/PID/stat the check needs. comm may hold spaces and parentheses:
    everything after the LAST `)` is space-separated (proc(5) numbers fields from 1)."""
    path = f'{root}/{pid}/stat'
    return _parse_stat(_read_stat_file(pid, path), path)


def _read_stat_file(pid, path):
    try:
        fd = os.open(path, OPEN_FLAGS)
        try:
            return _read_stat_fd(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise _mapped(e, pid, path) from None


def _parse_stat(data, path):
    return _stat_of(data, path, _split_stat(data, path)[1])


def _split_stat(data, path):
    """Where comm ends, and the fields after it (fields[0] is field 3, state)."""
    end_of_comm = data.rfind(b')')
    fields = data[end_of_comm + 2 :].split()
    if end_of_comm < 0 or len(fields) < 22:
        raise ProcfsError(path, f'too few fields after comm in {_excerpt(data)!r}')
    return end_of_comm, fields


def _stat_of(data, path, fields):
    try:
        # fields[0] is field 3 (state).
        return Stat(
            state=fields[0].decode('ascii', 'replace'),
            ppid=int(fields[1]),
            cpu_ticks=int(fields[11]) + int(fields[12]),
            start_ticks=int(fields[19]),
            num_threads=int(fields[17]),
            rss_bytes=int(fields[21]) * PAGE_SIZE,
        )
    except ValueError:
        raise ProcfsError(path, f'non-numeric field in {_excerpt(data)!r}') from None


def _excerpt(data):
    return data[:80].decode('utf-8', 'replace')


def read_children(pid, root='/proc'):
    """Pids of the children PID's main thread forked, from /proc/PID/task/PID/children. A child
    is listed under the thread that forked it; gunicorn forks its workers and a USR2 master only
    from the arbiter's loop, on the main thread (the control socket's thread of gunicorn >= 25
    only wakes that loop), so no other thread's file, nor the listing of task/, is needed."""
    path = _children_path(root, pid)
    try:
        fd = os.open(path, OPEN_FLAGS)
    except FileNotFoundError:
        if os.path.exists(f'{root}/{pid}'):
            raise ChildrenUnsupported(f'{path} does not exist') from None
        raise psutil.NoSuchProcess(pid) from None
    except OSError as e:
        raise _mapped(e, pid, path) from None
    try:
        return _children_of(_pread_children(fd), path)
    except OSError as e:
        raise _mapped(e, pid, path) from None
    finally:
        os.close(fd)


def _children_path(root, pid):
    return f'{root}/{pid}/task/{pid}/children'


def _children_of(data, path):
    try:
        return [int(child) for child in data.split()]
    except ValueError:
        raise ProcfsError(path, f'not a list of pids: {_excerpt(data)!r}') from None


def _pread_to_end(fd, first=None):
    """The whole file behind `fd` from its start, read with pread (a kept fd needs no seek):
    files made of records come back a page at most per read. `first`: its first read, made."""
    chunks = [os.pread(fd, READ_SIZE, 0) if first is None else first]
    offset = len(chunks[0])
    while chunks[-1]:
        chunks.append(os.pread(fd, READ_SIZE, offset))
        offset += len(chunks[-1])
    return b''.join(chunks)


def _pread_whole(fd):
    """A file the kernel makes at once: a read shorter than asked is all of it."""
    data = os.pread(fd, READ_SIZE, 0)
    return data if len(data) < READ_SIZE else _pread_to_end(fd, data)


def _pread_children(fd):
    """A children file, in one read while it is short. The kernel fills a read of a file of
    records with whole records up to its buffer (a page at least), stopping before the first
    that would not fit: a read that left room for one more record reached the end."""
    data = os.pread(fd, READ_SIZE, 0)
    return data if len(data) < PAGE_SIZE - CHILDREN_RECORD_SIZE else _pread_to_end(fd, data)


def read_title(pid, root='/proc'):
    """The process title as `ps` shows it: /proc/PID/cmdline with its NUL separators and
    setproctitle's NUL padding turned into single spaces."""
    data = _read_bytes(root, pid, 'cmdline', whole=True)
    return b' '.join(part for part in data.split(b'\0') if part).decode('utf-8', 'replace')


def read_run_time(pid, root='/proc'):
    """Nanoseconds PID's main thread has run on a CPU (/proc/PID/schedstat, first field)."""
    return _run_time_of(_read_bytes(root, pid, 'schedstat', whole=True), f'{root}/{pid}/schedstat')


def _run_time_of(data, path):
    try:
        return int(data.split(None, 1)[0])
    except (IndexError, ValueError):
        raise ProcfsError(path, f'unexpected {_excerpt(data)}') from None


def read_comm(pid, root='/proc'):
    """/proc/PID/comm: the first 15 bytes of the process's name (its title's, once setproctitle
    set one), the cheapest file to tell a process apart by during a scan."""
    return _comm_text(_read_bytes(root, pid, 'comm', whole=True))


def _comm_text(data):
    return (data[:-1] if data.endswith(b'\n') else data).decode('utf-8', 'replace')


def find_comms(prefixes, root='/proc'):
    """pid -> comm (as read_comm() gives it) of every process `root` lists whose comm starts with
    one of `prefixes`: a scan of the whole table, about 6 us a process. Paths are opened
    relative to an fd of `root`, which spares the kernel a lookup per process; only the comms
    kept are decoded. A process gone since the listing is left out."""
    try:
        root_fd = os.open(root, OPEN_DIR_FLAGS)
    except OSError as e:
        raise ProcfsError(root, e.strerror or str(e)) from None
    try:
        return _find_comms_under(root, root_fd, tuple(prefix.encode() for prefix in prefixes))
    finally:
        os.close(root_fd)


def _find_comms_under(root, root_fd, prefixes):
    try:
        names = os.listdir(root_fd)
    except OSError as e:
        raise ProcfsError(root, e.strerror or str(e)) from None
    found = {}
    for name in names:
        if not name.isdigit():
            continue
        try:
            fd = os.open(f'{name}/comm', OPEN_FLAGS, dir_fd=root_fd)
            try:
                data = os.read(fd, 64)  # at most 16 bytes: 15 and a newline
            finally:
                os.close(fd)
        except OSError:
            continue  # exited since the listing: comm is readable by every user
        if data.startswith(prefixes):
            found[int(name)] = _comm_text(data)
    return found


class Task(NamedTuple):
    comm: str
    thread: bool  # another thread of a process: /proc shows it at its id, without listing it
    stat: Stat


def read_task(pid, root='/proc'):
    """What /proc/ID/stat tells of an id the kernel gave out, in one read: its comm, whether
    it is a process or another thread of one (ids are given to both alike), and its Stat."""
    path = f'{root}/{pid}/stat'
    data = _read_stat_file(pid, path)
    end_of_comm, fields = _split_stat(data, path)
    if len(fields) < 36:
        raise ProcfsError(path, f'no exit_signal in {_excerpt(data)!r}')
    comm = data[data.find(b'(') + 1 : end_of_comm].decode('utf-8', 'replace')
    # exit_signal (field 38) is the signal the parent gets: -1 for a thread, which has none.
    return Task(comm, fields[35] == b'-1', _stat_of(data, path, fields))


def list_pids(root='/proc'):
    """Pids of every process `root` shows. About a microsecond a process: listing /proc makes the
    kernel look each one up."""
    try:
        names = os.listdir(root)
    except OSError as e:
        raise ProcfsError(root, e.strerror or str(e)) from None
    return [int(name) for name in names if name.isdigit()]


def read_last_pid(root='/proc'):
    """The last field of /proc/loadavg: the pid most recently given to a process or thread.
    Unchanged since an earlier read means no process was created in between, unless a whole
    round of pids went by. The kernel answers for the READER's pid namespace, whatever
    namespace `root` shows: see shows_own_pid_namespace()."""
    return _read_once(LastPidReader(root))


def read_fork_count(root='/proc'):
    """Processes and threads created since boot, all namespaces together (`processes` in
    /proc/stat): what read_last_pid() tells, for a `root` of another pid namespace. Dearer:
    the kernel writes a line per CPU and one counter per interrupt with it."""
    return _read_once(ForkCountReader(root))


def _read_once(reader):
    try:
        return reader.read()
    finally:
        reader.close()


class _KeptSystemFile:
    """A /proc file of the whole system, kept open between runs and read with pread: one
    system call where a fresh read is three. Closed when its owner drops it."""

    name = None

    def __init__(self, root='/proc'):
        self.path = f'{root}/{self.name}'
        self._fds = {}  # at most the one fd: a dict, so the finalizer closes what is open then
        self._finalizer = weakref.finalize(self, _close_all, self._fds)

    def read(self):
        try:
            if not self._fds:
                self._fds[self.path] = os.open(self.path, OPEN_FLAGS)
            data = _pread_whole(self._fds[self.path])
        except OSError as e:
            _close_all(self._fds)  # opened anew at the next read
            raise ProcfsError(self.path, e.strerror or str(e)) from None
        return self.parse(data)

    def parse(self, data):
        raise NotImplementedError

    def close(self):
        _close_all(self._fds)


class LastPidReader(_KeptSystemFile):
    """read_last_pid() through /proc/loadavg kept open."""

    name = 'loadavg'

    def parse(self, data):
        try:
            return int(data.rsplit(None, 1)[1])
        except (IndexError, ValueError):
            raise ProcfsError(self.path, f'no last pid in {_excerpt(data)!r}') from None


class ForkCountReader(_KeptSystemFile):
    """read_fork_count() through /proc/stat kept open."""

    name = 'stat'

    def parse(self, data):
        start = data.find(b'\nprocesses ') + 1
        try:
            if not start:
                raise ValueError
            return int(data[start + 10 : data.index(b'\n', start)])
        except ValueError:
            raise ProcfsError(self.path, 'no `processes` line') from None


def shows_own_pid_namespace(root='/proc'):
    """Whether `root` shows the pid namespace this process is in: its `self` names our own pid.
    A /host/proc of the host, read from a container with a pid namespace of its own, does not."""
    try:
        return os.readlink(f'{root}/self') == str(os.getpid())
    except OSError:
        return False


def network_namespace(pid, root='/proc'):
    """A number naming PID's network namespace: the inode of /proc/PID/net/tcp, which every
    process of one namespace shares and any user may stat (unlike /proc/PID/ns/net)."""
    path = f'{root}/{pid}/net/tcp'
    try:
        return os.stat(path).st_ino
    except OSError as e:
        raise _mapped(e, pid, path) from None


def read_cgroup(pid, root='/proc'):
    """/proc/PID/cgroup: one `ID:CONTROLLERS:PATH` line per hierarchy (cgroup v1), or `0::PATH` (v2)."""
    return _read_text(root, pid, 'cgroup', whole=True)


def mapped_paths(pid, root='/proc'):
    """Paths of the files mapped into PID's memory (/proc/PID/maps, sixth column), in address
    order, each at every mapping of it. Read as the caller goes: the kernel makes each page of
    the file anew, walking the mappings and their paths (a python process maps some 200, about
    0.3 ms in all), so a caller that finds what it looks for early spares it the rest."""
    path = f'{root}/{pid}/maps'
    fd = _open(pid, path)
    try:
        rest, offset = b'', 0
        while True:
            try:
                data = os.pread(fd, READ_SIZE, offset)
            except OSError as e:
                raise _mapped(e, pid, path) from None
            if not data:
                break
            offset += len(data)
            # Lines end with \n only: the kernel escapes a newline in a path as \012.
            *lines, rest = (rest + data).split(b'\n')
            yield from _paths_of(lines)
        yield from _paths_of([rest])
    finally:
        os.close(fd)


def _paths_of(lines):
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith(b'/'):
            yield parts[5].decode('utf-8', 'replace')


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
    return _fd_links(pid, folder, _listdir(pid, folder))


def _fd_links(pid, folder, fds, dir_fd=None):
    links = {}
    for fd in fds:
        try:
            links[int(fd)] = os.readlink(fd if dir_fd is not None else f'{folder}/{fd}', dir_fd=dir_fd)
        except FileNotFoundError:
            continue  # closed since the listing (or, with dir_fd, the process exited: the caller checks)
        except OSError as e:
            raise _mapped(e, pid, f'{folder}/{fd}') from None
    return links


def socket_fds(links):
    """inode -> fd number of each socket among read_fd_links()'s targets."""
    return {int(target[8:-1]): fd for fd, target in links.items() if target.startswith('socket:[')}


def fd_change_time(pid, fd, root='/proc'):
    """st_ctime of the file behind /proc/PID/fd/FD (gunicorn's heartbeat moves it)."""
    path = f'{root}/{pid}/fd/{fd}'
    try:
        return os.stat(path).st_ctime
    except OSError as e:
        raise _mapped(e, pid, path) from None


def _default_keep_limit():
    # Never hold more than a sixteenth of what the process may open (the Agent's Go runtime
    # raises its soft limit to the hard one; a plain 1024 leaves 64).
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1024 if soft == resource.RLIM_INFINITY else max(0, min(1024, soft // 16))


def _close_all(fds):
    for fd in fds.values():
        os.close(fd)
    fds.clear()


class KeptFds:
    """Open fds by key, at most `limit` of them; each run, `sweep()` closes those not used since
    the previous sweep. Past the limit, callers read the way the module functions do."""

    def __init__(self, root, limit):
        self.root = root
        self.limit = _default_keep_limit() if limit is None else limit

        # State kept between runs.
        self.fds = {}  # key -> an fd open on one process's file
        self.used = set()  # keys of `fds` used since the last sweep
        # Closes what is still open when the owner drops this object without close().
        self._finalizer = weakref.finalize(self, _close_all, self.fds)

    def _keep(self, key, fd):
        """Whether `fd` is now kept for `key`; when not, the caller closes it after use."""
        if len(self.fds) >= self.limit:
            return False
        self.fds[key] = fd
        self.used.add(key)
        return True

    def _drop(self, key):
        fd = self.fds.pop(key, None)
        self.used.discard(key)
        if fd is not None:
            os.close(fd)

    def _use(self, key, open_fd, read):
        """read(fd) of the fd kept for `key`; when none is, of open_fd(key), kept while under
        the limit and closed after use otherwise. Whatever `read` raises drops the kept fd: a
        process gone, or no longer readable, is opened (and checked) anew if asked again."""
        fd = self.fds.get(key)
        if fd is not None:
            self.used.add(key)
            kept = True
        else:
            fd = open_fd(key)
            kept = self._keep(key, fd)
        try:
            return read(fd)
        except BaseException:
            if kept:
                self._drop(key)
            raise
        finally:
            if not kept:
                os.close(fd)

    def _open_verified(self, key, name, flags):
        """An fd on /proc/PID/`name` of the process `key` (pid, start_ticks) names; NoSuchProcess
        when the pid is gone or another process's."""
        pid, start_ticks = key
        pid_dir = _open(pid, f'{self.root}/{pid}', OPEN_DIR_FLAGS)
        try:
            # Both opened through pid_dir, so both belong to the process it names, whatever
            # happens to the pid meanwhile. `name` first: it is what a user without access to
            # the process may be refused.
            path = f'{self.root}/{pid}/{name}'
            fd = os.open(name, flags, dir_fd=pid_dir)
            try:
                path = f'{self.root}/{pid}/stat'
                stat_fd = os.open('stat', OPEN_FLAGS, dir_fd=pid_dir)
                try:
                    stat = _parse_stat(_read_stat_fd(stat_fd), path)
                finally:
                    os.close(stat_fd)
                if stat.start_ticks != start_ticks:
                    raise psutil.NoSuchProcess(pid)  # the pid is another process's now
            except BaseException:
                os.close(fd)
                raise
            return fd
        except OSError as e:
            raise _mapped(e, pid, path) from None
        finally:
            os.close(pid_dir)

    def sweep(self):
        """Close the files of the processes not read since the previous sweep: call once a run."""
        for key in [key for key in self.fds if key not in self.used]:
            self._drop(key)
        self.used.clear()

    def close(self):
        _close_all(self.fds)
        self.used.clear()


class _KeptFiles(KeptFds):
    """One file of each process, /proc/PID/`name`, kept open by pid.

    A kept file reads the process it was opened for, never a later one with the same pid: once
    that process is reaped the kernel answers ESRCH, and the file is opened anew by pid, as a
    fresh read would be (the caller then reads the new process, or gets NoSuchProcess).
    """

    name = None

    def _read(self, pid, read):
        """read(fd) of PID's file, mapping errors as the module's readers do."""
        fd = self.fds.get(pid)
        if fd is not None:
            try:
                data = read(fd)
            except ProcessLookupError:
                self._drop(pid)  # that process is gone; the pid may be another's by now
            except OSError as e:
                self._drop(pid)
                raise _mapped(e, pid, f'{self.root}/{pid}/{self.name}') from None
            else:
                self.used.add(pid)
                return data
        path = f'{self.root}/{pid}/{self.name}'
        try:
            return self._use(pid, lambda _: _open(pid, path), read)
        except OSError as e:
            raise _mapped(e, pid, path) from None


class StatReader(_KeptFiles):
    """read_stat() through /proc/PID/stat files kept open between runs, one per pid."""

    name = 'stat'

    def __init__(self, root='/proc', limit=None):
        super().__init__(root, limit)

    def read_stat(self, pid):
        """Exactly read_stat(pid, root): the same Stat, the same exceptions."""
        return _parse_stat(self._read(pid, _read_stat_fd), f'{self.root}/{pid}/stat')


class CommReader(_KeptFiles):
    """read_comm() through /proc/PID/comm files kept open between runs, one per pid: about 1 us a
    read where a fresh one takes 5. A kept file follows its process through exec and
    setproctitle, which both change comm."""

    name = 'comm'

    def __init__(self, root='/proc', limit=None):
        super().__init__(root, limit)

    def read_comm(self, pid):
        """Exactly read_comm(pid, root): the same comm, the same exceptions."""
        return _comm_text(self._read(pid, lambda fd: os.pread(fd, 64, 0)))  # 16 bytes at most


class RunTimeReader(_KeptFiles):
    """read_run_time() through /proc/PID/schedstat files kept open between runs, one per pid."""

    name = 'schedstat'

    def __init__(self, root='/proc', limit=None):
        super().__init__(root, limit)

    def read_run_time(self, pid):
        """Exactly read_run_time(pid, root): the same number, the same exceptions."""
        # Three numbers of at most 20 digits: one read is the whole file.
        return _run_time_of(self._read(pid, lambda fd: os.pread(fd, 128, 0)), f'{self.root}/{pid}/schedstat')


class FdReader(KeptFds):
    """read_fd_links() and fd_change_time() through /proc/PID/fd directories kept open between
    runs, one per process, named by its Proc.key: (pid, start_ticks).

    A directory is kept only once the /proc/PID/stat read through the same /proc/PID shows that
    start_ticks, so it lists that process's fds or nothing, never those of a later process with
    the same pid: one that is gone, or whose pid is now another's, is psutil.NoSuchProcess.
    """

    def __init__(self, root='/proc', limit=None):
        super().__init__(root, limit)

    def read_fd_links(self, key):
        """read_fd_links(pid, root) of the process `key` names."""
        folder = f'{self.root}/{key[0]}/fd'
        try:
            return self._use(key, self._open, lambda dir_fd: _fd_links(key[0], folder, os.listdir(dir_fd), dir_fd))
        except OSError as e:
            raise _mapped(e, key[0], folder) from None

    def fd_change_time(self, key, fd):
        """fd_change_time(pid, fd, root) of the process `key` names."""
        try:
            return self._use(key, self._open, lambda dir_fd: os.stat(str(fd), dir_fd=dir_fd).st_ctime)
        except OSError as e:
            raise _mapped(e, key[0], f'{self.root}/{key[0]}/fd/{fd}') from None

    def _open(self, key):
        return self._open_verified(key, 'fd', OPEN_DIR_FLAGS)


class ChildrenReader(KeptFds):
    """read_children() through /proc/PID/task/PID/children files kept open between runs, one
    per process, named by its Proc.key, and opened as FdReader opens its directories: a kept
    file lists that process's children, never those of a later process with the same pid.
    The file of a process that is gone reads empty: callers read its stat first."""

    def __init__(self, root='/proc', limit=None):
        super().__init__(root, limit)

    def read_children(self, key):
        """read_children(pid, root) of the process `key` names."""
        path = _children_path(self.root, key[0])
        try:
            return self._use(key, self._open_children, lambda fd: _children_of(_pread_children(fd), path))
        except OSError as e:
            raise _mapped(e, key[0], path) from None

    def _open_children(self, key):
        pid = key[0]
        try:
            return self._open_verified(key, f'task/{pid}/children', OPEN_FLAGS)
        except psutil.NoSuchProcess:
            # Also what a kernel without the file answers: told apart by the process being there.
            try:
                alive = read_stat(pid, self.root).start_ticks == key[1]
            except psutil.Error:
                alive = False
            if alive:
                raise ChildrenUnsupported(f'{_children_path(self.root, pid)} does not exist') from None
            raise
