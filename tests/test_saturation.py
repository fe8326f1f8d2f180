"""Busy workers, request backlog and worker health, against real gunicorn."""

import ctypes
import ctypes.util
import json
import logging
import os
import signal
import socket
import struct
import threading
import time

import psutil
import pytest

from datadog_checks.base import AgentCheck
from datadog_checks.dev.utils import get_metadata_metrics
from datadog_checks.gunicorn import procfs, sockdiag
from datadog_checks.gunicorn import workers as workers_module

from .server import free_port, wait_until
from .test_check import run, worker_counts
from .unprivileged import run_as_nobody


def gauge(aggregator, name, *tags):
    values = [m.value for m in aggregator.metrics(name) if set(tags) <= set(m.tags)]
    assert values, f'no {name} with tags {tags}; got {aggregator.metrics(name)}'
    return values[-1]


def hold_requests(server, path, count):
    """Send `count` requests on raw connections and keep them open: each one occupies a
    sync worker while it is served, or waits in the accept queue while all workers are busy."""
    connections = []
    for _ in range(count):
        sock = server.connect()
        sock.sendall(f'GET {path} HTTP/1.1\r\nHost: test\r\n\r\n'.encode())
        connections.append(sock)
    return connections


def close_all(connections):
    for sock in connections:
        sock.close()


@pytest.mark.parametrize('worker_class', ['sync', 'gthread'])
def test_io_bound_cpu_bound_and_idle_counted_after_one_run(
    gunicorn_server, make_check, dd_run_check, aggregator, worker_class
):
    server = gunicorn_server(name=f'busy-{worker_class}', workers=4, worker_class=worker_class)
    held = hold_requests(server, '/sleep?s=5', 2) + hold_requests(server, '/spin?s=5', 1)
    try:
        wait_until(lambda: gauge_now(make_check, server) == 3, what='3 connections accepted by workers')
        check = make_check(server.name)

        dd_run_check(check)  # one run: no previous CPU sample is needed

        # psutil's independent view: which workers hold a client connection on the port.
        holding = sum(1 for w in server.workers() if any(serving(c, server.port) for c in w.net_connections()))
        assert worker_counts(aggregator, server.name) == {'working': holding, 'idle': 4 - holding}
        if worker_class == 'sync':
            # One request per sync worker. A CPU sample would say 1 working: the sleeping ones burn no CPU.
            assert holding == 3
        assert gauge(aggregator, 'gunicorn.connections.active', f'app:{server.name}') == 3
        aggregator.assert_metrics_using_metadata(get_metadata_metrics())
    finally:
        close_all(held)


def serving(connection, port):
    return connection.laddr.port == port and connection.status == psutil.CONN_ESTABLISHED


def gauge_now(make_check, server):
    """connections.active as a fresh check instance sees it right now."""
    from datadog_checks.base.stubs import aggregator as stub

    stub.reset()
    check = make_check(server.name)
    check.run()
    values = [m.value for m in stub.metrics('gunicorn.connections.active')]
    stub.reset()
    return values[-1] if values else None


@pytest.mark.parametrize('bind', ['tcp', 'tcp6', 'unix'])
def test_requests_queued_behind_busy_sync_workers(
    gunicorn_server, make_check, dd_run_check, aggregator, bind, tmp_path
):
    address = {'tcp': f'127.0.0.1:{free_port()}', 'tcp6': f'[::1]:{free_port()}', 'unix': f'unix:{tmp_path}/g.sock'}[
        bind
    ]
    server = gunicorn_server(name=f'queue-{bind}', workers=2, bind=address)
    busy = hold_requests(server, '/sleep?s=8', 2)
    try:
        wait_until(lambda: gauge_now(make_check, server) == 2, what='both workers busy')
        queued = hold_requests(server, '/', 3)
        try:
            check = make_check(server.name)
            dd_run_check(check)
        finally:
            close_all(queued)
    finally:
        close_all(busy)

    tag = f'listener:{address}'
    assert gauge(aggregator, 'gunicorn.listener.queued', tag, f'app:{server.name}') == 3
    assert gauge(aggregator, 'gunicorn.listener.active', tag) == 2
    assert worker_counts(aggregator, server.name) == {'working': 2, 'idle': 0}


