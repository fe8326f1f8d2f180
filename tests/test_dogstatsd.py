"""gunicorn's own StatsD, received the way DogStatsD receives it, held against metadata.csv.

One real gunicorn sends to a UDP socket of the test; the names it sends, after DogStatsD's
expansion, must each have a metadata row of the in-app type Datadog stores them as, and
metadata.csv must name nothing that neither gunicorn's StatsD nor the check sends.
"""

import csv
import importlib
import os
import re
import signal
import socket
import threading
from pathlib import Path

import pytest

from .server import GunicornServer, wait_until

METADATA = Path(__file__).parents[1] / 'metadata.csv'

APP = 'statsdapp'
TAGS = (f'app:{APP}', 'env:test')
# Dotted, to prove the prefix is stripped as a whole and not one label at a time.
PREFIX = 'edge.web'

# How Datadog stores what DogStatsD receives (https://docs.datadoghq.com/metrics/types/, "Submission
# types and Datadog in-app types", and https://docs.datadoghq.com/metrics/custom_metrics/dogstatsd_metrics_submission/):
# a COUNT (`c`) is stored as a RATE, normalised per second over the flush interval; a GAUGE (`g`) as a
# GAUGE; a StatsD TIMER (`ms`) is a HISTOGRAM (`h`), from which the Agent makes `.count` (a RATE) and
# `.avg`, `.median`, `.max`, `.95percentile` (GAUGEs) with its default histogram_aggregates and
# histogram_percentiles.
HISTOGRAM = {'.avg': 'gauge', '.median': 'gauge', '.max': 'gauge', '.95percentile': 'gauge', '.count': 'rate'}
IN_APP = {'c': {'': 'rate'}, 'g': {'': 'gauge'}, 'ms': HISTOGRAM, 'h': HISTOGRAM}

# gunicorn sends gunicorn.request.status.<code> for whatever status the app answers with, so
# metadata.csv can only list a family of them. It lists the bundled integration's rows: every final
# status registered with IANA (http.HTTPStatus of Python 3.11, from 200), 419 and 512 (registered
# nowhere, but named there), 100 and 102; and 101, which an app answers when it takes over the
# connection for a WebSocket. A WSGI app cannot send an interim 1xx ahead of its final response, but
# it can answer with a 1xx as its only one: gunicorn 27 writes it, counts it like any other status,
# then closes the connection (seen with the sync worker). The `100 Continue` gunicorn writes itself
# for `Expect: 100-continue` goes straight to the socket (gunicorn/http/wsgi.py) and is not counted.
# The test makes gunicorn send every one of them, so each row is proven by a real datagram.
STATUS_CODES = (
    *range(100, 103),
    *range(200, 209),
    226,
    *range(300, 306),
    307,
    308,
    *range(400, 420),
    *range(421, 427),
    428,
    429,
    431,
    451,
    *range(500, 509),
    *range(510, 513),
)
STATUS_FAMILY = re.compile(r'gunicorn\.request\.status\.(\d+)')

DATAGRAM = re.compile(
    r'(?P<name>[^:|@#]+):(?P<value>-?\d+(?:\.\d+)?)\|(?P<type>c|g|ms|h)(?:\|@(?P<rate>[\d.]+))?(?:\|#(?P<tags>.*))?'
)


