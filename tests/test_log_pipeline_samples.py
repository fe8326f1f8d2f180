"""Every sample of assets/logs/gunicorn.yaml and gunicorn_tests.yaml, through the pipeline evaluator."""

import re
from pathlib import Path

import pytest
import yaml

from .logpipeline import Pipeline
from .logpipeline.grok import get_path

LOGS = Path(__file__).resolve().parent.parent / 'assets' / 'logs'
PIPELINE = Pipeline.from_file(LOGS / 'gunicorn.yaml')
TESTS = yaml.safe_load((LOGS / 'gunicorn_tests.yaml').read_text())['tests']
MAIN_PARSER, STACK_PARSER, MESSAGE_PARSER, JSON_DATE_PARSER = PIPELINE.grok_parsers


def test_pipeline_applies_to_gunicorn_logs_only():
    assert PIPELINE.filter_query == 'source:gunicorn'


@pytest.mark.parametrize('entry', TESTS, ids=lambda entry: entry['sample'].splitlines()[0][:70])
def test_sample_gives_expected_result(entry):
    assert entry['result']['message'] == entry['sample']
    assert PIPELINE.process(entry['sample']) == entry['result']


@pytest.mark.parametrize('sample', MAIN_PARSER.samples, ids=lambda sample: sample.splitlines()[0][:70])
def test_parser_samples_are_tested_with_their_expected_result(sample):
    """The samples shown in Datadog's pipeline editor are among the tested ones."""
    assert sample in [entry['sample'] for entry in TESTS]


def test_every_match_rule_is_exercised():
    used = {
        MAIN_PARSER.parser.parse(entry['sample']).rule for entry in TESTS if MAIN_PARSER.parser.parse(entry['sample'])
    }
    assert used == {rule.name for rule in MAIN_PARSER.parser.rules}


def test_stack_parser_sample():
    (sample,) = STACK_PARSER.samples
    match = STACK_PARSER.parser.parse(sample)
    assert match.attributes == {'error': {'kind': 'RuntimeError'}}


@pytest.mark.parametrize(
    'last_line, expected',
    [
        ('SystemExit: 1', 'SystemExit'),
        ('KeyboardInterrupt', 'KeyboardInterrupt'),
        ("requests.exceptions.ConnectionError: ('Connection aborted.',)", 'requests.exceptions.ConnectionError'),
    ],
)
def test_exception_kind_is_the_last_line_of_the_stack(last_line, expected):
    # Only the kind: error.message is the bundled pipeline's text before the traceback, which
    # the stack's last line must not overwrite.
    stack = '  File "x.py", line 1, in f\n    g()\n' + last_line
    assert STACK_PARSER.parser.parse(stack).attributes == {'error': {'kind': expected}}


@pytest.mark.parametrize(
    'message, expected',
    [
        ('Error handling request GET /boom', {'method': 'GET', 'url': '/boom'}),
        ('Error handling request /boom', {'url': '/boom'}),
        ('Error handling request (no URI read)', None),
        ('in app: Exception on /api/users [POST]', {'method': 'POST', 'url': '/api/users'}),
        ('in myapp.views: Exception on /a/b [DELETE]', {'method': 'DELETE', 'url': '/a/b'}),
        ('Exception in worker process', None),
    ],
)
def test_failed_request_from_the_error_message(message, expected):
    match = MESSAGE_PARSER.parser.parse(message)
    assert (match.attributes.get('http') if match else None) == expected


def test_message_parser_samples_name_a_request():
    assert MESSAGE_PARSER.samples
    for sample in MESSAGE_PARSER.samples:
        assert MESSAGE_PARSER.parser.parse(sample).attributes['http']['url']


def test_json_date_parser_sample():
    (sample,) = JSON_DATE_PARSER.samples
    assert JSON_DATE_PARSER.parser.parse(sample).attributes == {'date_access': 1795614488000}


def test_unknown_access_format_is_left_unparsed():
    log = PIPELINE.process('GET / 200')
    assert log['custom'] == {}
    assert log['status'] == 'info'


# The bundled integration's promise, kept: users switching from it keep their facets, views and
# monitors. These tests hold the pipeline to the attributes the bundled pipeline sets (names and
# value forms from its documented behaviour), independently of the full expected results above,
# which a regenerated gunicorn_tests.yaml could otherwise silently change.