def test_killed_and_recycled_workers_show_as_started(gunicorn_server, make_check, dd_run_check, aggregator):
    server = gunicorn_server(name='churn', workers=2, args=['--max-requests', '3'])
    check = make_check('churn')
    dd_run_check(check)
    aggregator.assert_metric('gunicorn.worker.started', count=0)  # nothing to compare with yet

    run(check, aggregator, dd_run_check)
    aggregator.assert_metric('gunicorn.worker.started', value=0, tags=['app:churn'], count=1)

    victim = server.workers()[0]
    victim.kill()
    wait_until(lambda: victim.pid not in {w.pid for w in server.workers()} and len(server.workers()) == 2)
    run(check, aggregator, dd_run_check)
    aggregator.assert_metric('gunicorn.worker.started', value=1, tags=['app:churn'], count=1)

    before = {w.pid for w in server.workers()}
    for _ in range(8):  # 2 workers with --max-requests 3 must recycle at least one
        server.get('/')
    wait_until(lambda: len(server.workers()) == 2 and {w.pid for w in server.workers()} != before)
    server.wait_ready()
    run(check, aggregator, dd_run_check)
    assert gauge(aggregator, 'gunicorn.worker.started', 'app:churn') >= 1


def test_heartbeat_age_grows_during_a_long_request(gunicorn_server, make_check, dd_run_check, aggregator):
    server = gunicorn_server(name='heartbeat', workers=1, args=['--timeout', '30'])
    check = make_check('heartbeat')
    dd_run_check(check)
    idle_age = gauge(aggregator, 'gunicorn.worker.heartbeat.age.max', 'app:heartbeat')

    held = hold_requests(server, '/sleep?s=6', 1)  # a sync worker does not notify while it serves
    try:
        wait_until(lambda: gauge_now(make_check, server) == 1, what='the request accepted')
        run(check, aggregator, dd_run_check)
        first = gauge(aggregator, 'gunicorn.worker.heartbeat.age.max', 'app:heartbeat')
        time.sleep(2)
        run(check, aggregator, dd_run_check)
        second = gauge(aggregator, 'gunicorn.worker.heartbeat.age.max', 'app:heartbeat')
    finally:
        close_all(held)

    assert idle_age < 16  # an idle sync worker notifies at least every timeout / 2
    assert second - first >= 1.5


def test_pool_memory_cpu_and_uptime(gunicorn_server, make_check, dd_run_check, aggregator):
    server = gunicorn_server(name='pool', workers=2)
    check = make_check('pool')
    dd_run_check(check)
    request = server.get_in_background('/spin?s=1.5')
    time.sleep(1)
    run(check, aggregator, dd_run_check)
    request.join()

    rss = [psutil.Process(w.pid).memory_info().rss for w in server.workers()]
    assert gauge(aggregator, 'gunicorn.worker.memory.rss.max', 'app:pool') == pytest.approx(max(rss), rel=0.2)
    assert gauge(aggregator, 'gunicorn.worker.memory.rss.sum', 'app:pool') == pytest.approx(sum(rss), rel=0.2)
    assert 50 <= gauge(aggregator, 'gunicorn.worker.cpu.utilization', 'app:pool') <= 130
    uptime = time.time() - psutil.Process(server.master_pid).create_time()
    assert gauge(aggregator, 'gunicorn.master.uptime', 'app:pool') == pytest.approx(uptime, abs=1.5)


def test_control_socket_of_a_real_gunicorn(gunicorn_server, make_check, dd_run_check, aggregator, tmp_path):
    path = tmp_path / 'gunicorn.ctl'
    server = gunicorn_server(name='ctl', workers=2, control_socket=path)
    wait_until(path.exists, what='the control socket')
    check = make_check('ctl', control_socket=str(path))
    dd_run_check(check)

    aggregator.assert_metric('gunicorn.master.workers.target', value=2, tags=['app:ctl'], count=1)
    for name in ('gunicorn.master.workers.spawned', 'gunicorn.master.workers.killed', 'gunicorn.master.reloads'):
        aggregator.assert_metric(name, tags=['app:ctl'], count=1)
    assert gauge(aggregator, 'gunicorn.master.workers.spawned', 'app:ctl') >= 2
    assert not check.warnings

    server.signal(signal.SIGHUP)
    wait_until(lambda: gauge_after_run(check, aggregator, dd_run_check, 'gunicorn.master.reloads') == 1, what='reload')
    aggregator.assert_metrics_using_metadata(get_metadata_metrics())


