"""The pipeline evaluator itself: grok matching, filters, processors, and clear errors."""

import re

import pytest

from .logpipeline import GrokError, GrokParser, Pipeline, PipelineError
from .logpipeline.pipeline import status_of


def parse(match_rules, text, support_rules=''):
    match = GrokParser(support_rules, match_rules).parse(text)
    return match and match.attributes


def test_rule_must_match_the_whole_text():
    assert parse('r %{word:user} connected', 'john connected') == {'user': 'john'}
    assert parse('r %{word:user} connected', 'john connected today') is None


def test_first_matching_rule_wins_and_dotted_extracts_nest():
    parser = GrokParser('', 'first %{integer:a.b}\nsecond %{notSpace:a.c}')
    match = parser.parse('42')
    assert (match.rule, match.attributes) == ('first', {'a': {'b': 42}})
    assert parser.parse('x').attributes == {'a': {'c': 'x'}}


def test_support_rules_and_earlier_match_rules_are_inlined():
    assert parse('base %{_n}\nfull %{base} %{_n}', '1 2', support_rules='_n %{integer:n}') == {'n': 2}


def test_date_matches_javas_patterns():
    # Datadog's own nginx sample: 13/Jul/2016:10:55:36 +0000 is 1468407336000.
    assert parse('r %{date("dd/MMM/yyyy:HH:mm:ss Z"):d}', '13/Jul/2016:10:55:36 +0000') == {'d': 1468407336000}
    assert parse('r %{date("yyyy-MM-dd HH:mm:ss"):d}', '2016-07-13 10:55:36') == {'d': 1468407336000}
    assert parse('r %{date("yyyy-MM-dd HH:mm:ss", "Europe/Paris"):d}', '2016-07-13 12:55:36') == {'d': 1468407336000}
    assert parse(r'''r %{date("yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"):d}''', '2016-07-13T12:55:36.250000+02:00') == {
        'd': 1468407336250
    }


def test_filters():
    assert parse('r %{notSpace:a:nullIf("-")}', '-') == {}
    assert parse('r %{number:d:scale(1000000000)}', '0.001645') == {'d': 1645000}
    assert parse('r %{integer:d:scale(0.5)}', '3') == {'d': 1.5}
    assert parse('r %{regex("\\\\d+"):n:integer} %{regex("[\\\\d.]+"):f:number}', '7 2.5') == {'n': 7, 'f': 2.5}
    assert parse('r %{data::json}', '{"a": {"b": 1}}') == {'a': {'b': 1}}
    assert parse('r %{data:j:json}', '{"a": 1}') == {'j': {'a': 1}}


def test_regex_arguments_unescape_backslashes_and_quotes():
    assert parse('r "%{regex("[^\\"]*"):q}"', '"say hi"') == {'q': 'say hi'}
    assert parse('r %{regex("\\\\S+"):w}', 'no-space') == {'w': 'no-space'}


def test_alternatives_may_capture_the_same_attribute():
    rules = 'r (?:%{integer:d:scale(1000)}us|%{number:d:scale(1000000000)}s)'
    assert parse(rules, '5us') == {'d': 5000}
    assert parse(rules, '0.5s') == {'d': 500000000}


def test_ip_matchers():
    assert parse('r %{ip:ip}', '2001:db8::1') == {'ip': '2001:db8::1'}
    assert parse('r %{ip:ip}', 'example.com') is None
    assert parse('r %{ipOrHost:ip}', 'example.com') == {'ip': 'example.com'}


@pytest.mark.parametrize(
    'support, match, message',
    [
        ('', 'r %{nope:x}', "unknown matcher or rule 'nope'"),
        ('', 'r %{word:x', 'expected "}"'),
        ('', 'r %{regex("\\d+"):x}', 'unsupported escape "\\d"'),
        ('', 'r %{regex("abc):x}', 'unterminated string'),
        ('', 'r %{regex("(unclosed"):x}', 'invalid regex'),
        ('', 'r %{word:x:shout}', "unknown filter 'shout'"),
        ('', 'r %{word:x:nullIf}', "filter 'nullIf' takes 1 argument"),
        ('', 'r %{integer:x:scale("ten")}', 'scale() needs a number'),
        ('', 'r %{date("yyyy-QQ"):d}', "unsupported letters 'QQ'"),
        ('', 'r %{date("yyyy", "Mars/Olympus"):d}', 'unknown timezone'),
        ('', 'r %{word:x}\nr %{word:y}', "rule 'r' is defined twice"),
        ('_a %{_b}\n_b %{_a}', 'r %{_a}', 'cycle'),
        ('', 'r (?P<x>a)', 'named groups are not supported'),
        ('', 'r %{later}\nlater %{word:x}', "unknown matcher or rule 'later'"),
        ('', 'r (unbalanced', 'invalid regular expression'),
        ('', '', 'matchRules defines no rule'),
    ],
)
def test_malformed_rules_give_clear_errors(support, match, message):
    with pytest.raises(GrokError, match=re.escape(message)):
        GrokParser(support, match)


