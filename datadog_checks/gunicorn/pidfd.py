"""A worker's sockets looked at directly: pidfd_getfd (Linux 5.6) gives the Agent a duplicate of
one fd of another process, which it asks what it is and closes at once.

A sock_diag dump of connections walks the kernel's whole established hash, about 1 ms with
10,000 connections on the host however few are the app's; a look at one socket costs a few
microseconds whatever the host holds, and needs no netlink socket in the worker's network
namespace. It needs what ptrace needs (root, or CAP_SYS_PTRACE): where it is refused, the
caller reads the tables instead. Errors are mapped as procfs maps them: psutil.NoSuchProcess
(gone), psutil.AccessDenied (refused, by the kernel's rules, a seccomp filter or a kernel
without the call), procfs.ProcfsError (anything else).
"""

import ctypes
import errno
import os
import socket
import stat

import psutil

from . import procfs, sockdiag

SYS_PIDFD_GETFD = 438  # the same number on every architecture
REFUSED = frozenset({errno.EPERM, errno.EACCES, errno.ENOSYS})
TCP_INFO_SIZE = 256  # more than any kernel's struct tcp_info: it copies what it has
UNIX_UNCONNECTED = 0x01  # SS_UNCONNECTED, as /proc/net/unix shows a socket with no peer

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def getfd(pidfd, fd):
    """A duplicate in this process, for the caller to close, of fd `fd` of the process `pidfd`
    names; OSError as the os module's functions raise it."""
    duplicate = _libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
    if duplicate < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return duplicate


class Pidfds(procfs.KeptFds):
    """pidfds of the processes asked about, kept between runs by Proc.key. A pidfd names its
    process for good (once it exits, calls on it fail with ESRCH), so it is checked against a
    reused pid once, when opened, instead of with a /proc/PID/stat read at every run. `root`
    must show the Agent's own pid namespace: pidfd_open takes its pids."""

    def __init__(self, root='/proc', limit=None):
        super().__init__(root, limit)

    def sockets_of(self, key, fds):
        """procfs.TcpSocket or procfs.UnixSocket of each socket of `fds` (inode -> fd number) of
        the process `key` names, as the kernel's tables would list it; a TCP connection carries
        its tcp_info. Left out: sockets of other kinds, and those the process closed since its
        fds were read."""
        return self._use(key, self._open, lambda pidfd: _sockets_of(pidfd, key[0], fds))

    def _open(self, key):
        return open_process(key, self.root)


def _sockets_of(pidfd, pid, fds):
    looked_at = (_look_at(pidfd, pid, fd, inode) for inode, fd in fds.items())
    return [sock for sock in looked_at if sock is not None]


def open_process(key, root='/proc'):
    """A pidfd of the process `key` names, never of a later one that took its pid."""
    pid, start_ticks = key
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as e:
        raise _mapped(e, pid) from None
    try:
        # Read after the open: the process started at those ticks is there now, so it was
        # there at the open too, and the pidfd names it.
        if procfs.read_stat(pid, root).start_ticks != start_ticks:
            raise psutil.NoSuchProcess(pid)
    except BaseException:
        os.close(pidfd)
        raise
    return pidfd


def _look_at(pidfd, pid, fd, inode):
    try:
        duplicate = getfd(pidfd, fd)
    except OSError as e:
        if e.errno == errno.EBADF:
            return None  # closed since the fds were read
        raise _mapped(e, pid) from None
    try:
        return _described(duplicate, inode)
    except OSError as e:
        raise _mapped(e, pid) from None
    finally:
        os.close(duplicate)  # never keep another process's socket open


def _described(duplicate, inode):
    status = os.fstat(duplicate)
    if status.st_ino != inode or not stat.S_ISSOCK(status.st_mode):
        return None  # the socket was closed since the fds were read, and its number reused
    sock = socket.socket(fileno=duplicate)
    try:
        family = sock.family
        if family == socket.AF_UNIX:
            return _unix_socket(sock, inode)
        if family in (socket.AF_INET, socket.AF_INET6) and sock.proto == socket.IPPROTO_TCP:
            return _tcp_socket(sock, inode)
        return None
    finally:
        sock.detach()  # closed by the caller, once


def _tcp_socket(sock, inode):
    data = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
    ip, port = sock.getsockname()[:2]
    ip = ip.partition('%')[0]  # a link-local address's scope, which the tables leave out
    info = sockdiag.tcp_info(data)
    state = data[0]  # tcpi_state
    if state == procfs.TCP_LISTEN:
        # A listener's tcp_info holds only its accept queue, in tcpi_unacked.
        return procfs.TcpSocket(ip, port, state, info.unacked, inode)
    # A connection's rx_queue (bytes not read yet) is not in tcp_info; nothing here needs it.
    return procfs.TcpSocket(ip, port, state, 0, inode, info)


def _unix_socket(sock, inode):
    path = _unix_path(sock.getsockname())
    if not path:
        return None  # unnamed, as /proc/net/unix leaves out: neither a listener nor one of its connections
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        return procfs.UnixSocket(procfs.UNIX_ACCEPTING, UNIX_UNCONNECTED, inode, path)
    return procfs.UnixSocket(0, procfs.UNIX_CONNECTED if _connected(sock) else UNIX_UNCONNECTED, inode, path)


def _unix_path(name):
    """As /proc/net/unix shows it: an abstract name (bytes from Python) with @ for each NUL."""
    return name.replace(b'\0', b'@').decode('utf-8', 'replace') if isinstance(name, bytes) else name


def _connected(sock):
    try:
        sock.getpeername()
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            return False
        raise
    return True


def _mapped(error, pid):
    if error.errno in REFUSED:
        return psutil.AccessDenied(pid, msg=f'pidfd: {error.strerror}')
    if error.errno == errno.ESRCH:
        return psutil.NoSuchProcess(pid)
    return procfs.ProcfsError(f'pidfd of {pid}', error.strerror or str(error))