def gauge_after_run(check, aggregator, dd_run_check, name):
    # gunicorn rebinds its control socket on HUP: a run in between warns and sends nothing.
    run(check, aggregator, dd_run_check)
    values = [m.value for m in aggregator.metrics(name)]
    return values[-1] if values else None


def test_control_socket_heartbeats_stand_in_for_unreadable_fds(
    gunicorn_server, make_check, dd_run_check, aggregator, tmp_path, monkeypatch
):
    path = tmp_path / 'gunicorn.ctl'
    gunicorn_server(name='ctl-hb', workers=2, control_socket=path)
    wait_until(path.exists, what='the control socket')

    def denied(worker, root='/proc'):
        raise psutil.AccessDenied(worker.pid)

    monkeypatch.setattr(workers_module, 'read_worker_fds', denied)
    monkeypatch.setattr('datadog_checks.gunicorn.check.read_worker_fds', denied)
    check = make_check('ctl-hb', control_socket=str(path))
    dd_run_check(check)

    assert 0 <= gauge(aggregator, 'gunicorn.worker.heartbeat.age.max', 'app:ctl-hb') < 16
    assert any('Cannot read /proc/<PID>/fd of the gunicorn workers' in w for w in check.warnings)


class FakeControlSocket:
    """A Unix socket that answers each request with `reply(request_bytes)`: bytes, or an
    iterable of byte strings sent one after the other (a generator may sleep in between)."""

    def __init__(self, path, reply):
        self.path = str(path)
        self.reply = reply
        self.requests = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(8)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                length = struct.unpack('>I', conn.recv(4))[0]
                request = conn.recv(length)
                self.requests.append(json.loads(request))
                answer = self.reply(request)
                try:
                    for chunk in [answer] if isinstance(answer, bytes) else answer:
                        conn.sendall(chunk)
                except OSError:
                    pass  # the check gave up on this answer

    def close(self):
        self.server.close()


def frame(obj):
    payload = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
    return struct.pack('>I', len(payload)) + payload


def stats_answer(**data):
    """A framed `show stats` answer, with `data` as raw JSON text per field."""
    fields = {'workers_target': '1', 'workers_spawned': '1', 'workers_killed': '0', 'reloads': '0', **data}
    body = ', '.join(f'"{name}": {text}' for name, text in fields.items())
    return frame(f'{{"id": 1, "status": "ok", "data": {{{body}}}}}'.encode())


WORKERS_ANSWER = frame({'id': 2, 'status': 'ok', 'data': {'workers': [{'pid': 1, 'last_heartbeat': 0.5}], 'count': 1}})


def answer(request, stats=None, workers=None):
    """The framed answer to `request`, `show stats` or `show workers`: as gunicorn's unless given."""
    if json.loads(request)['args'] == ['stats']:
        return stats or stats_answer()
    return workers or WORKERS_ANSWER


def trickle(data, every):
    for byte in data:
        time.sleep(every)
        yield bytes([byte])


def slow(data, delay):
    time.sleep(delay)
    return data


@pytest.mark.parametrize(
    'reply, problem',
    [
        (lambda request: frame(b'{not json'), 'the answer to `show stats` is not JSON'),
        (lambda request: frame([1, 2]), 'not a JSON object'),
        (lambda request: struct.pack('>I', 1 << 30), 'announced a 1073741824-byte answer; at most 1048576'),
        (lambda request: struct.pack('>I', 100) + b'{"id": 1', 'connection closed after 8 of 100 bytes'),
        (lambda request: frame({'id': 1, 'status': 'error', 'error': 'Unknown command'}), 'Unknown command'),
        (lambda request: answer(request, stats_answer(workers_target='"x"')), "workers_target = 'x', not a count"),
        (lambda request: answer(request, stats_answer(reloads='-1')), 'reloads = -1, not a count'),
        (lambda request: answer(request, stats_answer(workers_killed='2.5')), 'workers_killed = 2.5, not a count'),
        (lambda request: time.sleep(1.5) or b'', 'no complete answer to `show stats` and `show workers` within 1.0s'),
        # Each of these used to fail the whole run, core signal included.
        (lambda request: frame(b'[' * 100_000 + b']' * 100_000), 'nested deeper than 16 levels'),
        (lambda request: answer(request, stats_answer(workers_target='1e400')), 'a number out of range: 1e400'),
        (
            lambda request: answer(request, stats_answer(workers_target='9' * 400)),
            'out of range: 99999999999999999999... (400 char',
        ),
        (lambda request: answer(request, stats_answer(workers_target='NaN')), 'a number out of range: NaN'),
        (lambda request: answer(request, stats_answer(reloads='-Infinity')), 'a number out of range: -Infinity'),
    ],
    ids=[
        'garbage',
        'not-object',
        'huge-length',
        'truncated',
        'error-status',
        'wrong-fields',
        'negative-count',
        'fractional-count',
        'silent',
        'nested-100000-deep',
        'float-overflow',
        'integer-of-400-digits',
        'nan',
        'minus-infinity',
    ],
)
def test_control_socket_answering_garbage_is_a_warning(
    gunicorn_server, make_check, dd_run_check, aggregator, tmp_path, reply, problem
):
    gunicorn_server(name='ctl-bad', workers=1)
    fake = FakeControlSocket(tmp_path / 'fake.ctl', reply)
    try:
        check = make_check('ctl-bad', control_socket=fake.path)
        dd_run_check(check)
    finally:
        fake.close()

    (warning,) = [w for w in check.warnings if 'control socket' in w]
    assert problem in warning
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK)
    assert worker_counts(aggregator, 'ctl-bad') == {'working': 0, 'idle': 1}
    assert all(r['command'] == 'show' and r['args'] in (['stats'], ['workers']) for r in fake.requests)