def test_invalid_json_is_a_clear_error():
    parser = GrokParser('', 'r %{data::json}')
    with pytest.raises(GrokError, match='invalid JSON'):
        parser.parse('{"a": ')
    with pytest.raises(GrokError, match='needs an object'):
        parser.parse('[1]')


def pipeline(*processors):
    return Pipeline({'type': 'pipeline', 'name': 't', 'filter': {'query': 'source:t'}, 'processors': list(processors)})


GROK = {'type': 'grok-parser', 'source': 'message', 'grok': {'matchRules': 'r %{integer:code} %{notSpace:url}'}}


def test_processors_chain():
    log = pipeline(
        GROK,
        {'type': 'url-parser', 'sources': ['url'], 'target': 'url_details'},
        {
            'type': 'category-processor',
            'target': 'cat',
            'categories': [
                {'filter': {'query': '@code:[200 TO 299]'}, 'name': 'OK'},
                {'filter': {'query': '@code:404'}, 'name': 'missing'},
                {'filter': {'query': '*'}, 'name': 'error'},
            ],
        },
        {'type': 'status-remapper', 'sources': ['cat']},
    )
    ok = log.process('204 http://h.example:8080/p?a=1&b=%20')
    assert ok['custom'] == {
        'code': 204,
        'url': 'http://h.example:8080/p?a=1&b=%20',
        'url_details': {
            'scheme': 'http',
            'host': 'h.example',
            'port': 8080,
            'path': '/p',
            'queryString': {'a': '1', 'b': '%20'},
        },
        'cat': 'OK',
    }
    assert ok['status'] == 'ok'
    assert log.process('404 /x')['custom']['cat'] == 'missing'
    assert log.process('503 /x')['status'] == 'error'
    assert log.process('not a match')['custom'] == {'cat': 'error'}  # only the catch-all category applies


def test_date_remapper_takes_the_first_present_source():
    log = pipeline(
        {'type': 'grok-parser', 'source': 'message', 'grok': {'matchRules': 'r %{integer:second}'}},
        {'type': 'date-remapper', 'sources': ['first', 'second']},
    ).process('1468407336000')
    assert log['timestamp'] == 1468407336000


def test_date_remapper_rejects_unparsed_dates():
    remap = pipeline(
        {'type': 'grok-parser', 'source': 'message', 'grok': {'matchRules': 'r %{notSpace:date}'}},
        {'type': 'date-remapper', 'sources': ['date']},
    )
    with pytest.raises(PipelineError, match='not epoch milliseconds'):
        remap.process('yesterday')


def test_disabled_processors_do_not_run():
    assert pipeline({**GROK, 'enabled': False}).process('200 /')['custom'] == {}


@pytest.mark.parametrize(
    'processor, message',
    [
        ({'type': 'arithmetic-processor'}, "unsupported type 'arithmetic-processor'"),
        ({'type': 'url-parser', 'sources': ['u']}, "missing field 'target'"),
        (
            {'type': 'category-processor', 'target': 't', 'categories': [{'filter': {'query': 'a OR b'}, 'name': 'x'}]},
            'only "[*]"',
        ),
        ({'type': 'user-agent-parser', 'sources': ['u'], 'target': 't', 'encoded': True}, 'encoded'),
    ],
)
def test_unsupported_processors_give_clear_errors(processor, message):
    with pytest.raises(PipelineError, match=message):
        pipeline(processor)


def test_only_pipelines_are_accepted():
    with pytest.raises(PipelineError, match='of type "pipeline"'):
        Pipeline({'type': 'grok-parser'})


@pytest.mark.parametrize(
    'value, status',
    [
        ('CRITICAL', 'critical'),
        ('ERROR', 'error'),
        ('WARNING', 'warn'),
        ('INFO', 'info'),
        ('DEBUG', 'debug'),
        ('OK', 'ok'),
        ('notice', 'notice'),
        ('warning', 'warn'),
        (3, 'error'),
        ('whatever', 'warn'),
        ('zzz', 'info'),
    ],
)
def test_status_remapper_mapping(value, status):
    assert status_of(value) == status


