"""What `working` and the listeners mean on real deployments, across gunicorn releases and
worker classes (the matrix of tests/test_matrix.py): keep-alive connections, `--reuse-port`,
gunicorn's default control socket, and another app named like a USR2 master."""

import http.client

from datadog_checks.base.stubs import aggregator as stub

from .server import wait_until
from .test_check import worker_counts
from .test_matrix import matrix
from .test_saturation import close_all, hold_requests, serving

MULTIPLEXING = ('gthread', 'gevent', 'uvicorn', 'asgi')


def numbers_now(make_check, server):
    """{metric name: last value} and {state: workers} as a fresh check instance sees them now."""
    stub.reset()
    make_check(server.name).run()
    numbers = {name: stub.metrics(name)[-1].value for name in stub.metric_names if name != 'gunicorn.workers'}
    numbers.update(worker_counts(stub, server.name))
    stub.reset()
    return numbers


def last(aggregator, name, *tags):
    """The last value of `name` with `tags`, None where it was not sent."""
    values = [m.value for m in aggregator.metrics(name) if set(tags) <= set(m.tags)]
    return values[-1] if values else None


def kept_alive(server, count):
    """Connections that each made one request, read its whole response, and stay open for the
    next one, as a keep-alive proxy or load balancer holds them."""
    connections = []
    for _ in range(count):
        connection = http.client.HTTPConnection('localhost', timeout=30)
        connection.sock = server.connect()
        connection.request('GET', '/')
        response = connection.getresponse()
        assert response.status == 200 and response.read() == b'hello\n'
        assert not response.will_close, 'the server did not keep the connection alive'
        connections.append(connection)
    return connections


def held_connections(server):
    return sum(1 for w in server.workers() for c in w.net_connections() if serving(c, server.port))


def holding(server):
    """Workers holding a client connection, as psutil sees it: independent of the check."""
    return sum(1 for w in server.workers() if any(serving(c, server.port) for c in w.net_connections()))


@matrix(worker_classes=MULTIPLEXING)
def test_idle_keep_alive_connections_are_not_work_and_a_request_on_one_is(
    release_server, make_check, dd_run_check, aggregator
):
    server = release_server(workers=4, args=['--keep-alive', '30'])
    connections = kept_alive(server, 4)
    try:
        wait_until(lambda: numbers_now(make_check, server).get('gunicorn.connections.active') == 4)
        check = make_check(server.name)
        dd_run_check(check)
        idle = worker_counts(aggregator, server.name), last(aggregator, 'gunicorn.requests.in_flight')
        assert holding(server) >= 1

        connections[0].request('GET', '/sleep?s=6')  # the next request on a kept-alive connection
        wait_until(lambda: numbers_now(make_check, server).get('gunicorn.requests.in_flight') == 1)
        aggregator.reset()
        dd_run_check(check)
        busy = worker_counts(aggregator, server.name), last(aggregator, 'gunicorn.requests.in_flight')
        active = last(aggregator, 'gunicorn.connections.active')
    finally:
        for connection in connections:
            connection.close()

    assert idle == ({'working': 0, 'idle': 4}, 0)
    assert busy == ({'working': 1, 'idle': 3}, 1)
    assert active == 4  # kept-alive connections are still held, and counted as such


@matrix(since='24.0')
def test_reuse_port_sockets_are_the_listeners_and_their_queues_add_up(
    release_server, worker_class, make_check, dd_run_check, aggregator
):
    # gthread accepts every connection it can and queues requests inside; one connection per
    # worker keeps the waiting ones in the kernel's accept queues, where the check can see them.
    args = ['--reuse-port', *(['--worker-connections', '1'] if worker_class == 'gthread' else [])]
    server = release_server(workers=4, args=args)
    sent = 6  # over 4 workers' own sockets: some wait behind a busy worker while others may idle
    held = hold_requests(server, '/sleep?s=8', sent)
    try:

        def all_placed():
            numbers = numbers_now(make_check, server)
            return numbers.get('gunicorn.connections.active', 0) + numbers.get('gunicorn.listener.queued', 0) == sent

        wait_until(all_placed, what=f'{sent} connections accepted or queued')
        check = make_check(server.name)

        def run_while_settled():
            # An async worker may accept one more waiting connection before its blocking request
            # starts: compare with psutil only when nothing moved around the check's run.
            before = holding(server), held_connections(server)
            aggregator.reset()
            dd_run_check(check)
            return before if (holding(server), held_connections(server)) == before else None

        busy_workers, accepted = wait_until(run_while_settled, what='the workers to settle')
    finally:
        close_all(held)

    listener = f'listener:127.0.0.1:{server.port}'
    queued = last(aggregator, 'gunicorn.listener.queued', listener)
    active = last(aggregator, 'gunicorn.listener.active', listener)
    assert worker_counts(aggregator, server.name) == {'working': busy_workers, 'idle': 4 - busy_workers}
    assert (active, queued) == (accepted, sent - accepted)
    assert last(aggregator, 'gunicorn.requests.in_flight') == accepted
    if worker_class in ('sync', 'gthread'):
        # One connection at a time per worker: 6 over 4 sockets leave at least 2 in accept queues.
        assert queued >= 2


@matrix(since='25.1')
def test_the_default_control_socket_is_not_a_listener(release_server, make_check, dd_run_check, aggregator):
    server = release_server(workers=2)
    wait_until(server.default_control_socket_path.exists, what='gunicorn listening on its control socket')
    check = make_check(server.name)

    dd_run_check(check)

    tags = {t for m in aggregator.metrics('gunicorn.listener.queued') for t in m.tags if t.startswith('listener:')}
    assert tags == {f'listener:127.0.0.1:{server.port}'}


@matrix(worker_classes=('sync',))
def test_a_top_level_master_named_name_dot_2_is_another_app(release_server, make_check, dd_run_check, aggregator):
    app = release_server(workers=2)
    release_server(name=f'{app.name}.2', workers=3)
    check = make_check(app.name)

    dd_run_check(check)

    assert worker_counts(aggregator, app.name) == {'working': 0, 'idle': 2}
