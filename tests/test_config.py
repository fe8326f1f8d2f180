"""Bad configuration is reported by run(), naming the option, and nothing is submitted."""

import json

import pytest

from datadog_checks.base import AgentCheck
from datadog_checks.gunicorn import GunicornCheck
from datadog_checks.gunicorn.config_models.instance import InstanceConfig
from datadog_checks.gunicorn.sockets import parse_listener
from scripts.sync_config import drifted_files


@pytest.mark.parametrize(
    'instance, option, problem',
    [
        ({'proc_name': ''}, 'proc_name', 'blank string'),
        ({'proc_name': '   '}, 'proc_name', 'blank string'),
        ({'proc_name': 5}, 'proc_name', 'valid string'),
        ({'proc_name': ['web']}, 'proc_name', 'valid string'),
        ({'proc_name': 'web', 'tags': 'team:web'}, 'tags', 'valid tuple'),
        ({'proc_name': 'web', 'tags': [1]}, 'tags -> 1', 'valid string'),
        ({'proc_name': 'web', 'tags': {'team': 'web'}}, 'tags', 'valid tuple'),
        ({'proc_name': 'web', 'gunicorn': ['gunicorn', '--version']}, 'gunicorn', 'valid string'),
        ({'proc_name': 'web', 'gunicorn': 'docker exec "web gunicorn'}, 'gunicorn', 'No closing quotation'),
        ({'proc_name': 'web', 'gunicorn': '  '}, 'gunicorn', 'names no command'),
        ({'proc_name': 'web', 'rescan_interval': 'soon'}, 'rescan_interval', 'valid number'),
        ({'proc_name': 'web', 'rescan_interval': 0}, 'rescan_interval', 'greater than 0'),
        ({'proc_name': 'web', 'min_collection_interval': 'often'}, 'min_collection_interval', 'valid number'),
        ({'proc_name': 'web', 'listeners': 'localhost:8000'}, 'listeners', 'valid tuple'),
        ({'proc_name': 'web', 'listeners': ['localhost:8000']}, 'listeners', 'must be an IP address'),
        ({'proc_name': 'web', 'listeners': ['127.0.0.1']}, 'listeners', 'expected HOST:PORT'),
        ({'proc_name': 'web', 'listeners': ['127.0.0.1:70000']}, 'listeners', 'expected HOST:PORT'),
        ({'proc_name': 'web', 'listeners': ['unix:run/app.sock']}, 'listeners', 'absolute path'),
        ({'proc_name': 'web', 'listeners': [8000]}, 'listeners', 'not an address'),
        ({'proc_name': 'web', 'control_socket': ['/run/g.ctl']}, 'control_socket', 'valid string'),
        ({'pod_uid': '%%kube_pod_uid%%'}, 'pod_uid', 'not a Kubernetes pod uid'),
        ({'pod_uid': '6F1D3B2A-9C8E-4D7F-A1B2-C3D4E5F60718'}, 'pod_uid', 'not a Kubernetes pod uid'),
        ({'pod_uid': 7}, 'pod_uid', 'valid string'),
    ],
    ids=lambda value: repr(value) if isinstance(value, dict) else None,
)
def test_bad_instance_is_a_configuration_error_naming_the_option(aggregator, instance, option, problem):
    check = GunicornCheck('gunicorn', {}, [instance])

    error = check.run()

    (report,) = json.loads(error)
    lines = report['message'].splitlines()
    assert lines[0].startswith('Detected 1 error while loading configuration model `InstanceConfig`')
    assert lines[1] == option
    assert problem in lines[2]
    assert aggregator.metric_names == []
    assert aggregator.service_check_names == []


def test_bad_init_config_command_is_a_configuration_error_naming_the_option(aggregator):
    check = GunicornCheck('gunicorn', {'gunicorn': "'/srv/app/bin/gunicorn"}, [{'proc_name': 'web'}])

    (report,) = json.loads(check.run())

    lines = report['message'].splitlines()
    assert lines[0].startswith('Detected 1 error while loading configuration model `SharedConfig`')
    assert lines[1] == 'gunicorn'
    assert 'No closing quotation' in lines[2]
    assert aggregator.metric_names == []


# datadog-checks-base itself refuses `metric_patterns:` by name, before any model is built.
@pytest.mark.parametrize('option', sorted(set(InstanceConfig.model_fields) - {'proc_name', 'metric_patterns'}))
def test_an_option_present_but_empty_takes_its_default(gunicorn_server, make_check, dd_run_check, aggregator, option):
    # `option:` with nothing after it, as YAML reads it. Several runs: from the second on,
    # discovery weighs the time since its last scan against `rescan_interval`.
    gunicorn_server(name='empty-option', workers=1)
    check = make_check('empty-option', **{option: None})
    expected = make_check('empty-option')

    for _ in range(3):
        aggregator.reset()
        dd_run_check(check)
        aggregator.assert_metric('gunicorn.workers', value=1, tags=['app:empty-option', 'state:idle'])
        aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, tags=['app:empty-option'])

    expected.load_configuration_models()
    assert check.config == expected.config
    assert check.get_warnings() == []


def test_an_empty_init_config_option_takes_its_default(gunicorn_server, dd_run_check, aggregator):
    gunicorn_server(name='empty-init', workers=1)
    check = GunicornCheck('gunicorn', {'gunicorn': None, 'service': None}, [{'proc_name': 'empty-init'}])

    dd_run_check(check)

    assert check.shared_config.gunicorn is None and check.versions.command == ['gunicorn']
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK)


@pytest.mark.parametrize(
    'address, expected',
    [
        ('127.0.0.1:8000', ('127.0.0.1', 8000, '')),
        ('0.0.0.0:80', ('0.0.0.0', 80, '')),
        (':8000', ('0.0.0.0', 8000, '')),
        ('[::1]:8000', ('::1', 8000, '')),
        ('[::]:8000', ('::', 8000, '')),
        ('unix:/run/gunicorn.sock', ('', 0, '/run/gunicorn.sock')),
    ],
)
def test_listener_addresses_in_gunicorns_bind_syntax(address, expected):
    listener = parse_listener(address)

    assert tuple(listener) == expected
    assert parse_listener(listener.address) == listener


def test_the_error_is_reported_again_on_every_run(aggregator):
    check = GunicornCheck('gunicorn', {}, [{'proc_name': 7}])
    assert check.run()
    assert check.run(), 'a second run must not start collecting with a half-built check'
    assert aggregator.metric_names == []


def test_example_config_and_models_are_generated_from_the_spec():
    drifted = drifted_files()
    assert not drifted, 'run `python scripts/sync_config.py`:\n' + '\n'.join(diff for _, diff in drifted)