FLASK_TRACEBACK = next(
    entry['sample'] for entry in TESTS if entry['sample'].startswith('[2017-07-13 18:31:11,580] ERROR')
)
STACK_AFTER_HEADER = FLASK_TRACEBACK.split('Traceback (most recent call last):\n', 1)[1]
CHROME = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/55.0.2883.87 Safari/537.36'
CHROME_DETAILS = {
    'browser': {'family': 'Chrome', 'major': '55', 'minor': '0', 'patch': '2883', 'patch_minor': '87'},
    'device': {'category': 'Desktop', 'family': 'Other'},
    'os': {'family': 'Linux'},
}

# Each line with the attributes the bundled pipeline gives it: for its own four samples, the
# results its tests publish; for the others, what its rules set according to bundled-gunicorn.md.
BUNDLED = [
    pytest.param(
        '127.0.0.1 - frank [13/Jul/2016:10:55:36 +0000] "GET /apache_pb.gif HTTP/1.0" 200 2326',
        {
            'date_access': 1468407336000,
            'http': {
                'auth': 'frank',
                'method': 'GET',
                'status_category': 'Info',
                'status_code': 200,
                'url': '/apache_pb.gif',
                'url_details': {'path': '/apache_pb.gif'},
                'version': '1.0',
            },
            'network': {'bytes_written': 2326, 'client': {'ip': '127.0.0.1'}},
        },
        id='bundled-common',
    ),
    pytest.param(
        '192.0.2.1 - Ultan [07/Mar/2004:16:43:54 -0800] "GET /unencrypted_password_list?foo=bar HTTP/1.1" 404 9001 '
        '"http://passwords.hackz0r" "Mozilla/4.08 [en] (Win95)"',
        {
            'date_access': 1078706634000,
            'http': {
                'auth': 'Ultan',
                'method': 'GET',
                'referer': 'http://passwords.hackz0r',
                'status_category': 'Warning',
                'status_code': 404,
                'url': '/unencrypted_password_list?foo=bar',
                'url_details': {'path': '/unencrypted_password_list', 'queryString': {'foo': 'bar'}},
                'useragent': 'Mozilla/4.08 [en] (Win95)',
                'useragent_details': {
                    'browser': {'family': 'Other'},
                    'device': {'category': 'Desktop', 'family': 'Other'},
                    'os': {'family': 'Windows', 'major': '95'},
                },
                'version': '1.1',
            },
            'network': {'bytes_written': 9001, 'client': {'ip': '192.0.2.1'}},
        },
        id='bundled-combined',
    ),
    pytest.param(
        '[2018-06-22 09:33:24 +0000] [17] [INFO] Booting worker with pid: 17',
        {'level': 'INFO', 'pid': 17, 'timestamp': 1529660004000},
        id='bundled-error',
    ),
    pytest.param(
        '[2017-06-22 09:31:11,580] ERROR in app: Exception on /api/users [POST] Traceback (most recent call last): '
        'File "/usr/local/lib/python3.5/dist-packages/flask/app.py", line 1982, in wsgi_app '
        'response = self.full_dispatch_request()',
        {
            'error': {
                'message': 'in app: Exception on /api/users [POST]',
                'stack': 'File "/usr/local/lib/python3.5/dist-packages/flask/app.py", line 1982, in wsgi_app '
                'response = self.full_dispatch_request()',
            },
            'level': 'ERROR',
            'timestamp': 1498123871580,
        },
        id='bundled-flask-traceback',
    ),
    pytest.param(
        FLASK_TRACEBACK,
        {
            'error': {'message': 'in app: Exception on /api/users [POST]', 'stack': STACK_AFTER_HEADER},
            'level': 'ERROR',
            'timestamp': 1499970671580,
        },
        id='flask-multiline-traceback',
    ),
    pytest.param(
        '[2026-11-25 13:48:08 +0000] [4643] [ERROR] Error handling request GET /boom\n'
        'Traceback (most recent call last):\n'
        '  File "/app/sample.py", line 19, in application\n'
        "    raise RuntimeError('boom from app')\n"
        'RuntimeError: boom from app',
        {
            'error': {
                'message': 'Error handling request GET /boom',
                'stack': '  File "/app/sample.py", line 19, in application\n'
                "    raise RuntimeError('boom from app')\n"
                'RuntimeError: boom from app',
            },
            'level': 'ERROR',
            'pid': 4643,
            'timestamp': 1795614488000,
        },
        id='gunicorn-traceback',
    ),
    pytest.param(
        f'192.0.2.1 - - [25/Nov/2026:13:48:08 +0000] "GET /api/users HTTP/1.1" 200 512 "-" "{CHROME}" '
        '"203.0.113.9, 198.51.100.2"',
        {
            'date_access': 1795614488000,
            'http': {
                '_x_forwarded_for': '203.0.113.9, 198.51.100.2',
                'method': 'GET',
                'referer': '-',
                'status_category': 'Info',
                'status_code': 200,
                'url': '/api/users',
                'url_details': {'path': '/api/users'},
                'useragent': CHROME,
                'useragent_details': CHROME_DETAILS,
                'version': '1.1',
            },
            'network': {'bytes_written': 512, 'client': {'ip': '192.0.2.1'}},
        },
        id='third-quoted-field',
    ),
    pytest.param(
        f'192.0.2.1 - - [25/Nov/2026:13:48:08 +0000] "GET / HTTP/1.1" 200 6 "-" "{CHROME}" "-" anything at all',
        {'http': {'referer': '-', 'status_code': 200, 'useragent': CHROME}},
        id='third-quoted-field-dash-then-anything',
    ),
    pytest.param(
        '127.0.0.1 - - [25/Nov/2026:13:48:08 +0000] "GET /boom HTTP/1.1" 500 0 "-" "-"',
        {
            'date_access': 1795614488000,
            'http': {
                'method': 'GET',
                'referer': '-',
                'status_category': 'Error',
                'status_code': 500,
                'url': '/boom',
                'url_details': {'path': '/boom'},
                'useragent': '-',
                'version': '1.1',
            },
            'network': {'bytes_written': 0, 'client': {'ip': '127.0.0.1'}},
        },
        id='dash-referer-and-user-agent',
    ),
    pytest.param(
        '127.0.0.1 - - [25/Nov/2026:13:48:08 +0000] "HEAD /static/app.css HTTP/1.1" 304 -',
        {'http': {'status_category': 'Notice', 'status_code': 304}, 'network': {'client': {'ip': '127.0.0.1'}}},
        id='dash-bytes',
    ),
]


