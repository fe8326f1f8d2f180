"""TCP sockets from the kernel's sock_diag netlink interface (what `ss` uses), by state.

/proc/PID/net/tcp always walks the whole established hash table, whose size grows with
the host's memory: about 2 ms per read on a 24 GB host, whatever the number of sockets.
A sock_diag dump of LISTEN sockets walks only the listening hash, a hundredth of that,
which is what makes reading accept queues every run affordable. Connections are dumped
with a kernel-side filter on the listeners' ports, so other apps' sockets never reach
Python, and with `tcp_info`, which tells whether a request is in flight on each.
Netlink answers for the network namespace its socket was made in: `open_socket(netns)`
makes one in another namespace (a container's), which needs the Agent to be root there.
"""

import ctypes
import ctypes.util
import os
import socket
import struct
import threading
from typing import NamedTuple

from .procfs import TcpSocket

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
HEADER = struct.Struct('=IHHII')  # struct nlmsghdr
REQUEST = struct.Struct('=BBBBI48x')  # struct inet_diag_req_v2, with an all-zero inet_diag_sockid
SOURCE_PORT = struct.Struct('>H')  # inet_diag_sockid.idiag_sport, the first field of the sockid
SOCKID_OFFSET = 8  # of the sockid in inet_diag_req_v2
ATTRIBUTE = struct.Struct('=HH')  # struct nlattr / struct rtattr: length, type
DIAG_MSG_SIZE = 72  # struct inet_diag_msg
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_INFO = 2
TIMEOUT = 1.0
CLONE_NEWNET = 0x40000000
# The kernel fills a dump's datagrams up to 32 KiB; a larger buffer only costs a bigger
# allocation at every recv (1 MiB was mapped and unmapped twice a run).
RECEIVE_SIZE = 64 * 1024

# inet_diag bytecode (linux/inet_diag.h): an op is code, jump if yes, jump if no (bytes).
BC_OP = struct.Struct('=BBH')
BC_JMP = 1
BC_S_GE = 2
BC_S_LE = 3

# struct tcp_info offsets (linux/tcp.h); the kernel sends as much of it as it knows.
TCP_INFO = {
    'unacked': 24,
    'last_data_sent': 44,  # ms since data was last sent
    'last_data_recv': 52,  # ms since data was last received
    'notsent_bytes': 144,
    'data_segs_in': 152,
    'data_segs_out': 156,
}
TCP_INFO_NEEDED = 160  # Linux 4.6 and later send at least this much


class SockDiagUnavailable(Exception):
    """The kernel or a sandbox (seccomp, a missing module) refuses sock_diag."""


class TcpInfo(NamedTuple):
    """What the kernel's tcp_info says of a server-side connection, as `ss -ti` shows it."""

    unacked: int
    last_data_sent: int
    last_data_recv: int
    notsent_bytes: int
    data_segs_in: int
    data_segs_out: int

    @property
    def request_in_flight(self):
        """A request arrived and its response is not complete: data came in and nothing went
        out yet, or data came in more recently than data went out, or response bytes are
        still unsent or unacknowledged. The times are whole milliseconds (jiffies, really):
        equal times after a response are a kept-alive connection that answered quickly."""
        if not self.data_segs_in:
            return False  # accepted, no request yet
        if not self.data_segs_out or self.notsent_bytes or self.unacked:
            return True
        return self.last_data_recv < self.last_data_sent


def open_socket(netns=None):
    """A sock_diag netlink socket in the caller's network namespace, or in the one `netns`
    (a /proc/PID/ns/net path) names. setns moves only the calling thread, so a thread of its
    own joins the namespace, makes the socket and ends: the socket stays in that namespace
    and the Agent's threads never leave theirs."""
    if netns is None:
        return _new_socket()
    outcome = {}

    def make_inside():
        try:
            with open(netns, 'rb') as namespace:
                _setns(namespace.fileno())
            outcome['socket'] = _new_socket()
        except OSError as e:
            outcome['error'] = e

    thread = threading.Thread(target=make_inside, name='gunicorn-check-setns')
    thread.start()
    thread.join()
    if 'error' in outcome:
        error = outcome['error']
        raise SockDiagUnavailable(f'sock_diag netlink in {netns}: {error.strerror or error}') from None
    return outcome['socket']


def _new_socket():
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
    except OSError as e:
        raise SockDiagUnavailable(f'sock_diag netlink: {e.strerror or e}') from None
    # The kernel's own timeouts, not settimeout(): a Python timeout polls before every call,
    # and a dump is answered at once (its first datagram during send, each next one during recv).
    timeout = struct.pack('@ll', int(TIMEOUT), int(TIMEOUT % 1 * 1e6))  # struct timeval
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
    return sock


