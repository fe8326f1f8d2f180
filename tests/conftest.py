import pytest

from datadog_checks.gunicorn import GunicornCheck

from .server import GunicornServer


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
