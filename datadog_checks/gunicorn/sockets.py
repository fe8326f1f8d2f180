"""The addresses gunicorn listens on, their accept queues, and the connections being served.

Everything comes from the kernel's socket tables in the master's network namespace
(/proc/PID/net/tcp, tcp6, unix), which any user may read. Knowing which sockets are
gunicorn's listeners needs the master's fds (root or gunicorn's user); without them the
`listeners` option names the addresses. As Raindrops does for unicorn:
- queued: connections the kernel completed that no worker has accepted yet (a TCP LISTEN
  socket's rx_queue; for a Unix socket, connections on its path that no process holds);
- active: connections on the address that a worker accepted and has not closed.
"""

import ipaddress
from typing import NamedTuple

import psutil

from . import procfs

ANY_ADDRESSES = frozenset({'0.0.0.0', '::'})
SERVED_TCP_STATES = frozenset({procfs.TCP_ESTABLISHED, procfs.TCP_CLOSE_WAIT})


class Listener(NamedTuple):
    host: str  # '' for a Unix socket
    port: int  # 0 for a Unix socket
    path: str  # '' for a TCP socket

    @property
    def address(self):
        """As gunicorn's --bind spells it; the `listener:` tag."""
        if self.path:
            return f'unix:{self.path}'
        return f'[{self.host}]:{self.port}' if ':' in self.host else f'{self.host}:{self.port}'

    def serves(self, tcp_socket):
        """Whether a socket of the TCP tables is on this listener's address."""
        if tcp_socket.local_port != self.port:
            return False
        if self.host in ANY_ADDRESSES or tcp_socket.local_ip == self.host:
            return True
        return tcp_socket.local_ip == f'::ffff:{self.host}'  # IPv4 client on a dual-stack socket


class ListenerStats(NamedTuple):
    listener: Listener
    queued: int
    active: int


class SocketSample(NamedTuple):
    listeners: list  # of ListenerStats, one per address
    served_inodes: set  # inodes of the client connections workers hold: a worker holding one is working
    problems: list


def parse_listener(text):
    """A `listeners` option entry, in gunicorn's --bind syntax: HOST:PORT, [IPV6]:PORT, unix:PATH."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f'{text!r} is not an address')
    text = text.strip()
    if text.startswith('unix:'):
        path = text[5:]
        if not path.startswith(('/', '@')):
            raise ValueError(f'{text!r}: a Unix socket needs an absolute path, as in unix:/run/gunicorn.sock')
        return Listener('', 0, path)
    host, sep, port = text.rpartition(':')
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'{text!r}: expected HOST:PORT, [IPV6]:PORT or unix:PATH')
    host = host[1:-1] if host.startswith('[') and host.endswith(']') else host
    try:
        host = str(ipaddress.ip_address(host or '0.0.0.0'))
    except ValueError:
        raise ValueError(f'{text!r}: the host must be an IP address, as the kernel reports it') from None
    return Listener(host, int(port), '')


class Sockets:
    """Listeners of each master, found once per master, and their counts each run."""

    def __init__(self, configured, root='/proc'):
        self.configured = list(configured)
        self.root = root

        # State kept between runs.
        self.by_master = {}  # Proc.key -> {Listener: listen socket inode}, from the master's fds
        self.fds_denied = False  # the master's fds were unreadable: configured addresses stand in

    def sample(self, masters):
        problems = []
        stats = {}
        served = set()
        for master in masters:
            try:
                listeners = self._listeners(master)
                tcp, unix = self._tables(master.pid, listeners)
            except psutil.NoSuchProcess:
                continue
            except (psutil.AccessDenied, procfs.ProcfsError) as e:
                problems.append(f'Cannot read the sockets of gunicorn master {master.pid}: {e}')
                continue
            for listener in listeners:
                queued, active, inodes = count(listener, tcp, unix)
                served |= inodes
                before = stats.get(listener)
                # Masters sharing one listen socket (USR2) report it once; replicas in other
                # network namespaces each have their own, and add up.
                if before is None or before[2] != listeners[listener]:
                    queued += before[0] if before else 0
                    active += before[1] if before else 0
                    stats[listener] = (queued, active, listeners[listener])
        self.by_master = {key: value for key, value in self.by_master.items() if key in {m.key for m in masters}}
        return SocketSample([ListenerStats(lst, q, a) for lst, (q, a, _) in stats.items()], served, problems)

    def _listeners(self, master):
        known = self.by_master.get(master.key)
        if known is not None:
            return known
        try:
            inodes = procfs.socket_inodes(procfs.read_fd_links(master.pid, self.root))
        except psutil.AccessDenied:
            self.fds_denied = True
            return dict.fromkeys(self.configured)
        listeners = {}
        for name in ('tcp', 'tcp6'):
            for sock in procfs.read_net_tcp(master.pid, name, self.root):
                if sock.state == procfs.TCP_LISTEN and sock.inode in inodes:
                    listeners[Listener(sock.local_ip, sock.local_port, '')] = sock.inode
        for sock in procfs.read_net_unix(master.pid, self.root):
            if sock.flags & procfs.UNIX_ACCEPTING and sock.inode in inodes:
                listeners[Listener('', 0, sock.path)] = sock.inode
        self.by_master[master.key] = listeners
        return listeners

    def _tables(self, pid, listeners):
        ports = {listener.port for listener in listeners if listener.port}
        paths = {listener.path for listener in listeners if listener.path}
        tcp = []
        if ports:
            for name in ('tcp', 'tcp6'):
                tcp.extend(procfs.read_net_tcp(pid, name, self.root, ports=ports))
        unix = procfs.read_net_unix(pid, self.root, paths=paths) if paths else []
        return tcp, unix


def count(listener, tcp, unix):
    """(queued, active, inodes of the active connections) of one listener."""
    queued = active = 0
    inodes = set()
    if listener.path:
        for sock in unix:
            if sock.path != listener.path or sock.flags & procfs.UNIX_ACCEPTING:
                continue
            if sock.inode == 0:
                queued += 1
            elif sock.state == procfs.UNIX_CONNECTED:
                active += 1
                inodes.add(sock.inode)
        return queued, active, inodes
    for sock in tcp:
        if not listener.serves(sock):
            continue
        if sock.state == procfs.TCP_LISTEN:
            queued += sock.rx_queue
        elif sock.state in SERVED_TCP_STATES and sock.inode:
            active += 1
            inodes.add(sock.inode)
    return queued, active, inodes
