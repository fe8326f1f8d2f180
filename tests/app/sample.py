"""A WSGI app for tests and the demo: each path makes a worker behave one way."""

import sys
import time
from urllib.parse import parse_qs


def application(environ, start_response):
    path = environ.get('PATH_INFO', '/')
    query = parse_qs(environ.get('QUERY_STRING', ''))

    if path in ('/sleep', '/spin'):
        occupy(path, query)
    elif path == '/boom':
        raise RuntimeError('boom from app')
    elif path.startswith('/status/'):
        code = int(path.rsplit('/', 1)[1])
        headers = [('Content-Type', 'text/plain')]
        if 300 <= code < 400:
            headers.append(('Location', '/'))
        start_response(f'{code} Status', headers)
        return [b'status\n']

    body = b'hello\n'
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]


def occupy(path, query):
    """Keep the worker busy for `s` seconds: /sleep waiting as on a slow database, /spin on the
    CPU. With `started=FILE`, first create FILE: a test that sees it knows the request is being
    served, and that a worker whose loop runs the app (gevent, asyncio) can accept nothing more."""
    seconds = float(query.get('s', ['1'])[0])
    for marker in query.get('started', []):
        open(marker, 'w').close()
    if path == '/sleep':
        blocking_sleep(seconds)
    else:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pass


def blocking_sleep(seconds):
    """time.sleep, but under the gevent worker the original one, not gevent's patched sleep that
    lets the worker serve other requests meanwhile: so that a sleeping request takes a whole
    worker under every worker class, and the tests count busy workers the same way for all."""
    monkey = sys.modules.get('gevent.monkey')  # not imported: nothing patched time.sleep
    if monkey is not None and monkey.is_module_patched('time'):
        monkey.get_original('time', 'sleep')(seconds)
    else:
        time.sleep(seconds)
