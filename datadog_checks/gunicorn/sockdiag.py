"""TCP sockets from the kernel's sock_diag netlink interface (what `ss` uses), by state.

/proc/PID/net/tcp always walks the whole established hash table, whose size grows with
the host's memory: about 2 ms per read on a 24 GB host, whatever the number of sockets.
A sock_diag dump of LISTEN sockets walks only the listening hash, a hundredth of that,
which is what makes reading accept queues every run affordable. Netlink answers for the
caller's network namespace only: callers use it for masters in the Agent's own namespace.
"""

import socket
import struct

from .procfs import TcpSocket

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
HEADER = struct.Struct('=IHHII')  # struct nlmsghdr
REQUEST = struct.Struct('=BBBBI48x')  # struct inet_diag_req_v2, with an all-zero inet_diag_sockid
TIMEOUT = 1.0


class SockDiagUnavailable(Exception):
    """The kernel or a sandbox (seccomp, a missing module) refuses sock_diag."""


def dump_tcp(family, states):
    """TcpSocket of every TCP socket of `family` (AF_INET or AF_INET6) whose state is one of
    `states` (TCP_* numbers), in the caller's network namespace. For a LISTEN socket,
    rx_queue is its accept queue, as in /proc/net/tcp."""
    mask = 0
    for state in states:
        mask |= 1 << state
    request = REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, mask)
    header = HEADER.pack(HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
            sock.settimeout(TIMEOUT)
            sock.sendto(header + request, (0, 0))
            sockets = []
            while True:
                if _parse(sock.recv(1 << 20), family, sockets):
                    return sockets
    except OSError as e:
        raise SockDiagUnavailable(f'sock_diag netlink: {e.strerror or e}') from None


def _parse(data, family, sockets):
    """Append the sockets of one datagram; True once the dump is done."""
    offset = 0
    address_size = 4 if family == socket.AF_INET else 16
    while offset + HEADER.size <= len(data):
        length, kind = HEADER.unpack_from(data, offset)[:2]
        if length < HEADER.size:
            raise SockDiagUnavailable(f'sock_diag netlink: a message of {length} bytes')
        body = offset + HEADER.size
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from('=i', data, body)
            raise OSError(-error, f'the kernel answered error {-error}')
        # struct inet_diag_msg: family, state, timer, retrans; sockid (sport, dport big-endian,
        # src[16], dst[16], if, cookie[2]); expires, rqueue, wqueue, uid, inode.
        state = data[body + 1]
        (port,) = struct.unpack_from('>H', data, body + 4)
        ip = socket.inet_ntop(family, data[body + 8 : body + 8 + address_size])
        rqueue, _, _, inode = struct.unpack_from('=IIII', data, body + 56)
        sockets.append(TcpSocket(ip, port, state, rqueue, inode))
        offset += (length + 3) & ~3
    return False
