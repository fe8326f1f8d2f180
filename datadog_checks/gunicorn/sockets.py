"""The addresses gunicorn's workers serve, their accept queues, and the connections being served.

An app's listeners are the listening sockets its workers hold: inherited from the master,
or each worker's own with `--reuse-port` on gunicorn >= 24 (the master then holds none).
A socket only the master holds (its control socket) is never a listener. Knowing which
sockets a worker holds needs its fds (root or gunicorn's user); without them the
`listeners` option names the addresses. What a held socket is, and a held TCP connection's
tcp_info, the Agent asks the socket itself, through a duplicate of the worker's fd (pidfd.py;
root or CAP_SYS_PTRACE); everything else, and what a refused Agent cannot ask, comes from the
kernel's socket tables in the master's network namespace. As Raindrops does for unicorn:
- queued: connections the kernel completed that no worker has accepted yet (the sum of the
  accept queues of every socket on the address; for a Unix socket, connections on its path
  that no process holds);
- active: connections on the address that a worker accepted and has not closed;
- whether a request is in flight on a connection: the kernel's tcp_info (sockdiag.py), for
  TCP, from the socket itself or through a sock_diag socket made in the master's network
  namespace (a container's too, when the Agent is root); unknown (None) for Unix sockets, and
  where /proc/PID/net/tcp must stand in.
"""

import ipaddress
import socket
from typing import NamedTuple

import psutil

from . import pidfd, procfs, sockdiag

ANY_ADDRESSES = frozenset({'0.0.0.0', '::'})
SERVED_TCP_STATES = frozenset({procfs.TCP_ESTABLISHED, procfs.TCP_CLOSE_WAIT})
FAMILIES = (socket.AF_INET, socket.AF_INET6)


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

    @property
    def family(self):
        return socket.AF_INET6 if ':' in self.host else socket.AF_INET

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


class Connection(NamedTuple):
    """A client connection a worker holds."""

    listener: Listener
    in_flight: bool  # a request is being served on it; None where the kernel cannot tell


class SocketSample(NamedTuple):
    listeners: list  # of ListenerStats, one per address
    connections: dict  # inode -> Connection, of the client connections the workers hold
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


class NamespaceSample(NamedTuple):
    queues: dict  # listen socket inode (or a negative number per queued Unix connection) -> (Listener, queue)
    in_flight: dict  # inode of a held TCP connection -> whether a request is in flight (None: unknown)
    kernel_active: list  # Listener of each connection the kernel lists on a configured address


