import ctypes
import ctypes.util

import pytest

from datadog_checks.gunicorn import GunicornCheck

from .server import GunicornServer

PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture(scope='session', autouse=True)
def reap_orphans():
    """Become the subreaper of the gunicorn processes the tests orphan (a master promoted by
    USR2, workers of a SIGKILLed master), so that stopping them by pid also reaps them
    instead of leaving zombies behind an init that may not reap."""
    libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


@pytest.fixture
def gunicorn_server(tmp_path):
    """Start real gunicorn masters: `gunicorn_server(name=..., workers=..., ...)`; all are stopped at the end."""
    servers = []

    def start(wait=True, **options):
        server = GunicornServer(tmp_path, **options)
        servers.append(server)
        return server.start(wait=wait)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def make_check():
    def make(proc_name='testapp', **options):
        return GunicornCheck('gunicorn', {}, [{'proc_name': proc_name, **options}])

    return make