def _setns(fd):
    if hasattr(os, 'setns'):  # Python 3.12 and later
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def dump_tcp(family, states, ports=None, info=False, sock=None):
    """TcpSocket of every TCP socket of `family` (AF_INET or AF_INET6) whose state is one of
    `states` (TCP_* numbers), in the network namespace of `sock` (an `open_socket()`, kept by
    the caller) or else the caller's; with `ports`, only sockets whose local port is one of
    them, filtered by the kernel: a single port in the request's own source port, which the
    kernel compares before anything else, several with bytecode (see port_filter). For a
    LISTEN socket, rx_queue is its accept queue, as in /proc/net/tcp. With `info`, each
    socket's `info` is its TcpInfo, or None where the kernel sent too little of it."""
    own = sock is None
    if own:
        sock = _new_socket()
    try:
        sock.sendto(dump_request(family, states, ports, info), (0, 0))
        sockets = []
        while True:
            if _parse(sock.recv(RECEIVE_SIZE), family, info, sockets):
                return sockets
    except OSError as e:
        raise SockDiagUnavailable(f'sock_diag netlink: {e.strerror or e}') from None
    finally:
        if own:
            sock.close()


def dump_request(family, states, ports=None, info=False):
    """The netlink message asking for dump_tcp()'s sockets."""
    mask = 0
    for state in states:
        mask |= 1 << state
    extensions = 1 << (INET_DIAG_INFO - 1) if info else 0
    request = bytearray(REQUEST.pack(family, socket.IPPROTO_TCP, extensions, 0, mask))
    if ports and len(ports) == 1:
        SOURCE_PORT.pack_into(request, SOCKID_OFFSET, *ports)
    elif ports:
        request += _attribute(INET_DIAG_REQ_BYTECODE, port_filter(ports))
    header = HEADER.pack(HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    return header + request


def port_filter(ports):
    """Bytecode that accepts a socket whose local port is any of `ports`. Each port is a
    `>= p` and `<= p` pair (understood by every kernel, unlike the newer S_EQ) that jumps to
    the next port when it fails; a JMP after each pair but the last accepts. A program
    accepts by running exactly to its end and rejects by jumping 4 bytes past it."""
    ports = sorted(set(ports))
    pair = 4 * BC_OP.size
    size = (pair + BC_OP.size) * (len(ports) - 1) + pair
    code = b''
    for index, port in enumerate(ports):
        last = index == len(ports) - 1
        to_next = size - len(code) + BC_OP.size if last else pair + BC_OP.size
        code += BC_OP.pack(BC_S_GE, 2 * BC_OP.size, to_next) + BC_OP.pack(0, 0, port)
        code += BC_OP.pack(BC_S_LE, 2 * BC_OP.size, to_next - 2 * BC_OP.size) + BC_OP.pack(0, 0, port)
        if not last:
            # yes=4 keeps the kernel's audit, which walks the yes jumps, in step with the code.
            code += BC_OP.pack(BC_JMP, BC_OP.size, size - len(code))
    return code


def _attribute(kind, payload):
    length = ATTRIBUTE.size + len(payload)
    return ATTRIBUTE.pack(length, kind) + payload + b'\0' * (-length % 4)


def _parse(data, family, info, sockets):
    """Append the sockets of one datagram (with their TcpInfo when `info`); True once the dump is done."""
    offset = 0
    address_size = 4 if family == socket.AF_INET else 16
    while offset + HEADER.size <= len(data):
        length, kind = HEADER.unpack_from(data, offset)[:2]
        if length < HEADER.size or offset + length > len(data):
            raise SockDiagUnavailable(f'sock_diag netlink: a message of {length} bytes')
        body = offset + HEADER.size
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from('=i', data, body)
            raise OSError(-error, f'the kernel answered error {-error}')
        if length < HEADER.size + DIAG_MSG_SIZE:
            raise SockDiagUnavailable(f'sock_diag netlink: a socket message of {length} bytes')
        # struct inet_diag_msg: family, state, timer, retrans; sockid (sport, dport big-endian,
        # src[16], dst[16], if, cookie[2]); expires, rqueue, wqueue, uid, inode.
        state = data[body + 1]
        (port,) = struct.unpack_from('>H', data, body + 4)
        ip = socket.inet_ntop(family, data[body + 8 : body + 8 + address_size])
        rqueue, _, _, inode = struct.unpack_from('=IIII', data, body + 56)
        tcp = _tcp_info(data, body + DIAG_MSG_SIZE, offset + length) if info else None
        sockets.append(TcpSocket(ip, port, state, rqueue, inode, tcp))
        offset += (length + 3) & ~3
    return False


def _tcp_info(data, start, end):
    """The TcpInfo among a socket message's attributes, or None."""
    while start + ATTRIBUTE.size <= end:
        length, kind = ATTRIBUTE.unpack_from(data, start)
        if length < ATTRIBUTE.size:
            return None
        if kind == INET_DIAG_INFO:
            return tcp_info(data, start + ATTRIBUTE.size, start + length)
        start += (length + 3) & ~3
    return None


def tcp_info(data, start=0, end=None):
    """The TcpInfo of the struct tcp_info in data[start:end], as the INET_DIAG_INFO attribute
    and getsockopt(TCP_INFO) carry it; None where the kernel sent too little of it."""
    end = len(data) if end is None else end
    if end - start < TCP_INFO_NEEDED:
        return None
    return TcpInfo(*(struct.unpack_from('=I', data, start + at)[0] for at in TCP_INFO.values()))