class Sockets:
    """What the sockets the workers hold are, learnt once per socket, and their counts each run."""

    def __init__(self, configured, root='/proc'):
        self.configured = list(configured)
        self.root = root

        # State kept between runs.
        self.listening = {}  # inode of a listen socket a worker holds -> its Listener
        self.client_of = {}  # inode of another socket a worker holds -> Listener it was accepted from, or None
        self.netlink = True  # False once sock_diag was refused in the Agent's namespace: /proc/PID/net/tcp* stands in
        self.own_namespace = None  # procfs.network_namespace of the Agent itself
        self.diag_sockets = {}  # network namespace -> sock_diag socket made in it, None where that was refused
        self.namespace_of = {}  # Proc.key of a master -> its network namespace
        # The held sockets are asked through these, kept between runs; None once pidfd_getfd was
        # refused, or where the pids `root` shows are not the Agent's, which pidfd_open takes:
        # the tables stand in.
        self.pidfds = pidfd.Pidfds(root) if procfs.shows_own_pid_namespace(root) else None

    def sample(self, masters, fds_by_key, held_complete):
        """Counts per listener and the connections the workers hold. `fds_by_key`: Proc.key ->
        workers.WorkerFds of the workers whose fds could be read; `held_complete`: whether
        every worker's could. When some could not, the configured addresses stand in for
        listeners and a connection is active when the kernel lists it on the address."""
        problems = []
        held_inodes = set().union(*(fds.socket_fds.keys() for fds in fds_by_key.values()))
        self._forget_unheld(held_inodes)
        configured = [] if held_complete else self.configured
        asked_in_flight = self._ask_sockets(fds_by_key, held_inodes, configured)
        # What the sockets themselves answered, the tables are not read for.
        pending = held_inodes - asked_in_flight.keys()
        queues, in_flight, kernel_active = {}, {}, []
        namespaces = self._namespaces(masters, problems)
        self._close_diag_sockets(keep=set(namespaces.values()))
        for pid, namespace in namespaces.items():
            try:
                found = self._sample_namespace(pid, namespace, pending, configured)
            except psutil.NoSuchProcess:
                continue
            except (psutil.AccessDenied, procfs.ProcfsError) as e:
                problems.append(f'Cannot read the sockets of gunicorn master {pid}: {procfs.describe(e)}')
                continue
            queues.update(found.queues)
            in_flight.update(found.in_flight)
            kernel_active.extend(found.kernel_active)
        in_flight.update(asked_in_flight)
        for inode in self._unknown(held_inodes):
            self.client_of[inode] = None  # neither a listener nor one of its connections: a database, StatsD...

        connections = {
            inode: Connection(self.client_of[inode], in_flight.get(inode))
            for inode in held_inodes
            if self.client_of.get(inode) is not None
        }
        listed = {listener for listener, _ in queues.values()}
        problems.extend(
            f'No socket listens on {listener.address} in the network namespace of the master'
            for listener in configured
            if listener not in listed
        )
        active = [c.listener for c in connections.values()] if held_complete else kernel_active
        return SocketSample(listener_stats(queues, active), connections, problems)

    def _sample_namespace(self, pid, namespace, held_inodes, configured):
        """Read the tables of one network namespace, learn what the unknown held sockets are,
        and count. Each table is read only when there is something to count or learn in it:
        a new connection of a known listener is learnt from the port-filtered connection dump
        the run needs anyway, so only sockets still unknown after it cost the other tables.
        While every held socket is known, the kernel lists only the known listeners' ports."""
        known = {*self.listening.values(), *configured}
        connections = self._tcp_connections(pid, namespace, known, held_inodes, configured)
        self._learn_connections(self._unknown(held_inodes), connections, self._tcp_listeners(configured))
        unknown = self._unknown(held_inodes)

        if unknown:
            families, ports = FAMILIES, None  # any listener there may be the unknown socket
        else:
            tcp = self._tcp_listeners(configured)
            families, ports = {lst.family for lst in tcp}, {lst.port for lst in tcp}
        listen = [sock for family in families for sock in self._tcp(pid, namespace, family, {procfs.TCP_LISTEN}, ports)]
        unix_paths = {lst.path for lst in known if lst.path}
        unix = procfs.read_net_unix(pid, self.root, None if unknown else unix_paths) if unknown or unix_paths else []
        self._learn_listeners(unknown, listen, unix)

        new_listeners = {*self.listening.values(), *configured} - known
        if self._unknown(held_inodes) and any(not lst.path for lst in new_listeners):
            connections += self._tcp_connections(pid, namespace, new_listeners, held_inodes, configured, always=True)
            self._learn_connections(self._unknown(held_inodes), connections, self._tcp_listeners(configured))
        unix_listeners = self._unix_listeners(configured)
        self._learn_unix_connections(self._unknown(held_inodes), unix, unix_listeners)

        return NamespaceSample(
            queues={**tcp_queues(listen, self.listening, configured), **unix_queues(unix, unix_listeners)},
            in_flight={sock.inode: request_in_flight(sock) for sock in connections if sock.inode in held_inodes},
            kernel_active=served_on(configured, connections, unix),
        )

    def _tcp_connections(self, pid, namespace, listeners, held_inodes, configured, always=False):
        """The connections on the ports of the TCP `listeners`, when the run needs them: some
        held socket is unknown, a held one is a TCP connection, or configured addresses count
        what the kernel lists."""
        tcp = [lst for lst in listeners if not lst.path]
        needed = always or configured or self._holds_tcp_connections(held_inodes) or self._unknown(held_inodes)
        if not tcp or not needed:
            return []
        ports = {lst.port for lst in tcp}
        return [
            sock
            for family in {lst.family for lst in tcp}
            for sock in self._tcp(pid, namespace, family, SERVED_TCP_STATES, ports)
        ]

    def _ask_sockets(self, fds_by_key, held_inodes, configured):
        """Ask the held sockets the tables would be read for (pidfd.py) what they are: each one
        not known yet, and each TCP connection, whose tcp_info changes with every request on it
        (kept alive, or a sync worker's). Learns the new ones; returns inode -> in_flight of each
        held TCP connection asked. A worker that could not be asked is left to the tables."""
        if self.pidfds is None:
            return {}
        self.pidfds.sweep()  # of the workers not asked at the previous run
        wanted = {inode for inode in held_inodes if self._to_ask(inode)}
        if not wanted:
            return {}
        answers = self._answers(fds_by_key, wanted)
        self._learn_answers(answers, configured)
        return {inode: request_in_flight(sock) for inode, sock in answers.items() if self._is_tcp_connection(inode)}

    def _answers(self, fds_by_key, wanted):
        """inode -> what each socket of `wanted` said, None for one of another kind or closed
        since; those of workers that could not be asked are left out."""
        answers = {}
        for key, fds in fds_by_key.items():
            asked = {inode: fd for inode, fd in fds.socket_fds.items() if inode in wanted and inode not in answers}
            if not asked:
                continue
            try:
                found = self.pidfds.sockets_of(key, asked)
            except psutil.AccessDenied:
                # Refused by the kernel (too old), or by what the Agent may do to this pool's
                # workers, which all run as one user under one policy: so to every worker, for
                # as long as the pool lives. Never asked again, not to pay a refusal each run.
                self.pidfds.close()
                self.pidfds = None
                break
            except (psutil.NoSuchProcess, procfs.ProcfsError):
                continue
            answers.update(dict.fromkeys(asked))
            answers.update((sock.inode, sock) for sock in found)
        return answers

    def _learn_answers(self, answers, configured):
        unknown = self._unknown(answers)
        tcp = [sock for sock in answers.values() if isinstance(sock, procfs.TcpSocket)]
        unix = [sock for sock in answers.values() if isinstance(sock, procfs.UnixSocket)]
        self._learn_listeners(unknown, [sock for sock in tcp if sock.state == procfs.TCP_LISTEN], unix)
        # As the tables would: connections in the states they list, of the listeners known now.
        served = [sock for sock in tcp if sock.state in SERVED_TCP_STATES]
        self._learn_connections(unknown, served, self._tcp_listeners(configured))
        self._learn_unix_connections(unknown, unix, self._unix_listeners(configured))
        for inode in self._unknown(answers):
            self.client_of[inode] = None

    def _to_ask(self, inode):
        return inode not in self.listening and (inode not in self.client_of or self._is_tcp_connection(inode))

    def _is_tcp_connection(self, inode):
        listener = self.client_of.get(inode)
        return listener is not None and not listener.path

    def _tcp_listeners(self, configured):
        return [lst for lst in {*self.listening.values(), *configured} if not lst.path]

    def _unix_listeners(self, configured):
        return {lst.path: lst for lst in {*self.listening.values(), *configured} if lst.path}

    def _unknown(self, held_inodes):
        return {inode for inode in held_inodes if inode not in self.listening and inode not in self.client_of}

    def _forget_unheld(self, held_inodes):
        """Socket inodes are reused once closed: forget every socket no worker holds any more."""
        self.listening = {inode: lst for inode, lst in self.listening.items() if inode in held_inodes}
        self.client_of = {inode: lst for inode, lst in self.client_of.items() if inode in held_inodes}

    def _holds_tcp_connections(self, held_inodes):
        return any(self._is_tcp_connection(inode) for inode in held_inodes)

    def _learn_listeners(self, unknown, listen, unix):
        for sock in listen:
            if sock.inode in unknown:
                self.listening[sock.inode] = Listener(sock.local_ip, sock.local_port, '')
        for sock in unix:
            if sock.inode in unknown and sock.flags & procfs.UNIX_ACCEPTING:
                self.listening[sock.inode] = Listener('', 0, sock.path)

    def _learn_connections(self, unknown, connections, tcp_listeners):
        for sock in connections:
            if sock.inode in unknown:
                listener = next((lst for lst in tcp_listeners if lst.serves(sock)), None)
                if listener is not None:
                    self.client_of[sock.inode] = listener

    def _learn_unix_connections(self, unknown, unix, unix_listeners):
        for sock in unix:
            if sock.inode in unknown and sock.state == procfs.UNIX_CONNECTED and sock.path in unix_listeners:
                self.client_of[sock.inode] = unix_listeners[sock.path]

    def _namespaces(self, masters, problems):
        """pid of one master per network namespace -> that namespace's st_ino. Learnt once per
        master: a process changes namespace only by setns or unshare, which gunicorn never calls."""
        self.namespace_of = {
            master.key: self.namespace_of[master.key] for master in masters if master.key in self.namespace_of
        }
        namespaces = {}
        for master in masters:
            namespace = self.namespace_of.get(master.key)
            if namespace is None:
                try:
                    namespace = self.namespace_of[master.key] = procfs.network_namespace(master.pid, self.root)
                except psutil.NoSuchProcess:
                    continue
                except (psutil.AccessDenied, procfs.ProcfsError) as e:
                    problems.append(f'Cannot read the sockets of gunicorn master {master.pid}: {procfs.describe(e)}')
                    continue
            if namespace not in namespaces.values():
                namespaces[master.pid] = namespace
        return namespaces

    def _tcp(self, pid, namespace, family, states, ports=None):
        """TCP sockets of PID's network namespace in `states`, on `ports` when given: from
        sock_diag (with tcp_info for connections) where a netlink socket can be had in that
        namespace, otherwise from /proc/PID/net/tcp*, which has no tcp_info."""
        sock = self._diag_socket(pid, namespace)
        if sock is not None:
            try:
                return sockdiag.dump_tcp(family, states, ports, info=procfs.TCP_LISTEN not in states, sock=sock)
            except sockdiag.SockDiagUnavailable:
                # A dump cut short leaves its answer in the socket: never read from it again.
                sock.close()
                self.diag_sockets[namespace] = None
                if namespace == self.own_namespace:
                    self.netlink = False
        name = 'tcp6' if family == socket.AF_INET6 else 'tcp'
        return [
            sock
            for sock in procfs.read_net_tcp(pid, name, self.root)
            if sock.state in states and (ports is None or sock.local_port in ports)
        ]

    def _diag_socket(self, pid, namespace):
        """The sock_diag socket kept for a network namespace, made at first use; None where
        sock_diag was refused there (another namespace needs the Agent to be root in it)."""
        if self.own_namespace is None:
            self.own_namespace = procfs.network_namespace('self')
        if namespace == self.own_namespace and not self.netlink:
            return None
        if namespace not in self.diag_sockets:
            netns = None if namespace == self.own_namespace else f'{self.root}/{pid}/ns/net'
            try:
                self.diag_sockets[namespace] = sockdiag.open_socket(netns)
            except sockdiag.SockDiagUnavailable:
                self.diag_sockets[namespace] = None
                if netns is None:
                    self.netlink = False
        return self.diag_sockets[namespace]

    def close(self):
        """Close the sock_diag sockets and pidfds kept between runs: the pool they served is gone."""
        self._close_diag_sockets(keep=set())
        if self.pidfds is not None:
            self.pidfds.close()

    def _close_diag_sockets(self, keep):
        for namespace in [ns for ns in self.diag_sockets if ns not in keep]:
            sock = self.diag_sockets.pop(namespace)
            if sock is not None:
                sock.close()