def test_nesting_is_counted_outside_json_strings_only(gunicorn_server, make_check, dd_run_check, aggregator, tmp_path):
    # Brackets inside a string are text: gunicorn may quote an app's error message holding any.
    gunicorn_server(name='ctl-brackets', workers=1)
    workers = frame({'id': 2, 'status': 'ok', 'data': {'workers': [{'pid': 1, 'last_heartbeat': 0.5, 'x': '[' * 99}]}})
    fake = FakeControlSocket(
        tmp_path / 'fake.ctl', lambda request: answer(request, stats_answer(workers_target='3'), workers)
    )
    try:
        check = make_check('ctl-brackets', control_socket=fake.path)
        dd_run_check(check)
    finally:
        fake.close()

    assert check.warnings == []
    aggregator.assert_metric('gunicorn.master.workers.target', value=3, tags=['app:ctl-brackets'])


@pytest.mark.parametrize(
    'reply',
    [
        pytest.param(lambda request: trickle(answer(request), every=0.9), id='one-byte-every-0.9s'),
        # Each answer within 1 s, both together not: the deadline is the exchange's, not each answer's.
        pytest.param(lambda request: slow(answer(request), delay=0.6), id='two-answers-of-0.6s'),
    ],
)
def test_a_slow_control_socket_holds_a_run_1s_at_most(
    gunicorn_server, make_check, dd_run_check, aggregator, tmp_path, reply
):
    gunicorn_server(name='ctl-slow', workers=1)
    fake = FakeControlSocket(tmp_path / 'fake.ctl', reply)
    try:
        check = make_check('ctl-slow', control_socket=fake.path)
        started = time.monotonic()
        dd_run_check(check)
        took = time.monotonic() - started
    finally:
        fake.close()

    assert 1.0 <= took < 1.6
    (warning,) = check.warnings
    assert 'no complete answer to `show stats` and `show workers` within 1.0s' in warning
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK)
    assert worker_counts(aggregator, 'ctl-slow') == {'working': 0, 'idle': 1}


def test_missing_control_socket_is_a_warning(gunicorn_server, make_check, dd_run_check, aggregator, tmp_path):
    gunicorn_server(name='ctl-missing', workers=1)
    check = make_check('ctl-missing', control_socket=str(tmp_path / 'absent.ctl'))

    dd_run_check(check)

    (warning,) = check.warnings
    assert 'absent.ctl' in warning and 'No such file' in warning
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK)


