"""Lines written by real gunicorn processes, joined as the Agent would, through the log pipeline."""

import http.client
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest
import yaml

from .logpipeline import Pipeline
from .server import wait_until

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = Pipeline.from_file(ROOT / 'assets' / 'logs' / 'gunicorn.yaml')
MAIN_PARSER = PIPELINE.grok_parsers[0].parser

RECOMMENDED_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s'
JSON_FORMAT = (
    '{"network":{"client":{"ip":"%(h)s"},"bytes_written":%(B)s},"date_access":"%(t)s",'
    '"http":{"method":"%(m)s","url":"%({raw_uri}e)s","status_code":%(s)s,"referer":"%(f)s","useragent":"%(a)s"},'
    '"duration":%(D)s000}'
)
CHROME = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/55.0.2883.87 Safari/537.36'
# gunicorn's error log header, written independently of the example config to check its multi-line rule.
HEADER = re.compile(
    r'\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{4}\] \[\d+\] \[(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\] '
)


def multi_line_pattern():
    """The multi_line rule of the error log in the example config's (commented out) logs section."""
    text = (ROOT / 'datadog_checks' / 'gunicorn' / 'data' / 'conf.yaml.example').read_text()
    block = text[text.index('\n# logs:') + 1 :].splitlines()
    logs = yaml.safe_load('\n'.join(line[2:] for line in block if line.startswith('#')))['logs']
    (pattern,) = [
        rule['pattern']
        for source in logs
        for rule in source.get('log_processing_rules', [])
        if rule['type'] == 'multi_line'
    ]
    return pattern


def join_entries(lines, pattern):
    """The Agent's multi_line rule: a line matching the pattern at its start begins a new entry."""
    start = re.compile('^' + pattern)
    entries = []
    for line in lines:
        if start.match(line) or not entries:
            entries.append(line)
        else:
            entries[-1] += '\n' + line
    return entries


