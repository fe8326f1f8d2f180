"""A worker's sockets asked directly (pidfd.py), against real gunicorn: each answers as the
kernel's tables list it, and the check counts the same whether it asks them or reads the
tables. Refusals (EPERM from the kernel's ptrace rules or a seccomp filter, ENOSYS from a
kernel older than 5.6) and a pid reused at the wrong moment cannot be had for real here as
root: they are injected."""

import errno
import os
import socket
import time

import psutil
import pytest

from datadog_checks.base.stubs import aggregator as stub
from datadog_checks.gunicorn import pidfd, procfs, sockdiag

from .server import wait_until
from .test_saturation import close_all, hold_requests
from .test_serving import kept_alive
from .unprivileged import run_as_nobody

SERVED = {procfs.TCP_ESTABLISHED, procfs.TCP_CLOSE_WAIT}


def key_of(pid):
    return pid, procfs.read_stat(pid).start_ticks


def answers_of(worker):
    """inode -> what each socket `worker` (a psutil.Process) holds answers."""
    pidfds = pidfd.Pidfds()
    try:
        found = pidfds.sockets_of(key_of(worker.pid), procfs.socket_fds(procfs.read_fd_links(worker.pid)))
    finally:
        pidfds.close()
    return {sock.inode: sock for sock in found}


def tcp_table(port):
    """inode -> the TcpSocket sock_diag lists on `port`, listeners and connections."""
    listed = sockdiag.dump_tcp(socket.AF_INET, {procfs.TCP_LISTEN, *SERVED}, {port}, info=True)
    return {sock.inode: sock for sock in listed}


def addressed(sock):
    return sock.local_ip, sock.local_port, sock.state, sock.inode


def in_flight_on(answers):
    return [sock.info.request_in_flight for sock in answers.values() if sock.state in SERVED]


def test_a_listener_and_a_connection_answer_as_sock_diag_lists_them(gunicorn_server):
    server = gunicorn_server(name='asked', workers=1)
    held = hold_requests(server, '/sleep?s=8', 1)
    try:
        (worker,) = server.workers()
        wait_until(lambda: in_flight_on(answers_of(worker)) == [True], what='the request received')
        answers, listed = answers_of(worker), tcp_table(server.port)
    finally:
        close_all(held)

    assert sorted(sock.state for sock in answers.values()) == [procfs.TCP_ESTABLISHED, procfs.TCP_LISTEN]
    for inode, sock in answers.items():
        assert addressed(sock) == addressed(listed[inode])
        assert (sock.info is None) == (sock.state == procfs.TCP_LISTEN)


def test_a_kept_alive_connection_is_in_flight_only_from_request_to_response(gunicorn_server):
    server = gunicorn_server(name='asked-ka', workers=1, worker_class='gthread', args=['--keep-alive', '30'])
    (connection,) = kept_alive(server, 1)
    (worker,) = server.workers()

    try:
        # Kept alive after its first response: held, nothing in flight.
        wait_until(lambda: in_flight_on(answers_of(worker)) == [False], what='the response acknowledged')
        time.sleep(0.05)  # out of the jiffy the response left in: tcp_info's times are no finer
        connection.request('GET', '/sleep?s=1')
        wait_until(lambda: in_flight_on(answers_of(worker)) == [True], what='the next request received')
        response = connection.getresponse()
        assert response.read() and not response.will_close
        wait_until(lambda: in_flight_on(answers_of(worker)) == [False], what='the response acknowledged')
    finally:
        connection.close()


def test_a_unix_listener_and_connection_answer_as_proc_net_unix_lists_them(gunicorn_server, tmp_path):
    path = f'{tmp_path}/asked.sock'
    server = gunicorn_server(name='asked-unix', workers=1, bind=f'unix:{path}')
    held = hold_requests(server, '/sleep?s=8', 1)
    try:
        (worker,) = server.workers()
        wait_until(lambda: len(answers_of(worker)) == 2, what='the connection accepted')
        answers = answers_of(worker)
        listed = {sock.inode: sock for sock in procfs.read_net_unix(server.master_pid, paths={path})}
    finally:
        close_all(held)

    assert {sock.path for sock in answers.values()} == {path}
    assert sorted(sock.state for sock in answers.values()) == [pidfd.UNIX_UNCONNECTED, procfs.UNIX_CONNECTED]
    assert answers == {inode: listed[inode] for inode in answers}


def test_a_pid_another_process_took_is_never_asked():
    mine = key_of(os.getpid())
    before = sorted(os.listdir('/proc/self/fd'))
    with socket.socket() as sock:
        fds = {os.fstat(sock.fileno()).st_ino: sock.fileno()}
        pidfds = pidfd.Pidfds()

        # A process started one tick later under the same pid, as a reused pid would be.
        with pytest.raises(psutil.NoSuchProcess):
            pidfds.sockets_of((mine[0], mine[1] + 1), fds)
        assert pidfds.fds == {}

        assert [s.inode for s in pidfds.sockets_of(mine, fds)] == list(fds)
        pidfds.close()
    assert sorted(os.listdir('/proc/self/fd')) == before, 'no pidfd and no duplicate left open'