def differences(expected, actual, path=''):
    """Where `actual` lacks something of `expected`, or holds it in another form (int vs str counts)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f'{path or "custom"}: expected an object, got {actual!r}']
        return [
            problem
            for key, value in expected.items()
            for problem in differences(value, actual.get(key), f'{path}.{key}' if path else key)
        ]
    if type(actual) is not type(expected) or actual != expected:
        return [f'{path}: bundled gives {expected!r}, ours {actual!r}']
    return []


@pytest.mark.parametrize('line, bundled', BUNDLED)
def test_every_bundled_attribute_is_set_the_same_way(line, bundled):
    assert differences(bundled, PIPELINE.process(line)['custom']) == []


def test_differences_notices_missing_renamed_and_retyped_attributes():
    # The superset test above is only as good as this comparison.
    ours = {'http': {'status_code': 200, 'version': '1.1'}, 'extra': 1}
    assert differences({'http': {'status_code': 200}}, ours) == []
    assert differences({'pid': 17}, ours) == ['pid: bundled gives 17, ours None']
    assert differences({'http': {'status_code': '200'}}, ours) == ["http.status_code: bundled gives '200', ours 200"]
    assert differences({'http': {'version': 1.1}}, ours) == ["http.version: bundled gives 1.1, ours '1.1'"]
    assert differences({'http': {'version': {'major': 1}}}, ours) == ["http.version: expected an object, got '1.1'"]


def test_every_sample_of_the_bundled_integration_is_among_ours():
    samples = [entry['sample'] for entry in TESTS]
    assert [param.values[0] for param in BUNDLED[:4]] == samples[:4]


def _epoch_millis(value):
    return type(value) is int and 10**11 < value < 10**13


def _not_dash(value):
    return isinstance(value, str) and value not in ('', '-')


# The form of each attribute the bundled pipeline sets, whatever line it comes from.
BUNDLED_FORMS = {
    'network.client.ip': lambda v: isinstance(v, str) and v != '-',
    'http.ident': _not_dash,  # nullIf("-"): absent rather than "-"
    'http.auth': _not_dash,
    'date_access': _epoch_millis,
    'http.method': lambda v: isinstance(v, str) and re.fullmatch(r'\w+', v),
    'http.url': lambda v: isinstance(v, str) and v,
    'http.version': lambda v: isinstance(v, str) and re.fullmatch(r'\d+(?:\.\d+)?', v),
    'http.status_code': lambda v: type(v) is int,
    'network.bytes_written': lambda v: type(v) is int,
    'http.referer': lambda v: isinstance(v, str),  # "-" kept
    'http.useragent': lambda v: isinstance(v, str),  # "-" kept
    'http._x_forwarded_for': _not_dash,
    'timestamp': _epoch_millis,
    'pid': lambda v: type(v) is int and v > 0,
    'level': lambda v: isinstance(v, str) and re.fullmatch(r'\w+', v),
    'error.message': lambda v: isinstance(v, str) and 'Traceback (most recent call last):' not in v,
    'error.stack': lambda v: isinstance(v, str) and not v.startswith(('Traceback', '\n')),
    'http.status_category': lambda v: v in ('Info', 'Notice', 'Warning', 'Error'),
    'http.url_details': lambda v: isinstance(v, dict) and set(v) <= {'scheme', 'host', 'port', 'path', 'queryString'},
    'http.useragent_details': lambda v: all(isinstance(v.get(part), dict) for part in ('browser', 'device', 'os')),
}


@pytest.mark.parametrize('entry', TESTS, ids=lambda entry: entry['sample'].splitlines()[0][:70])
def test_bundled_attributes_keep_their_form_in_every_sample(entry):
    custom = PIPELINE.process(entry['sample'])['custom']
    wrong = {
        path: value
        for path, is_form in BUNDLED_FORMS.items()
        if (value := get_path(custom, path)) is not None and not is_form(value)
    }
    assert not wrong


def test_the_forms_reject_what_our_previous_version_wrote():
    assert not BUNDLED_FORMS['http.status_category']('OK')
    assert not BUNDLED_FORMS['http.status_category']('warning')
    assert not BUNDLED_FORMS['http.ident']('-')
    assert not BUNDLED_FORMS['error.stack']('Traceback (most recent call last):\n  File "x.py"')
    assert not BUNDLED_FORMS['http.version'](1.1)
    assert not BUNDLED_FORMS['timestamp']('2026-11-25 13:48:08')


def test_renamed_attributes_are_gone():
    # Our 1.0.0 names for what the bundled pipeline calls pid and timestamp: nothing of ours uses
    # them (facets, saved views, dashboard), so they are not set twice.
    for entry in TESTS:
        custom = PIPELINE.process(entry['sample'])['custom']
        assert get_path(custom, 'gunicorn.pid') is None and 'date_error' not in custom


def access_line(status):
    return f'127.0.0.1 - - [25/Nov/2026:13:48:08 +0000] "GET / HTTP/1.1" {status} 6'


@pytest.mark.parametrize(
    'code, category, status',
    [
        # 1xx: the bundled pipeline leaves them uncategorised (status info); Info keeps that status.
        (100, 'Info', 'info'),
        (101, 'Info', 'info'),
        (199, 'Info', 'info'),
        (200, 'Info', 'info'),
        (299, 'Info', 'info'),
        (300, 'Notice', 'notice'),
        (399, 'Notice', 'notice'),
        (400, 'Warning', 'warn'),
        (499, 'Warning', 'warn'),
        (500, 'Error', 'error'),
        (599, 'Error', 'error'),
        (600, None, 'info'),
    ],
)
def test_status_category_and_status_by_code(code, category, status):
    log = PIPELINE.process(access_line(code))
    assert log['custom']['http'].get('status_category') == category
    assert log['status'] == status


def test_error_lines_take_their_date_from_timestamp():
    entries = [PIPELINE.process(entry['sample']) for entry in TESTS]
    dated = [log for log in entries if 'timestamp' in log['custom']]
    assert len(dated) > 20
    assert all(log['timestamp'] == log['custom']['timestamp'] for log in dated)


BUNDLED_FACETS = {
    ('Method', 'http.method'),
    ('Status Code', 'http.status_code'),
    ('URL Host', 'http.url_details.host'),
    ('URL Path', 'http.url_details.path'),
    ('URL Port', 'http.url_details.port'),
    ('URL scheme', 'http.url_details.scheme'),
    ('Browser', 'http.useragent_details.browser.family'),
    ('Device', 'http.useragent_details.device.family'),
    ('OS', 'http.useragent_details.os.family'),
    ('Client IP', 'network.client.ip'),
}


def test_facets_include_the_bundled_ones():
    facets = yaml.safe_load((LOGS / 'gunicorn.yaml').read_text())['facets']
    assert BUNDLED_FACETS <= {(facet['name'], facet['path']) for facet in facets}
    assert all(facet['source'] == 'log' for facet in facets)
    paths = [facet['path'] for facet in facets]
    assert len(paths) == len(set(paths))
