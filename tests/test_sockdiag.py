"""sock_diag against real sockets on 127.0.0.1: the port filter, and tcp_info telling a
request in flight from a connection kept alive between requests."""

import os
import socket
import struct
import time

import pytest

from datadog_checks.gunicorn import procfs, sockdiag

from .server import wait_until

SERVED = {procfs.TCP_ESTABLISHED, procfs.TCP_CLOSE_WAIT}


def listening_socket():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    sock.listen(8)
    return sock


class Exchange:
    """A server-side connection and its client, as a worker and a keep-alive client hold them."""

    def __init__(self):
        self.listener = listening_socket()
        self.port = self.listener.getsockname()[1]
        self.client = socket.create_connection(('127.0.0.1', self.port))
        self.server, _ = self.listener.accept()
        self.inode = os.fstat(self.server.fileno()).st_ino

    def info(self):
        (sock,) = [
            s for s in sockdiag.dump_tcp(socket.AF_INET, SERVED, {self.port}, info=True) if s.inode == self.inode
        ]
        return sock.info

    def request(self):
        self.client.sendall(b'GET / HTTP/1.1\r\nHost: t\r\n\r\n')
        wait_until(lambda: self.info().data_segs_in, what='the request received')
        self.server.recv(4096)

    def respond(self):
        self.server.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
        self.client.recv(4096)
        wait_until(lambda: not self.info().unacked, what='the response acknowledged')

    def close(self):
        for sock in (self.client, self.server, self.listener):
            sock.close()


@pytest.fixture
def exchange():
    pair = Exchange()
    yield pair
    pair.close()


def test_a_keep_alive_exchange_reads_in_flight_only_between_request_and_response(exchange):
    assert exchange.info().request_in_flight is False  # accepted, nothing asked yet

    exchange.request()
    assert exchange.info().request_in_flight is True  # nothing sent back yet

    time.sleep(0.01)  # tcp_info's times are whole milliseconds (jiffies)
    exchange.respond()
    idle = exchange.info()
    assert idle.data_segs_out and idle.last_data_sent <= idle.last_data_recv
    assert idle.request_in_flight is False  # kept alive, waiting for the next request

    time.sleep(0.01)
    exchange.request()
    assert exchange.info().request_in_flight is True  # the next request on the same connection


def test_a_response_the_client_does_not_read_is_still_in_flight(exchange):
    exchange.request()
    time.sleep(0.01)  # so that data goes out later than the request came in, by the clock too
    exchange.server.setblocking(False)
    try:
        while True:  # until the client's window and the server's send buffer are full
            exchange.server.send(b'x' * 65536)
    except BlockingIOError:
        pass

    info = exchange.info()
    assert info.last_data_sent < info.last_data_recv  # by the times alone, a response went out after it
    assert info.unacked or info.notsent_bytes
    assert info.request_in_flight is True


def test_the_port_filter_keeps_only_the_named_ports():
    listeners = [listening_socket() for _ in range(3)]
    ports = [sock.getsockname()[1] for sock in listeners]
    try:
        kept = {s.local_port for s in sockdiag.dump_tcp(socket.AF_INET, {procfs.TCP_LISTEN}, set(ports[:2]))}
        alone = {s.local_port for s in sockdiag.dump_tcp(socket.AF_INET, {procfs.TCP_LISTEN}, {ports[2]})}
    finally:
        for sock in listeners:
            sock.close()

    assert kept == set(ports[:2])
    assert alone == {ports[2]}


@pytest.mark.parametrize('family, host', [(socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')])
def test_a_single_port_keeps_only_the_connections_accepted_on_it(family, host):
    listeners, pairs = [], []
    try:
        for _ in range(2):
            listener = socket.socket(family)
            listener.bind((host, 0))
            listener.listen(8)
            listeners.append(listener)
            client = socket.create_connection(listener.getsockname()[:2])
            pairs += [client, listener.accept()[0]]
        port = listeners[0].getsockname()[1]
        accepted = os.fstat(pairs[1].fileno()).st_ino

        found = sockdiag.dump_tcp(family, SERVED, {port}, info=True)
    finally:
        for sock in pairs + listeners:
            sock.close()

    assert [(s.local_port, s.inode) for s in found] == [(port, accepted)]
    assert found[0].info is not None


def test_a_filter_of_many_ports_passes_the_kernels_audit():
    with listening_socket() as listener:
        port = listener.getsockname()[1]
        ports = set(range(20000, 20100)) | {port}

        found = sockdiag.dump_tcp(socket.AF_INET, {procfs.TCP_LISTEN}, ports)

    assert port in {s.local_port for s in found}


def test_listen_sockets_carry_no_tcp_info_unless_asked():
    with listening_socket() as listener:
        port = listener.getsockname()[1]
        (sock,) = sockdiag.dump_tcp(socket.AF_INET, {procfs.TCP_LISTEN}, {port})

    assert sock.info is None


@pytest.mark.parametrize(
    'attributes, expected',
    [
        (b'', None),
        (struct.pack('=HH', 4 + 100, sockdiag.INET_DIAG_INFO) + bytes(100), None),  # a kernel older than 4.6
        (struct.pack('=HH', 2, sockdiag.INET_DIAG_INFO), None),  # a broken attribute length
    ],
    ids=['none', 'too-short', 'broken-length'],
)
def test_tcp_info_that_is_missing_or_short_is_none(attributes, expected):
    assert sockdiag._tcp_info(attributes, 0, len(attributes)) is expected


def test_a_truncated_netlink_message_is_a_clear_error():
    message = sockdiag.HEADER.pack(sockdiag.HEADER.size + 40, sockdiag.SOCK_DIAG_BY_FAMILY, 0, 1, 0) + bytes(40)

    with pytest.raises(sockdiag.SockDiagUnavailable, match='a socket message of 56 bytes'):
        sockdiag._parse(message, socket.AF_INET, False, [])


def test_a_netlink_socket_that_gets_no_answer_gives_up_after_the_timeout():
    # The kernel's timeout (no Python one: that would poll before every call) still bounds a wait.
    sock = sockdiag.open_socket()
    try:
        assert sock.gettimeout() is None
        started = time.monotonic()
        with pytest.raises(BlockingIOError):
            sock.recv(sockdiag.RECEIVE_SIZE)  # nothing was asked: nothing comes
        assert sockdiag.TIMEOUT <= time.monotonic() - started + 0.05 < 5 * sockdiag.TIMEOUT
    finally:
        sock.close()