class UdpListener:
    """A UDP socket on 127.0.0.1 drained by a thread, so a burst of datagrams never overflows its buffer."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.settimeout(0.05)
        self.address = f'127.0.0.1:{self.sock.getsockname()[1]}'
        self.datagrams = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self):
        while not self._stop.is_set():
            try:
                self.datagrams.append(self.sock.recv(65535).decode('ascii'))
            except TimeoutError:
                continue

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def parse(datagram):
    match = DATAGRAM.fullmatch(datagram)
    assert match, f'not a DogStatsD datagram: {datagram!r}'
    return match


def unprefixed(name):
    assert name.startswith(PREFIX + '.'), f'{name} lacks the --statsd-prefix {PREFIX}'
    return name[len(PREFIX) + 1 :]


def read_metadata():
    with METADATA.open(newline='') as f:
        rows = list(csv.DictReader(f))
    names = [row['metric_name'] for row in rows]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert not duplicates, f'metadata.csv names these twice: {duplicates}'
    return {row['metric_name']: row for row in rows}


def check_metric_names():
    # Read when the test runs: the check's metrics module grows while this test stays as it is.
    metrics = importlib.reload(importlib.import_module('datadog_checks.gunicorn.metrics'))
    return {value for value in vars(metrics).values() if isinstance(value, str) and value.startswith('gunicorn.')}


def exchange(server, request):
    """Send a raw request and read until gunicorn closes the connection, as it does after every
    response of a sync worker and after any response to `Connection: close`."""
    with server.connect(timeout=10) as conn:
        conn.sendall(request)
        answer = b''
        while chunk := conn.recv(4096):
            answer += chunk
    return answer


def request_status(server, code):
    """The status gunicorn answers `/status/<code>` with.

    A 1xx is read over a raw socket: an HTTP client takes it for an interim response and waits for
    the final one, which never comes (http.client of Python 3.11 skips a 100, then finds the
    connection closed)."""
    if code >= 200:
        return server.get(f'/status/{code}')[0]
    answer = exchange(server, f'GET /status/{code} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'.encode())
    status_line = answer.split(b'\r\n', 1)[0]
    assert status_line.startswith(b'HTTP/1.1 '), answer
    return int(status_line.split()[1])


def send_invalid_request(server):
    """An HTTP version gunicorn refuses: a real WARNING log line, answered by gunicorn itself."""
    answer = exchange(server, b'GET / HTTP/9.9\r\nHost: x\r\n\r\n')
    assert answer.startswith(b'HTTP/1.1 400 '), answer


@pytest.fixture(scope='module')
def sent(tmp_path_factory):
    """Every datagram one gunicorn sent while serving each status code, errors, a killed and a stuck worker."""
    listener = UdpListener()
    server = GunicornServer(
        tmp_path_factory.mktemp('dogstatsd'),
        name=APP,
        workers=2,
        args=[
            '--statsd-host',
            listener.address,
            '--statsd-prefix',
            PREFIX,
            '--dogstatsd-tags',
            ','.join(TAGS),
            '--enable-backlog-metric',
            # 1 s: the shortest --timeout that still times out (0 means never), for a quick CRITICAL "WORKER TIMEOUT".
            '--timeout',
            '1',
        ],
    )
    try:
        server.start()
        answered = 0
        for code in STATUS_CODES:
            assert request_status(server, code) == code
            answered += 1
        assert server.get('/boom')[0] == 500  # ERROR with a traceback: gunicorn.log.exception
        answered += 1
        send_invalid_request(server)  # WARNING; rejected before parsing, so no request metrics

        # SIGKILL is what the OOM killer sends; the master logs it at ERROR.
        killed = server.workers()[0].pid
        os.kill(killed, signal.SIGKILL)
        wait_until(
            lambda: killed not in {w.pid for w in server.workers()} and len(server.workers()) == 2,
            what='the killed worker replaced',
        )

        # A request outliving --timeout: the master logs CRITICAL and aborts the worker, whose
        # unfinished request gunicorn still counts, as a 500.
        stuck = server.get_in_background('/sleep?s=30')
        answered += 1

        def names_seen():
            return {unprefixed(parse(d)['name']) for d in listener.datagrams}

        expected = {
            'gunicorn.requests',
            'gunicorn.request.duration',
            *(f'gunicorn.request.status.{code}' for code in STATUS_CODES),
            'gunicorn.log.exception',
            'gunicorn.log.warning',
            'gunicorn.log.error',
            'gunicorn.log.critical',
            'gunicorn.backlog',
            'gunicorn.workers',
        }

        def all_sent():
            requests = sum(1 for d in listener.datagrams if parse(d)['name'] == f'{PREFIX}.gunicorn.requests')
            return requests == answered and expected <= names_seen()

        try:
            wait_until(all_sent, timeout=20, what='every expected datagram')
        except AssertionError as e:
            missing = sorted(expected - names_seen())
            raise AssertionError(f'{e}; missing {missing} (log: {server.log_tail()})') from None
        stuck.join(timeout=10)
    finally:
        server.stop()
        listener.close()
    return [parse(d) for d in listener.datagrams]


def expanded(sent):
    """{name as stored in Datadog: in-app type}, after DogStatsD's expansion of timers and histograms."""
    stored = {}
    for datagram in sent:
        name = unprefixed(datagram['name'])
        for suffix, in_app in IN_APP[datagram['type']].items():
            stored[name + suffix] = in_app
    return stored


def test_every_datagram_carries_the_dogstatsd_tags(sent):
    untagged = [d.string for d in sent if tuple((d['tags'] or '').split(',')) != TAGS]
    assert not untagged, f'datagrams without exactly the tags {TAGS}: {untagged}'


def test_counters_are_not_sampled(sent):
    # DogStatsD divides a counter by its sample rate; gunicorn must send every one.
    sampled = [d.string for d in sent if d['type'] == 'c' and float(d['rate'] or 1) != 1.0]
    assert not sampled, sampled


def test_every_name_sent_is_in_metadata_with_its_in_app_type(sent):
    metadata = read_metadata()
    wrong = []
    for name, in_app in sorted(expanded(sent).items()):
        row = metadata.get(name)
        if row is None:
            wrong.append(f'{name}: no row (stored in-app as {in_app})')
        elif row['metric_type'] != in_app:
            wrong.append(f'{name}: row says {row["metric_type"]}, stored in-app as {in_app}')
        elif in_app == 'rate' and row['per_unit_name'] != 'second':
            wrong.append(f'{name}: a DogStatsD rate is per second, row says per {row["per_unit_name"]!r}')
    assert not wrong, '\n'.join(wrong)


def test_metadata_names_nothing_that_is_never_sent(sent):
    known = set(expanded(sent)) | check_metric_names()
    unknown = sorted(set(read_metadata()) - known)
    assert not unknown, f'metadata.csv rows neither gunicorn StatsD nor the check sends: {unknown}'


def test_status_rows_are_one_family(sent):
    rows = {name: row for name, row in read_metadata().items() if name.startswith('gunicorn.request.status.')}
    codes = set()
    for name in rows:
        match = STATUS_FAMILY.fullmatch(name)
        assert match, f'{name} is not gunicorn.request.status.<code>'
        codes.add(int(match[1]))
    assert codes == set(STATUS_CODES), (
        f'rows missing: {sorted(set(STATUS_CODES) - codes)}, unexplained: {sorted(codes - set(STATUS_CODES))}'
    )
    # One family: the same type, interval and units for every code, so that adding codes up on a
    # graph (all 5xx, say) adds like to like.
    shapes = {(r['metric_type'], r['interval'], r['unit_name'], r['per_unit_name']) for r in rows.values()}
    assert len(shapes) == 1, shapes
    sent_codes = {int(m[1]) for d in sent if (m := STATUS_FAMILY.fullmatch(unprefixed(d['name'])))}
    assert sent_codes == codes, f'sent but not listed: {sorted(sent_codes - codes)}'
