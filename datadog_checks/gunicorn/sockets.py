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
import os
import socket
from typing import NamedTuple

import psutil

from . import procfs, sockdiag

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
        self.by_master = {}  # Proc.key -> {Listener: listen socket inode, None for a configured address}
        self.fds_denied = False  # the master's fds were unreadable: configured addresses stand in
        self.client_of = {}  # inode of a socket a worker holds -> Listener it was accepted from, or None
        self.netlink = True  # False once sock_diag was refused: /proc/PID/net/tcp* stands in
        self.own_namespace = None  # st_ino of /proc/self/net/tcp, which names the Agent's network namespace

    def sample(self, masters, held_inodes, held_complete):
        """Counts per listener. `held_inodes`: socket inodes the workers hold, from their fds;
        `held_complete`: whether every worker's fds could be read. When they could, a
        connection is active because a worker holds it, and the TCP table is walked only
        for sockets not seen before; otherwise the table is walked every run."""
        problems = []
        namespaces = {}  # network namespace -> (pid of a master in it, {Listener: listen inode})
        for master in masters:
            try:
                listeners = self._listeners(master)
                namespace = os.stat(f'{self.root}/{master.pid}/net/tcp').st_ino
            except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
                continue
            except (psutil.AccessDenied, procfs.ProcfsError, OSError) as e:
                problems.append(f'Cannot read the sockets of gunicorn master {master.pid}: {procfs.describe(e)}')
                continue
            namespaces.setdefault(namespace, (master.pid, {}))[1].update(listeners)
        self.by_master = {key: value for key, value in self.by_master.items() if key in {m.key for m in masters}}

        backlog = {}  # (Listener, listen socket inode) -> accept queue: a socket shared by masters counts once
        kernel_active = set()  # (Listener, inode of a connection a process holds), the kernel's view
        unknown = {inode for inode in held_inodes if inode not in self.client_of}
        for namespace, (pid, listeners) in namespaces.items():
            try:
                self._read_tables(pid, namespace, listeners, unknown, held_complete, backlog, kernel_active)
            except psutil.NoSuchProcess:
                continue
            except (psutil.AccessDenied, procfs.ProcfsError) as e:
                problems.append(f'Cannot read the sockets of gunicorn master {pid}: {procfs.describe(e)}')
        for inode in unknown:
            self.client_of.setdefault(inode, None)
        self.client_of = {inode: self.client_of[inode] for inode in held_inodes}

        served = {inode for inode, listener in self.client_of.items() if listener is not None}
        if held_complete:
            active = [self.client_of[inode] for inode in served]
        else:
            active = [listener for listener, _ in kernel_active]
        found = {listener for listener, _ in backlog}
        for key, listeners in list(self.by_master.items()):
            gone = [listener for listener in listeners if listener not in found]
            if any(listeners[listener] is not None for listener in gone):
                del self.by_master[key]  # a HUP rebound the master elsewhere: read its fds again next run
            problems.extend(
                f'No socket listens on {listener.address} in the network namespace of the master'
                for listener in gone
                if listeners[listener] is None
            )
        queued = dict.fromkeys(found, 0)
        for (listener, _), queue in backlog.items():
            queued[listener] += queue
        stats = [ListenerStats(listener, queued[listener], active.count(listener)) for listener in sorted(found)]
        return SocketSample(stats, served, problems)

    def _listeners(self, master):
        known = self.by_master.get(master.key)
        if known is not None:
            return known
        try:
            inodes = procfs.socket_inodes(procfs.read_fd_links(master.pid, self.root))
        except psutil.AccessDenied:
            self.fds_denied = True
            self.by_master[master.key] = dict.fromkeys(self.configured)
            return self.by_master[master.key]
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

    def _read_tables(self, pid, namespace, listeners, unknown, held_complete, backlog, kernel_active):
        tcp_listeners = [listener for listener in listeners if not listener.path]
        paths = {listener.path: listener for listener in listeners if listener.path}
        if paths:
            for sock in procfs.read_net_unix(pid, self.root, paths=paths):
                listener = paths[sock.path]
                if sock.flags & procfs.UNIX_ACCEPTING:
                    backlog.setdefault((listener, sock.inode), 0)
                elif sock.inode == 0:
                    backlog[(listener, -1)] = backlog.get((listener, -1), 0) + 1  # queued, not yet accepted
                elif sock.state == procfs.UNIX_CONNECTED:
                    kernel_active.add((listener, sock.inode))
                    if sock.inode in unknown:
                        self.client_of[sock.inode] = listener
        if not tcp_listeners:
            return
        families = {socket.AF_INET6 if ':' in listener.host else socket.AF_INET for listener in tcp_listeners}
        walk = not held_complete or any(inode not in self.client_of for inode in unknown)
        for family in families:
            for sock in self._tcp(pid, namespace, family, walk):
                listener = next((lst for lst in tcp_listeners if lst.serves(sock)), None)
                if listener is None:
                    continue
                if sock.state == procfs.TCP_LISTEN:
                    backlog[(listener, sock.inode)] = sock.rx_queue
                elif sock.inode:
                    kernel_active.add((listener, sock.inode))
                    if sock.inode in unknown:
                        self.client_of[sock.inode] = listener

    def _tcp(self, pid, namespace, family, connected):
        """LISTEN sockets of PID's network namespace, plus the served ones when `connected`."""
        states = SERVED_TCP_STATES | {procfs.TCP_LISTEN} if connected else {procfs.TCP_LISTEN}
        if self.own_namespace is None:
            # Every process of one network namespace shows the same /proc/PID/net/tcp entry.
            self.own_namespace = os.stat('/proc/self/net/tcp').st_ino
        if self.netlink and namespace == self.own_namespace:
            try:
                return sockdiag.dump_tcp(family, states)
            except sockdiag.SockDiagUnavailable:
                self.netlink = False
        name = 'tcp6' if family == socket.AF_INET6 else 'tcp'
        return [sock for sock in procfs.read_net_tcp(pid, name, self.root) if sock.state in states]
