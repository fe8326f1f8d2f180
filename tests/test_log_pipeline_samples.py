"""Every sample of assets/logs/gunicorn.yaml and gunicorn_tests.yaml, through the pipeline evaluator."""

from pathlib import Path

import pytest
import yaml

from .logpipeline import Pipeline

LOGS = Path(__file__).resolve().parent.parent / 'assets' / 'logs'
PIPELINE = Pipeline.from_file(LOGS / 'gunicorn.yaml')
TESTS = yaml.safe_load((LOGS / 'gunicorn_tests.yaml').read_text())['tests']
MAIN_PARSER, STACK_PARSER, JSON_DATE_PARSER = PIPELINE.grok_parsers


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
    assert match.attributes == {'error': {'kind': 'RuntimeError', 'message': 'boom from app'}}


def test_json_date_parser_sample():
    (sample,) = JSON_DATE_PARSER.samples
    assert JSON_DATE_PARSER.parser.parse(sample).attributes == {'date_access': 1795614488000}


@pytest.mark.parametrize(
    'last_line, expected',
    [
        ('SystemExit: 1', {'kind': 'SystemExit', 'message': '1'}),
        ('KeyboardInterrupt', {'kind': 'KeyboardInterrupt'}),
        (
            "requests.exceptions.ConnectionError: ('Connection aborted.',)",
            {
                'kind': 'requests.exceptions.ConnectionError',
                'message': "('Connection aborted.',)",
            },
        ),
    ],
)
def test_exception_kind_is_the_last_line_of_the_stack(last_line, expected):
    stack = 'Traceback (most recent call last):\n  File "x.py", line 1, in f\n    g()\n' + last_line
    assert STACK_PARSER.parser.parse(stack).attributes == {'error': expected}


def test_unknown_access_format_is_left_unparsed():
    log = PIPELINE.process('GET / 200')
    assert log['custom'] == {}
    assert log['status'] == 'info'
