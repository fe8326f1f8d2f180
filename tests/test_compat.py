"""What code and configuration written for the Agent's bundled gunicorn check rely on keeps working."""

import sys
from pathlib import Path

import gunicorn
import psutil
import pytest
import yaml

from datadog_checks.base import AgentCheck
from datadog_checks.gunicorn import GUnicornCheck, GunicornCheck, procfs

from .test_check import worker_counts

VENV_GUNICORN = str(Path(sys.executable).parent / 'gunicorn')

# A gunicorn.d/conf.yaml written for the bundled check: the command in init_config for
# every instance, one instance with its own.
BUNDLED_CONF = f"""
init_config:
  gunicorn: {VENV_GUNICORN}

instances:
  - proc_name: compat-own
    gunicorn: {sys.executable} -m gunicorn
    tags:
      - team:legacy
  - proc_name: compat-shared
"""


def test_the_bundled_import_paths():
    from datadog_checks.gunicorn.gunicorn import GUnicornCheck as from_module
    from datadog_checks.gunicorn.gunicorn import GUnicornCheckError

    assert from_module is GUnicornCheck is GunicornCheck
    assert issubclass(GUnicornCheckError, Exception)


@pytest.fixture
def maps_denied(monkeypatch):
    # As for an Agent that may not read gunicorn's /proc files: only the commands give a version.
    def denied(pid, root='/proc'):
        raise psutil.AccessDenied(pid)

    monkeypatch.setattr(procfs, 'mapped_paths', denied)


def test_a_config_file_of_the_bundled_check_loads_and_runs(
    gunicorn_server, dd_run_check, aggregator, datadog_agent, maps_denied
):
    gunicorn_server(name='compat-own', workers=1)
    gunicorn_server(name='compat-shared', workers=2)
    conf = yaml.safe_load(BUNDLED_CONF)

    for number, instance in enumerate(conf['instances']):
        # The Agent makes one check object per instance, under the name of the folder.
        check = GUnicornCheck('gunicorn', conf['init_config'], [instance])
        check.check_id = f'test:compat-{number}'
        dd_run_check(check)
        assert check.get_warnings() == []
        datadog_agent.assert_metadata(check.check_id, {'version.raw': gunicorn.__version__})

    assert worker_counts(aggregator, 'compat-own') == {'working': 0, 'idle': 1}
    assert worker_counts(aggregator, 'compat-shared') == {'working': 0, 'idle': 2}
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, tags=['app:compat-own', 'team:legacy'])
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, tags=['app:compat-shared'])
