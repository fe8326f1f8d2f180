"""A read-only client of gunicorn's control socket (gunicorn >= 25.1, `--control-socket`).

Framing: a 4-byte big-endian length, then a JSON object. The check sends only `show`
commands; every other command changes the server (adds or kills workers, reloads,
shuts down) and must never leave a monitor.
"""

import json
import socket
import struct
from typing import NamedTuple

TIMEOUT = 1.0
MAX_FRAME = 16 * 1024 * 1024  # gunicorn's own limit
READ_ONLY_TOPICS = frozenset({'stats', 'workers'})


class ControlError(Exception):
    """The socket is missing, refused, or answered something that is not the protocol."""


class ControlStats(NamedTuple):
    workers_target: int
    workers_spawned: int
    workers_killed: int
    reloads: int
    heartbeat_ages: list  # seconds since each worker's last heartbeat, as the master sees them


def show(path, topic, request_id=1):
    """The `data` of gunicorn's answer to `show TOPIC`."""
    if topic not in READ_ONLY_TOPICS:
        raise ValueError(f'`show {topic}` is not one of the read-only commands this check sends')
    request = json.dumps({'id': request_id, 'command': 'show', 'args': [topic]}).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(path)
            sock.sendall(struct.pack('>I', len(request)) + request)
            (length,) = struct.unpack('>I', _recv_exactly(sock, 4))
            if length > MAX_FRAME:
                raise ControlError(f'{path}: announced a {length}-byte answer, more than gunicorn ever sends')
            payload = _recv_exactly(sock, length)
    except TimeoutError:
        raise ControlError(f'{path}: no answer within {TIMEOUT}s') from None
    except OSError as e:
        raise ControlError(f'{path}: {e.strerror or e}') from None
    try:
        answer = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise ControlError(f'{path}: the answer is not JSON: {payload[:80]!r}') from None
    if not isinstance(answer, dict):
        raise ControlError(f'{path}: the answer is not a JSON object: {payload[:80]!r}')
    if answer.get('status') != 'ok':
        raise ControlError(f'{path}: `show {topic}` failed: {answer.get("error", answer)!r}'[:300])
    if not isinstance(answer.get('data'), dict):
        raise ControlError(f'{path}: the answer to `show {topic}` has no data object')
    return answer['data']


def _recv_exactly(sock, size):
    data = b''
    while len(data) < size:
        chunk = sock.recv(min(size - len(data), 65536))
        if not chunk:
            raise ControlError(f'the connection closed after {len(data)} of {size} bytes')
        data += chunk
    return data


def read_stats(path):
    stats = show(path, 'stats', 1)
    workers = show(path, 'workers', 2)
    try:
        ages = [float(w['last_heartbeat']) for w in workers['workers'] if w.get('last_heartbeat') is not None]
        return ControlStats(
            int(stats['workers_target']),
            int(stats['workers_spawned']),
            int(stats['workers_killed']),
            int(stats['reloads']),
            ages,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ControlError(f'{path}: unexpected `show stats`/`show workers` data ({type(e).__name__}: {e})') from None