def test_unprivileged_agent_falls_back_and_keeps_listener_metrics(gunicorn_server, make_check, tmp_path):
    server = gunicorn_server(name='priv', workers=2)
    held = hold_requests(server, '/sleep?s=6', 1)
    wait_until(lambda: gauge_now(make_check, server) == 1, what='a request being served')
    make_check('warm-up').run()  # import everything the child needs while the interpreter is readable

    def as_agent_user():
        from datadog_checks.base.stubs import aggregator

        aggregator.reset()
        check = make_check('priv', listeners=[f'127.0.0.1:{server.port}'])
        logged = LogRecords()
        check.log.logger.addHandler(logged)
        errors, warnings = [], []
        for _ in range(2):
            errors.append(check.run())
            warnings.append(check.get_warnings())
        return {
            'errors': errors,
            'warnings': warnings,
            'logged': logged.warnings,
            'metrics': {
                (m.name, tuple(sorted(m.tags))): m.value for n in aggregator.metric_names for m in aggregator.metrics(n)
            },
            'euid': os.geteuid(),
        }

    try:
        seen = run_as_nobody(as_agent_user)
    finally:
        close_all(held)

    assert seen['euid'] != 0
    assert seen['errors'] == ['', '']
    first, second = seen['warnings']
    assert any(w.startswith('Cannot read /proc/<PID>/fd of the gunicorn workers') for w in first)
    assert second == first, 'the Agent status shows the lasting condition at every run'
    assert sum(w.startswith('Cannot read /proc/<PID>/fd') for w in seen['logged']) == 1, 'logged once, not every run'
    listener = ('app:priv', f'listener:127.0.0.1:{server.port}')
    assert seen['metrics'][('gunicorn.listener.active', listener)] == 1
    assert seen['metrics'][('gunicorn.listener.queued', listener)] == 0
    assert seen['metrics'][('gunicorn.connections.active', ('app:priv',))] == 1
    states = {tags: value for (name, tags), value in seen['metrics'].items() if name == 'gunicorn.workers'}
    assert sum(states.values()) == 2  # counted by CPU: the sleeping worker is not seen busy
    assert not any(name == 'gunicorn.worker.heartbeat.age.max' for name, _ in seen['metrics'])


