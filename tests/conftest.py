import contextlib
import ctypes
import ctypes.util
import os

import pytest

from datadog_checks.gunicorn import GunicornCheck

from . import releases
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


@pytest.fixture
def release_server(request, gunicorn_server, release, worker_class):
    """Start gunicorn `release` with `worker_class` (parameters of the test, see tests/test_matrix.py)
    from that release's cached venv, serving the test app that class runs, with gunicorn's default
    control socket left on: `release_server(workers=..., args=[...], ...)` takes the other options
    of GunicornServer. Stopped at the end like every `gunicorn_server`."""
    capture = request.config.pluginmanager.getplugin('capturemanager')
    # Uncaptured, so that the line saying a venv is being built shows while it happens.
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        python = releases.gunicorn_python(release)
    kind = releases.WORKER_CLASSES[worker_class]

    def start(**options):
        # The pid keeps the name apart from a matrix run by someone else on the machine: the
        # check counts every master of that name.
        options.setdefault('name', f'{release}-{worker_class}-{os.getpid()}')
        return gunicorn_server(
            python=python,
            worker_class=kind.option,
            app=kind.app,
            default_control_socket=True,
            stop_signal=kind.stop_signal,
            **options,
        )

    return start
