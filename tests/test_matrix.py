"""The check against real gunicorn from several releases and with each worker class, every one
run from its own cached venv (tests/releases.py), with gunicorn's default control socket on.

To add a case: a test decorated with `@matrix()` that takes `release_server` (a fixture of
conftest.py that starts the parametrized release and worker class), and `release` or
`worker_class` if it needs their names. `@matrix(since='24.0')` or
`@matrix(worker_classes=('sync', 'gthread'))` narrow it; `xfail={'27.0.1-gevent': 'why'}`
marks the combinations where the check is known to be wrong.
"""

import pytest

from datadog_checks.base import AgentCheck

from . import releases
from .server import wait_until
from .test_check import worker_counts
from .test_saturation import close_all, hold_requests, serving


def version(text):
    return tuple(int(part) for part in text.split('.'))


def matrix(since=None, worker_classes=None, xfail=None):
    """Parametrize a test with `release` and `worker_class`, ids like `27.0.1-gevent`: every
    worker class of every release in tests/releases.py, from release `since` on, among
    `worker_classes`. `xfail` maps ids to the reason the check fails there (strict: a fix shows)."""
    xfail = dict(xfail or {})
    params = []
    for release in releases.RELEASES.values():
        if since and version(release.version) < version(since):
            continue
        for worker_class in release.worker_classes:
            if worker_classes and worker_class not in worker_classes:
                continue
            case = f'{release.version}-{worker_class}'
            marks = [pytest.mark.xfail(strict=True, reason=xfail.pop(case))] if case in xfail else []
            params.append(pytest.param(release.version, worker_class, id=case, marks=marks))
    assert not xfail, f'xfail names combinations that are not in the matrix: {sorted(xfail)}'
    return pytest.mark.parametrize(('release', 'worker_class'), params)


@matrix()
def test_idle_workers_counted(release_server, make_check, dd_run_check, aggregator):
    server = release_server(workers=3)
    check = make_check(server.name)

    dd_run_check(check)

    assert worker_counts(aggregator, server.name) == {'working': 0, 'idle': 3}
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, tags=[f'app:{server.name}'], count=1)


def workers_holding_a_request(server):
    """How many workers hold a client connection, as psutil sees it, independent of the check."""
    return sum(1 for w in server.workers() if any(serving(c, server.port) for c in w.net_connections()))


@matrix()
def test_two_sleeping_and_one_spinning_request_take_three_workers_of_four(
    release, worker_class, release_server, make_check, dd_run_check, aggregator, tmp_path
):
    args = []
    if worker_class == 'gthread':
        # A gthread worker's main thread goes on accepting while its thread serves; allowed one
        # connection, it leaves the next to another worker. Not from 21.0 to 23.x: there a worker
        # at its limit stops polling, also the connection it accepted last, which then waits for a
        # request to end. There, threads enough to serve each request it may take at once.
        one_at_a_time = not (21, 0) <= version(release) < (24, 0)
        args = ['--worker-connections', '1'] if one_at_a_time else ['--threads', '8']
    # Async workers blocked in a request, and gthread's pool joining its thread, only exit when
    # the request ends: SIGKILL after a second rather than waiting for it.
    server = release_server(workers=4, args=args, stop_timeout=1)
    held = []
    try:
        for busy, path in enumerate(('/sleep', '/sleep', '/spin')):
            # Each sent once the app runs the one before: an async worker accepts whatever waits
            # when its loop turns, until the app blocks that loop. Sent again while a busy
            # worker took it, which only a gthread worker with several threads can.
            while workers_holding_a_request(server) == busy:
                started = tmp_path / f'started-{len(held)}'
                held.extend(hold_requests(server, f'{path}?s=10&started={started}', 1))
                wait_until(started.exists, what=f'request {len(held)} in the app')
        check = make_check(server.name)
        dd_run_check(check)
        holding = workers_holding_a_request(server)
    finally:
        close_all(held)

    assert holding == 3, 'the harness failed to give each kind of request a worker of its own'
    assert worker_counts(aggregator, server.name) == {'working': 3, 'idle': 1}