def request(server, path, headers):
    host, port = server.bind.rsplit(':', 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request('GET', path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def invalid_request(server):
    with socket.create_connection(('127.0.0.1', server.port), timeout=10) as conn:
        conn.sendall(b'GET / HTTP/9.9\r\n\r\n')
        return conn.recv(100)


def lines(path, count):
    """The first `count` lines of a log file, once gunicorn has written them."""
    return wait_until(
        lambda: path.exists() and len(text := path.read_text().splitlines()) >= count and text[:count],
        timeout=10,
        what=f'{count} lines in {path}',
    )


def assert_recent(log):
    assert abs(log['timestamp'] - time.time() * 1000) < 120_000, log


def drive_basic_traffic(server):
    assert server.get('/')[0] == 200
    assert server.get('/status/404')[0] == 404
    assert server.get('/boom')[0] == 500


@pytest.mark.slow
def test_error_log_and_recommended_access_format(gunicorn_server, tmp_path):
    access_log = tmp_path / 'access.log'
    server = gunicorn_server(
        name='logs',
        workers=3,
        args=['--timeout', '2', '--access-logfile', str(access_log), '--access-logformat', RECOMMENDED_FORMAT],
    )
    drive_basic_traffic(server)
    assert request(server, '/?x=1', {'Referer': 'http://ref.example/', 'User-Agent': CHROME}) == 200
    assert b' 400 ' in invalid_request(server)

    killed = server.workers()[0].pid
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: f'Worker (pid:{killed}) was sent SIGKILL' in server.error_log.read_text(), what='SIGKILL log')
    server.wait_ready()
    server.get_in_background('/sleep?s=10')
    wait_until(lambda: 'SystemExit' in server.error_log.read_text(), timeout=10, what='the worker timeout')

    access = [PIPELINE.process(line) for line in lines(access_log, 5)]
    by_path = {log['custom']['http']['url']: log for log in access}
    assert {url: log['custom']['http']['status_code'] for url, log in by_path.items()} == {
        '/': 200,
        '/status/404': 404,
        '/boom': 500,
        '/?x=1': 200,
        '/sleep?s=10': 500,
    }
    for line, log in zip(access_log.read_text().splitlines(), access, strict=False):
        assert MAIN_PARSER.parse(line).rule == 'access.combined'
        assert log['custom']['network']['client']['ip'] == '127.0.0.1'
        assert log['custom']['duration'] > 0 and log['custom']['duration'] % 1000 == 0
        assert_recent(log)
    assert [by_path[url]['status'] for url in ('/', '/status/404', '/boom')] == ['info', 'warn', 'error']
    assert [by_path[url]['custom']['http']['status_category'] for url in ('/', '/status/404', '/boom')] == [
        'Info',
        'Warning',
        'Error',
    ]
    browsed = by_path['/?x=1']['custom']['http']
    assert browsed['referer'] == 'http://ref.example/'
    assert browsed['url_details'] == {'path': '/', 'queryString': {'x': '1'}}
    assert browsed['useragent_details']['browser']['family'] == 'Chrome'
    # gunicorn writes "-" for a missing header; the bundled pipeline kept it, so queries on it still match.
    assert (by_path['/']['custom']['http']['referer'], by_path['/']['custom']['http']['useragent']) == ('-', '-')

    raw = server.error_log.read_text().splitlines()
    entries = join_entries(raw, multi_line_pattern())
    assert entries == join_entries(raw, HEADER.pattern)
    assert all(HEADER.match(entry) for entry in entries)
    assert sum('\nTraceback (most recent call last):\n' in entry for entry in entries) == 2

    logs = [PIPELINE.process(entry) for entry in entries]
    for log in logs:
        assert MAIN_PARSER.parse(log['message']).rule.startswith('error.')
        assert log['custom']['level'] in ('INFO', 'WARNING', 'ERROR', 'CRITICAL')
        assert log['custom']['pid'] > 0
        assert log['timestamp'] == log['custom']['timestamp']
        assert_recent(log)

    (boom,) = [log for log in logs if 'GET /boom' in log['message']]
    assert boom['status'] == 'error'
    assert boom['custom']['http']['method'] == 'GET' and boom['custom']['http']['url'] == '/boom'
    assert boom['custom']['error']['kind'] == 'RuntimeError'
    assert boom['custom']['error']['message'] == 'Error handling request GET /boom'
    assert boom['custom']['error']['stack'].startswith('  File "')
    assert boom['custom']['error']['stack'].endswith('RuntimeError: boom from app')

    (invalid,) = [log for log in logs if 'Invalid request' in log['message']]
    assert invalid['status'] == 'warn'
    assert invalid['custom']['network']['client']['ip'] == '127.0.0.1'
    assert invalid['custom']['error']['message'] == 'Invalid HTTP Version: (9, 9)'

    (sigkill,) = [log for log in logs if 'SIGKILL' in log['message']]
    assert sigkill['status'] == 'error'
    assert sigkill['custom']['pid'] == server.master_pid
    assert sigkill['custom']['gunicorn'] == {'worker': {'pid': killed, 'signal': 'SIGKILL'}}

    (timeout,) = [log for log in logs if 'WORKER TIMEOUT' in log['message']]
    assert timeout['status'] == 'critical'
    assert timeout['custom']['pid'] == server.master_pid
    timed_out = timeout['custom']['gunicorn']['worker']['pid']
    (aborted,) = [log for log in logs if log['custom'].get('error', {}).get('kind') == 'SystemExit']
    assert aborted['custom']['pid'] == timed_out
    assert aborted['custom']['http']['url'] == '/sleep?s=10'

    booted = {log['custom']['gunicorn']['worker']['pid'] for log in logs if 'Booting worker' in log['message']}
    assert killed in booted and timed_out in booted and len(booted) >= 4  # 3, plus the replacement of the killed one


@pytest.mark.slow
def test_default_and_json_access_formats(gunicorn_server, tmp_path):
    default_log, json_log = tmp_path / 'default.log', tmp_path / 'json.log'
    servers = [
        gunicorn_server(name='default', workers=1, wait=False, args=['--access-logfile', str(default_log)]),
        gunicorn_server(
            name='json',
            workers=1,
            wait=False,
            args=['--access-logfile', str(json_log), '--access-logformat', JSON_FORMAT],
        ),
    ]
    for server in servers:
        server.wait_ready()
        drive_basic_traffic(server)
        assert request(server, '/?x=1', {'Referer': 'http://ref.example/', 'User-Agent': CHROME}) == 200

    for line in lines(default_log, 4):
        log = PIPELINE.process(line)
        assert MAIN_PARSER.parse(line).rule == 'access.combined'
        assert 'duration' not in log['custom']
        assert log['custom']['network']['bytes_written'] >= 0
        assert_recent(log)
    default_browsed = PIPELINE.process(lines(default_log, 4)[3])['custom']['http']
    assert default_browsed['useragent_details']['browser']['family'] == 'Chrome'

    json_logs = [PIPELINE.process(line) for line in lines(json_log, 4)]
    assert [MAIN_PARSER.parse(log['message']).rule for log in json_logs] == ['access.json'] * 4
    assert [log['custom']['http']['status_code'] for log in json_logs] == [200, 404, 500, 200]
    assert [log['status'] for log in json_logs] == ['info', 'warn', 'error', 'info']
    for log in json_logs:
        assert log['custom']['duration'] > 0 and log['custom']['duration'] % 1000 == 0
        assert log['custom']['network']['client']['ip'] == '127.0.0.1'
        assert_recent(log)
    assert json_logs[3]['custom']['http']['url_details'] == {'path': '/', 'queryString': {'x': '1'}}
    assert json_logs[3]['custom']['http']['useragent_details']['browser']['family'] == 'Chrome'