class LogRecords(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.warnings = []

    def emit(self, record):
        self.warnings.append(record.getMessage())


def listener_numbers(aggregator, app):
    return {
        (name, next(t for t in m.tags if t.startswith('listener:'))): m.value
        for name in ('gunicorn.listener.queued', 'gunicorn.listener.active')
        for m in aggregator.metrics(name)
        if f'app:{app}' in m.tags
    }


def test_proc_net_tcp_stands_in_when_sock_diag_is_refused(
    gunicorn_server, make_check, dd_run_check, aggregator, monkeypatch
):
    server = gunicorn_server(name='fallback', workers=1)
    busy = hold_requests(server, '/sleep?s=8', 1)
    try:
        wait_until(lambda: gauge_now(make_check, server) == 1, what='the worker busy')
        queued = hold_requests(server, '/', 2)
        try:
            check = make_check('fallback')
            dd_run_check(check)
            expected = listener_numbers(aggregator, 'fallback')
            aggregator.reset()

            # As under a seccomp profile that forbids netlink sockets: no way to refuse it for real here.
            def refuse(*args, **kwargs):
                raise sockdiag.SockDiagUnavailable('sock_diag netlink: Operation not permitted')

            monkeypatch.setattr(sockdiag, 'dump_tcp', refuse)
            fallback = make_check('fallback')
            dd_run_check(fallback)
        finally:
            close_all(queued)
    finally:
        close_all(busy)

    tag = f'listener:127.0.0.1:{server.port}'
    assert expected == {('gunicorn.listener.queued', tag): 2, ('gunicorn.listener.active', tag): 1}
    assert listener_numbers(aggregator, 'fallback') == expected
    assert worker_counts(aggregator, 'fallback') == {'working': 1, 'idle': 0}
    (pool,) = fallback.pools.values()
    assert pool.sockets.netlink is False


def test_a_configured_address_nobody_listens_on_is_a_warning(gunicorn_server, make_check, monkeypatch):
    server = gunicorn_server(name='misconfigured', workers=1)
    make_check('warm-up').run()

    def as_agent_user():
        check = make_check('misconfigured', listeners=['127.0.0.1:1', f'127.0.0.1:{server.port}'])
        return check.run(), check.get_warnings()

    error, warnings = run_as_nobody(as_agent_user)

    assert error == ''
    assert 'No socket listens on 127.0.0.1:1 in the network namespace of the master' in warnings


def test_listeners_follow_a_hup_that_rebinds(gunicorn_server, make_check, dd_run_check, aggregator, tmp_path):
    first, second = free_port(), free_port()
    config = tmp_path / 'gunicorn.conf.py'
    config.write_text(f'bind = ["127.0.0.1:{first}"]\n')
    server = gunicorn_server(name='rebind', workers=1, bind=f'127.0.0.1:{first}', config_file=config)
    check = make_check('rebind')
    dd_run_check(check)
    assert set(listener_numbers(aggregator, 'rebind')) == {
        ('gunicorn.listener.queued', f'listener:127.0.0.1:{first}'),
        ('gunicorn.listener.active', f'listener:127.0.0.1:{first}'),
    }

    config.write_text(f'bind = ["127.0.0.1:{second}"]\n')
    # Same size, same second: a __pycache__ entry of the first would pass for up to date.
    os.utime(config, (time.time() + 5, time.time() + 5))
    server.bind = f'127.0.0.1:{second}'
    server.signal(signal.SIGHUP)
    wait_until(server.listening, what='the master listening on the new address')
    server.wait_ready()
    for _ in range(2):  # the first run notices the old socket is gone, the next reads the new one
        run(check, aggregator, dd_run_check)

    assert set(listener_numbers(aggregator, 'rebind')) == {
        ('gunicorn.listener.queued', f'listener:127.0.0.1:{second}'),
        ('gunicorn.listener.active', f'listener:127.0.0.1:{second}'),
    }
    assert not check.warnings


CLONE_NEWNET = 0x40000000


def in_network_namespace_of(pid, function):
    """function() run in a thread that joined PID's network namespace (setns affects only the
    calling thread); sockets it creates stay in that namespace."""
    libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
    outcome = {}

    def enter_and_run():
        with open(f'/proc/{pid}/ns/net') as namespace:
            if libc.setns(namespace.fileno(), CLONE_NEWNET) != 0:
                outcome['error'] = OSError(ctypes.get_errno(), 'setns failed')
                return
        try:
            outcome['value'] = function()
        except Exception as e:
            outcome['error'] = e

    thread = threading.Thread(target=enter_and_run)
    thread.start()
    thread.join()
    if 'error' in outcome:
        raise outcome['error']
    return outcome['value']


def test_master_in_another_network_namespace(gunicorn_server, make_check, dd_run_check, aggregator):
    server = gunicorn_server(name='netns', workers=2, own_network_namespace=True)
    assert os.stat(f'/proc/{server.master_pid}/net/tcp').st_ino != os.stat('/proc/self/net/tcp').st_ino

    busy = in_network_namespace_of(server.master_pid, lambda: hold_requests(server, '/sleep?s=8', 2))
    try:
        wait_until(lambda: gauge_now(make_check, server) == 2, what='both workers busy')
        queued = in_network_namespace_of(server.master_pid, lambda: hold_requests(server, '/', 3))
        try:
            check = make_check('netns')
            dd_run_check(check)
        finally:
            close_all(queued)
    finally:
        close_all(busy)

    tag = f'listener:127.0.0.1:{server.port}'
    assert listener_numbers(aggregator, 'netns') == {
        ('gunicorn.listener.queued', tag): 3,
        ('gunicorn.listener.active', tag): 2,
    }
    assert worker_counts(aggregator, 'netns') == {'working': 2, 'idle': 0}
    (pool,) = check.pools.values()
    assert pool.sockets.netlink and len(pool.sockets.diag_sockets) == 1, 'sock_diag made inside the namespace'


def test_an_idle_sync_worker_is_not_read_again_until_it_runs(
    gunicorn_server, make_check, dd_run_check, aggregator, monkeypatch
):
    server = gunicorn_server(name='still', workers=2, args=['--timeout', '120'])  # notifies every 60 s when idle
    reads = []
    real = procfs.FdReader.read_fd_links

    def counting(self, key):
        reads.append(key[0])
        return real(self, key)

    monkeypatch.setattr(procfs.FdReader, 'read_fd_links', counting)
    check = make_check('still')
    for _ in range(3):
        run(check, aggregator, dd_run_check)
    idle_reads = list(reads)

    held = hold_requests(server, '/sleep?s=5', 1)  # the worker that accepts it runs: its fds are read again
    try:
        wait_until(lambda: run(check, aggregator, dd_run_check) or worker_counts(aggregator, 'still')['working'] == 1)
    finally:
        close_all(held)

    assert sorted(idle_reads) == sorted(w.pid for w in server.workers())  # once each, at the first run
    assert len(reads) > len(idle_reads)
    assert 0 <= gauge(aggregator, 'gunicorn.worker.heartbeat.age.max', 'app:still') < 120
