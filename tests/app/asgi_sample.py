"""The ASGI twin of sample.py, for UvicornWorker and gunicorn's asgi worker: the same paths.

/sleep and /spin block the event loop on purpose. An async worker serving them can then
neither answer nor accept anything else, so each such request takes a whole worker and the
next connection goes to another one, as under the sync worker: the tests can count busy
workers the same way for every worker class.
"""

from urllib.parse import parse_qs

from sample import occupy


async def application(scope, receive, send):
    if scope['type'] == 'lifespan':
        await lifespan(receive, send)
        return
    if scope['type'] != 'http':
        return

    path = scope['path']
    query = parse_qs(scope.get('query_string', b'').decode('latin-1'))

    if path in ('/sleep', '/spin'):  # synchronously, as a blocking database driver would
        occupy(path, query)
    elif path == '/boom':
        raise RuntimeError('boom from app')
    elif path.startswith('/status/'):
        code = int(path.rsplit('/', 1)[1])
        headers = [(b'content-type', b'text/plain')]
        if 300 <= code < 400:
            headers.append((b'location', b'/'))
        await respond(send, code, headers, b'status\n')
        return

    await respond(send, 200, [(b'content-type', b'text/plain')], b'hello\n')


async def respond(send, status, headers, body):
    headers = [*headers, (b'content-length', str(len(body)).encode())]
    await send({'type': 'http.response.start', 'status': status, 'headers': headers})
    await send({'type': 'http.response.body', 'body': body})


async def lifespan(receive, send):
    # Answered rather than refused, so that no server logs a lifespan error at each worker boot.
    while True:
        message = await receive()
        if message['type'] == 'lifespan.startup':
            await send({'type': 'lifespan.startup.complete'})
        elif message['type'] == 'lifespan.shutdown':
            await send({'type': 'lifespan.shutdown.complete'})
            return