def test_an_agent_that_is_not_root_is_refused(gunicorn_server):
    server = gunicorn_server(name='asked-nobody', workers=1)
    (worker,) = server.workers()
    key, fds = key_of(worker.pid), procfs.socket_fds(procfs.read_fd_links(worker.pid))

    def ask():
        try:
            pidfd.Pidfds().sockets_of(key, fds)
        except psutil.AccessDenied as e:
            return e.msg

    assert run_as_nobody(ask) == 'pidfd: Operation not permitted'


def refused(error):
    """pidfd.getfd, made to fail as the kernel fails it; its calls are counted."""

    def getfd(process, fd):
        getfd.calls += 1
        raise OSError(error, os.strerror(error))

    getfd.calls = 0
    return getfd


class Dumps:
    """sockdiag.dump_tcp, with the states asked at each call recorded."""

    def __init__(self, monkeypatch):
        self.real = sockdiag.dump_tcp
        self.states = []
        monkeypatch.setattr(sockdiag, 'dump_tcp', self)

    def __call__(self, family, states, *args, **kwargs):
        self.states.append(set(states))
        return self.real(family, states, *args, **kwargs)

    def connections(self):
        return sum(1 for states in self.states if states & SERVED)


def numbers(check):
    """(name, tags) -> value of what one run of `check` sends on sockets and workers."""
    stub.reset()
    check.run()
    names = ('gunicorn.workers', 'gunicorn.listener.queued', 'gunicorn.listener.active')
    names += ('gunicorn.connections.active', 'gunicorn.requests.in_flight')
    return {(name, tuple(sorted(m.tags))): m.value for name in names for m in stub.metrics(name)}


def summed(found):
    """name -> its values in `found` added up, over every listener and state."""
    sums = {}
    for (name, _), value in found.items():
        sums[name] = sums.get(name, 0) + value
    return sums


def kept_alive_and_one_busy(server):
    connections = kept_alive(server, 3)
    time.sleep(0.05)  # out of the jiffy the responses left in: tcp_info's times are no finer
    connections[0].request('GET', '/sleep?s=10')
    return connections


def busy_and_queued(server):
    return hold_requests(server, '/sleep?s=10', 2) + hold_requests(server, '/', 2)


@pytest.mark.parametrize(
    'error, options, load, expected',
    # Each with workers holding connections, and all of them or none stuck in a request.
    [
        pytest.param(
            errno.EPERM,
            {'worker_class': 'gthread', 'args': ['--keep-alive', '30']},
            kept_alive_and_one_busy,
            {'gunicorn.connections.active': 3, 'gunicorn.requests.in_flight': 1, 'gunicorn.listener.queued': 0},
            id='EPERM-gthread-keep-alive',
        ),
        pytest.param(
            errno.ENOSYS,
            {},
            busy_and_queued,
            {'gunicorn.connections.active': 2, 'gunicorn.requests.in_flight': 2, 'gunicorn.listener.queued': 2},
            id='ENOSYS-sync-queued',
        ),
        pytest.param(
            errno.EPERM,
            {'bind': 'unix'},
            busy_and_queued,
            {'gunicorn.connections.active': 2, 'gunicorn.requests.in_flight': 2, 'gunicorn.listener.queued': 2},
            id='EPERM-sync-unix',
        ),
    ],
)
def test_the_check_counts_the_same_when_asking_the_sockets_is_refused(
    gunicorn_server, make_check, monkeypatch, tmp_path, error, options, load, expected
):
    if options.get('bind') == 'unix':
        options = {**options, 'bind': f'unix:{tmp_path}/same.sock'}
    server = gunicorn_server(name='same', workers=2, **options)
    connections = load(server)
    try:
        wait_until(lambda: expected.items() <= summed(numbers(make_check('same'))).items(), what=f'{expected}')
        asking, dumps = make_check('same'), Dumps(monkeypatch)
        asked = [numbers(asking), numbers(asking)]
        asking_dumps = dumps.connections()

        getfd = refused(error)
        monkeypatch.setattr(pidfd, 'getfd', getfd)
        reading = make_check('same')
        read = [numbers(reading), numbers(reading)]
    finally:
        close_all(connections)

    assert asked == read
    assert expected.items() <= summed(asked[0]).items()
    (asking_pool,) = asking.pools.values()
    (reading_pool,) = reading.pools.values()
    assert asking_pool.sockets.pidfds is not None
    assert reading_pool.sockets.pidfds is None
    assert getfd.calls == 1, 'refused once, at the first run: never asked again'
    # Where the sockets answer, only accept queues are dumped; where they may not, TCP
    # connections are listed from the kernel's table.
    assert asking_dumps == 0
    assert dumps.connections() > 0 or 'bind' in options
