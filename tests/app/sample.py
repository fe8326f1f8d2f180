"""A WSGI app for tests and the demo: each path makes a worker behave one way."""

import sys
import time
from urllib.parse import parse_qs


def application(environ, start_response):
    path = environ.get('PATH_INFO', '/')
    query = parse_qs(environ.get('QUERY_STRING', ''))
    seconds = float(query.get('s', ['1'])[0])

    if path == '/sleep':  # busy waiting on I/O, as on a slow database
        blocking_sleep(seconds)
    elif path == '/spin':  # busy on the CPU
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pass
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


def blocking_sleep(seconds):
    """time.sleep, but under the gevent worker the original one, not gevent's patched sleep that
    lets the worker serve other requests meanwhile: so that a sleeping request takes a whole
    worker under every worker class, and the tests count busy workers the same way for all."""
    monkey = sys.modules.get('gevent.monkey')  # not imported: nothing patched time.sleep
    if monkey is not None and monkey.is_module_patched('time'):
        monkey.get_original('time', 'sleep')(seconds)
    else:
        time.sleep(seconds)
