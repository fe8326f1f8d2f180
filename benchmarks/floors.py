"""Floor scripts: the least work each benchmark scenario needs, written as plainly as Python allows.

Each floor reads what a run cannot do without (the stat of every process it reports on, one
sock_diag dump of the listen sockets, ...) and parses only the fields the check uses, so that
`ours / floor` says how much of a run is overhead. A floor built with `kept=True` opens its
files and its netlink socket once and reads them again with pread/recv at each call: the
floor of a design that keeps them open between runs.
"""

import os
import socket
import struct

from datadog_checks.gunicorn import pidfd, sockdiag
from datadog_checks.gunicorn.procfs import TCP_CLOSE_WAIT, TCP_ESTABLISHED, TCP_LISTEN
from datadog_checks.gunicorn.sockdiag import (
    HEADER,
    NETLINK_SOCK_DIAG,
    NLMSG_DONE,
    NLMSG_ERROR,
)

# A dump message is at most 32 KiB (the kernel's netlink dump size); twice that always holds one.
BUFFER_SIZE = 1 << 16


def parse_stat(data):
    fields = data[data.rfind(b')') + 2 :].split()
    return fields[0], int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19]), int(fields[21])


class Netlink:
    """sock_diag dumps into one 64 KiB buffer; with `kept`, over one socket opened once."""

    def __init__(self, kept):
        self.kept = kept
        self.buffer = bytearray(BUFFER_SIZE)
        self.view = memoryview(self.buffer)
        self.sock = self._open() if kept else None

    @staticmethod
    def _open():
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)

    def dump(self, request):
        """(port, state, rqueue, inode) of each socket the dump returns."""
        sock = self.sock if self.kept else self._open()
        try:
            sock.send(request)
            found = []
            while True:
                size = sock.recv_into(self.buffer)
                offset = 0
                while offset + HEADER.size <= size:
                    length, kind = HEADER.unpack_from(self.buffer, offset)[:2]
                    if kind == NLMSG_DONE:
                        return found
                    if kind == NLMSG_ERROR:
                        raise OSError('sock_diag refused the dump')
                    body = offset + HEADER.size
                    (port,) = struct.unpack_from('>H', self.buffer, body + 4)
                    rqueue, _, _, inode = struct.unpack_from('=IIII', self.buffer, body + 56)
                    found.append((port, self.buffer[body + 1], rqueue, inode))
                    offset += (length + 3) & ~3
        finally:
            if not self.kept:
                sock.close()

    def close(self):
        if self.sock is not None:
            self.sock.close()


class StatFiles:
    """/proc/PID/stat of each pid, read with fresh opens, or with pread on fds kept open."""

    def __init__(self, pids, kept):
        self.paths = [f'/proc/{pid}/stat' for pid in pids]
        self.fds = [os.open(path, os.O_RDONLY | os.O_CLOEXEC) for path in self.paths] if kept else None

    def read(self):
        if self.fds is not None:
            return [parse_stat(os.pread(fd, 4096, 0)) for fd in self.fds]
        stats = []
        for path in self.paths:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                stats.append(parse_stat(os.read(fd, 4096)))
            finally:
                os.close(fd)
        return stats

    def close(self):
        for fd in self.fds or ():
            os.close(fd)


class SteadyFloor:
    """An idle steady run: the stat of the master and of each worker, and one LISTEN dump
    (the accept queues)."""

    def __init__(self, pids, kept=False):
        self.stats = StatFiles(pids, kept)
        self.netlink = Netlink(kept)
        self.request = sockdiag.dump_request(socket.AF_INET, {TCP_LISTEN})

    def __call__(self):
        return self.stats.read(), self.netlink.dump(self.request)

    def close(self):
        self.stats.close()
        self.netlink.close()


class BusyFloor(SteadyFloor):
    """A run while every worker holds a connection it just accepted: the steady floor, plus the
    connections on the app's port (filtered by the kernel, with tcp_info), plus each worker's
    fds, read until every connection's holder is found."""

    def __init__(self, master, workers, port, kept=False):
        super().__init__([master, *workers], kept)
        self.fd_folders = [f'/proc/{pid}/fd' for pid in workers]
        self.connections = sockdiag.dump_request(socket.AF_INET, {TCP_ESTABLISHED, TCP_CLOSE_WAIT}, {port}, info=True)

    def __call__(self):
        stats, listen = super().__call__()
        held = {sock[3] for sock in self.netlink.dump(self.connections) if sock[3]}
        holders = {}
        for folder in self.fd_folders:
            if len(holders) == len(held):
                break
            for fd in os.listdir(folder):
                target = os.readlink(f'{folder}/{fd}')
                if target.startswith('socket:[') and int(target[8:-1]) in held:
                    holders[int(target[8:-1])] = folder
        return stats, listen, holders


class PidfdFloor(SteadyFloor):
    """The busy floor without the connection dump: each socket fd a worker did not hold when the
    floor was built is fetched with pidfd_getfd (root or CAP_SYS_PTRACE), and asked its local
    port and tcp_info directly, which costs the same whatever the size of the host's tables."""

    def __init__(self, master, workers, port):
        super().__init__([master, *workers])
        self.port = port
        self.workers = workers
        self.before = {pid: set(os.listdir(f'/proc/{pid}/fd')) for pid in workers}
        self._probe()

    def _probe(self):
        process = os.pidfd_open(self.workers[0])
        try:
            os.close(pidfd.getfd(process, 0))
        finally:
            os.close(process)

    def __call__(self):
        stats, listen = super().__call__()
        served = []
        for pid in self.workers:
            folder = f'/proc/{pid}/fd'
            process = os.pidfd_open(pid)
            try:
                for fd in os.listdir(folder):
                    if fd in self.before[pid] or not os.readlink(f'{folder}/{fd}').startswith('socket:['):
                        continue
                    with socket.socket(fileno=pidfd.getfd(process, int(fd))) as sock:
                        if sock.getsockname()[1] == self.port:
                            served.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232))
            finally:
                os.close(process)
        return stats, listen, served


def list_proc():
    """What a run with no master must do at least to notice a new one: list the pids."""
    return [name for name in os.listdir('/proc') if name.isdigit()]


class FirstRunFloor:
    """A first run: the comm of every process (to find the masters among them), the stat of the
    master and its workers, one LISTEN dump."""

    def __init__(self, pids):
        self.steady = SteadyFloor(pids)

    def __call__(self):
        comms = []
        for pid in list_proc():
            try:
                fd = os.open(f'/proc/{pid}/comm', os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                comms.append(os.read(fd, 64))
            except OSError:
                pass
            finally:
                os.close(fd)
        return comms, self.steady()

    def close(self):
        self.steady.close()