def test_date_with_comma_milliseconds_as_python_logging_writes_it():
    # The bundled integration's Flask sample: 2017-06-22 09:31:11,580 (UTC) is 1498123871580.
    assert parse('r %{date("yyyy-MM-dd HH:mm:ss,SSS"):t}', '2017-06-22 09:31:11,580') == {'t': 1498123871580}


def test_lazy_regex_stops_at_the_first_occurrence():
    rule = 'r %{regex("[\\\\s\\\\S]*?"):before}\\s*STOP%{data:after}'
    assert parse(rule, 'a b STOP c STOP d') == {'before': 'a b', 'after': ' c STOP d'}


def test_negative_lookahead_keeps_a_number_whole():
    rule = 'r (?:%{integer:n}(?!\\S)|%{number:f})%{data}'
    assert parse(rule, '0.5 rest') == {'f': 0.5}
    assert parse(rule, '7 rest') == {'n': 7}


def test_grok_on_an_attribute_skips_logs_without_it():
    log = pipeline(
        {'type': 'grok-parser', 'source': 'message', 'grok': {'matchRules': 'r %{data:error.message}'}},
        {
            'type': 'grok-parser',
            'source': 'error.message',
            'grok': {'matchRules': 'r on %{notSpace:http.url}'},
        },
    )
    assert log.process('on /x')['custom'] == {'error': {'message': 'on /x'}, 'http': {'url': '/x'}}
    assert log.process('elsewhere')['custom'] == {'error': {'message': 'elsewhere'}}


@pytest.mark.parametrize(
    'url, details',
    [
        ('/apache_pb.gif', {'path': '/apache_pb.gif'}),
        ('/list?foo=bar', {'path': '/list', 'queryString': {'foo': 'bar'}}),
        ('https://api.example.com/v1', {'scheme': 'https', 'host': 'api.example.com', 'path': '/v1'}),
        ('http://174.138.82.103:80/sql/', {'scheme': 'http', 'host': '174.138.82.103', 'port': 80, 'path': '/sql/'}),
    ],
)
def test_url_parser_sets_only_the_parts_present(url, details):
    log = pipeline(
        {'type': 'grok-parser', 'source': 'message', 'grok': {'matchRules': 'r %{notSpace:u}'}},
        {'type': 'url-parser', 'sources': ['u'], 'target': 'd'},
    ).process(url)
    assert log['custom']['d'] == details


def test_category_processor_leaves_the_target_unset_when_nothing_matches():
    log = pipeline(
        GROK,
        {
            'type': 'category-processor',
            'target': 'cat',
            'categories': [{'filter': {'query': '@code:[200 TO 299]'}, 'name': 'Info'}],
        },
        {'type': 'status-remapper', 'sources': ['cat']},
    )
    assert log.process('200 /')['status'] == 'info'
    assert 'cat' not in log.process('600 /')['custom']


DATED = 'r %{date("yyyy-MM-dd HH:mm:ss"):timestamp}'


def test_date_remapper_reads_a_timestamp_attribute():
    log = pipeline(
        {
            'type': 'grok-parser',
            'source': 'message',
            'grok': {'matchRules': 'r %{date("yyyy-MM-dd HH:mm:ss"):timestamp}'},
        },
        {'type': 'date-remapper', 'sources': ['date_access', 'timestamp']},
    ).process('2016-07-13 10:55:36')
    assert log['timestamp'] == log['custom']['timestamp'] == 1468407336000


@pytest.mark.parametrize(
    'value, status',
    [('Info', 'info'), ('Notice', 'notice'), ('Warning', 'warn'), ('Error', 'error')],
)
def test_status_remapper_maps_the_bundled_category_names(value, status):
    assert status_of(value) == status


@pytest.mark.parametrize(
    'agent, details',
    [
        (
            'Mozilla/4.08 [en] (Win95)',
            {
                'browser': {'family': 'Other'},
                'device': {'category': 'Desktop', 'family': 'Other'},
                'os': {'family': 'Windows', 'major': '95'},
            },
        ),
        (
            'Mozilla/4.08 [en] (Win98)',
            {
                'browser': {'family': 'Other'},
                'device': {'category': 'Desktop', 'family': 'Other'},
                'os': {'family': 'Windows', 'major': '98'},
            },
        ),
        (
            '-',
            {
                'browser': {'family': 'Other'},
                'device': {'category': 'Desktop', 'family': 'Other'},
                'os': {'family': 'Other'},
            },
        ),
    ],
)
def test_user_agent_stand_in(agent, details):
    log = pipeline(
        {'type': 'grok-parser', 'source': 'message', 'grok': {'matchRules': 'r %{data:ua}'}},
        {'type': 'user-agent-parser', 'sources': ['ua'], 'target': 'details'},
    ).process(agent)
    assert log['custom']['details'] == details
