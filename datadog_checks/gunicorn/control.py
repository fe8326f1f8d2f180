"""A read-only client of gunicorn's control socket (gunicorn >= 25.1, `--control-socket`).

Framing: a 4-byte big-endian length, then a JSON object. The check sends only `show`
commands; every other command changes the server (adds or kills workers, reloads,
shuts down) and must never leave a monitor.

Whatever answers on the path is held to what gunicorn sends, so that it can cost the run
no more than this part's metrics: one deadline for the whole exchange, a size limit, JSON
nested no deeper than gunicorn's, and numbers a metric can hold.
"""

import json
import math
import re
import socket
import struct
import time
from typing import NamedTuple

TIMEOUT = 1.0  # for the whole exchange: both `show` commands together
# `show workers` spends about 100 bytes per worker: thousands of workers fit. gunicorn's own
# limit, 16 MiB, would let one answer hold a run and the Agent's memory.
MAX_ANSWER = 1024 * 1024
# gunicorn's answers nest 4 deep ({"data": {"workers": [{...}]}}); json.loads recurses once
# per level and fails with RecursionError long before it runs out of input.
MAX_DEPTH = 16
# Counts and heartbeat ages beyond it are not gunicorn's, and a metric (a float64) cannot
# hold them exactly; a 400-digit integer could not be sent at all.
MAX_NUMBER = 2**53
READ_ONLY_TOPICS = frozenset({'stats', 'workers'})
COUNTS = ('workers_target', 'workers_spawned', 'workers_killed', 'reloads')

JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
BRACKET = re.compile(rb'[\[\]{}]')


class ControlError(Exception):
    """The socket is missing, refused, slow, or answered something that is not gunicorn's protocol."""


class ControlStats(NamedTuple):
    workers_target: int
    workers_spawned: int
    workers_killed: int
    reloads: int
    heartbeat_ages: list  # seconds since each worker's last heartbeat, as the master sees them


def read_stats(path, timeout=TIMEOUT):
    """The master's counters and its workers' heartbeat ages, from `show stats` and `show workers`,
    both answered within `timeout` seconds in all."""
    deadline = time.monotonic() + timeout
    try:
        stats = show(path, 'stats', 1, deadline)
        workers = show(path, 'workers', 2, deadline)
    except TimeoutError:
        raise ControlError(f'no complete answer to `show stats` and `show workers` within {timeout}s') from None
    except OSError as e:
        raise ControlError(e.strerror or str(e)) from None
    return ControlStats(*(count(stats, name) for name in COUNTS), heartbeat_ages(workers))


def show(path, topic, request_id, deadline):
    """The `data` of gunicorn's answer to `show TOPIC`; raises TimeoutError past `deadline`
    (a time.monotonic() value)."""
    if topic not in READ_ONLY_TOPICS:
        raise ValueError(f'`show {topic}` is not one of the read-only commands this check sends')
    request = json.dumps({'id': request_id, 'command': 'show', 'args': [topic]}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(remaining(deadline))
        sock.connect(path)
        sock.settimeout(remaining(deadline))
        sock.sendall(struct.pack('>I', len(request)) + request)
        (length,) = struct.unpack('>I', recv_exactly(sock, 4, deadline))
        if length > MAX_ANSWER:
            raise ControlError(f'`show {topic}` announced a {length}-byte answer; at most {MAX_ANSWER} are read')
        payload = recv_exactly(sock, length, deadline)
    answer = parse(payload, topic)
    if answer.get('status') != 'ok':
        raise ControlError(f'`show {topic}` failed: {answer.get("error", answer)!r}'[:300])
    if not isinstance(answer.get('data'), dict):
        raise ControlError(f'the answer to `show {topic}` has no data object')
    return answer['data']


def remaining(deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def recv_exactly(sock, size, deadline):
    data = b''
    while len(data) < size:
        sock.settimeout(remaining(deadline))
        chunk = sock.recv(min(size - len(data), 65536))
        if not chunk:
            raise ControlError(f'the connection closed after {len(data)} of {size} bytes')
        data += chunk
    return data


def parse(payload, topic):
    """A JSON object, refused before parsing when nested deeper than MAX_DEPTH, and while
    parsing at the first number a metric cannot hold."""
    depth = 0
    for bracket in BRACKET.finditer(JSON_STRING.sub(b'""', payload)):
        depth += 1 if bracket.group() in b'[{' else -1
        if depth > MAX_DEPTH:
            raise ControlError(f'the answer to `show {topic}` is nested deeper than {MAX_DEPTH} levels')
    try:
        answer = json.loads(payload, parse_int=bounded_int, parse_float=bounded_float, parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError):
        raise ControlError(f'the answer to `show {topic}` is not JSON: {payload[:80]!r}') from None
    if not isinstance(answer, dict):
        raise ControlError(f'the answer to `show {topic}` is not a JSON object: {payload[:80]!r}')
    return answer


def bounded_int(text):
    # The length first: int() of thousands of digits is slow, and refused past 4300 anyway.
    if len(text) > len(str(MAX_NUMBER)) + 1 or abs(int(text)) > MAX_NUMBER:
        raise out_of_range(text)
    return int(text)


def bounded_float(text):
    value = float(text)
    if not math.isfinite(value) or abs(value) > MAX_NUMBER:
        raise out_of_range(text)
    return value


def no_constant(name):
    raise out_of_range(name)  # NaN, Infinity, -Infinity: Python's json extensions, not JSON


def out_of_range(text):
    shown = text if len(text) <= 24 else f'{text[:20]}... ({len(text)} characters)'
    return ControlError(f'the answer holds a number out of range: {shown}')


def count(data, name):
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ControlError(f'`show stats` gave {name} = {value!r:.80}, not a count')
    return value


def heartbeat_ages(data):
    workers = data.get('workers')
    if not isinstance(workers, list) or not all(isinstance(worker, dict) for worker in workers):
        raise ControlError(f'`show workers` gave workers = {workers!r:.80}, not a list of workers')
    ages = []
    for worker in workers:
        age = worker.get('last_heartbeat')  # None until the worker's first heartbeat
        if age is None:
            continue
        if isinstance(age, bool) or not isinstance(age, int | float):
            raise ControlError(f'`show workers` gave last_heartbeat = {age!r:.80}, not a number of seconds')
        ages.append(float(age))
    return ages
