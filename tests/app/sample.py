"""A WSGI app for tests and the demo: each path makes a worker behave one way."""

import time
from urllib.parse import parse_qs


def application(environ, start_response):
    path = environ.get('PATH_INFO', '/')
    query = parse_qs(environ.get('QUERY_STRING', ''))
    seconds = float(query.get('s', ['1'])[0])

    if path == '/sleep':  # busy waiting on I/O, as on a slow database
        time.sleep(seconds)
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