def request_in_flight(sock):
    """Whether a request is in flight on a held TCP connection, as the tables tell it: None (not
    known) where they would not list it (closed, or in another state), or without tcp_info."""
    if sock is None or sock.state not in SERVED_TCP_STATES or sock.info is None:
        return None
    return sock.info.request_in_flight


def tcp_queues(listen, listening, configured):
    """listen socket inode -> (Listener, accept queue), for the held and configured TCP listeners."""
    queues = {}
    for sock in listen:
        listener = listening.get(sock.inode) or next((lst for lst in configured if lst.serves(sock)), None)
        if listener is not None:
            queues[sock.inode] = (listener, sock.rx_queue)
    return queues


def unix_queues(unix, listeners):
    """Like tcp_queues for Unix listeners (path -> Listener): a connection the kernel completed
    and nobody accepted yet has inode 0 and its listener's path; each counts one, under a key
    of its own that no inode takes."""
    queues = {}
    for index, sock in enumerate(unix):
        listener = listeners.get(sock.path)
        if listener is None:
            continue
        if sock.flags & procfs.UNIX_ACCEPTING:
            queues.setdefault(sock.inode, (listener, 0))
        elif sock.inode == 0:
            queues[-1 - index] = (listener, 1)
    return queues


def served_on(configured, connections, unix):
    """Listener of each connection the kernel lists on a configured address, accepted by anyone."""
    tcp = [lst for sock in connections if sock.inode for lst in configured if lst.serves(sock)]
    paths = {lst.path: lst for lst in configured if lst.path}
    return tcp + [paths[s.path] for s in unix if s.path in paths and s.inode and s.state == procfs.UNIX_CONNECTED]


def listener_stats(queues, active):
    """ListenerStats per address, queues summed over every socket on it (`--reuse-port`)."""
    queued = {}
    for listener, queue in queues.values():
        queued[listener] = queued.get(listener, 0) + queue
    return [ListenerStats(lst, queued[lst], active.count(lst)) for lst in sorted(queued)]
