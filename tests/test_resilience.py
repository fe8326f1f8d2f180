"""Whatever an optional part of a run does, the core signal is sent and the other parts' data too.

The faults here cannot be produced for real (they stand for bugs and for cases nobody
foresaw), so each part's function is made to raise."""

import logging

import pytest

from datadog_checks.base import AgentCheck

from .server import wait_until
from .test_check import worker_counts

# Each part, what is patched to make it fail, and which metrics go with it: its own, and
# those computed from what it reads.
PARTS = [
    pytest.param(
        'Worker fd metrics',
        'datadog_checks.gunicorn.check.read_worker_fds',
        {'gunicorn.requests.in_flight', 'gunicorn.listener.queued', 'gunicorn.listener.active'},
        id='worker-fds',
    ),
    pytest.param(
        'Listener metrics',
        'datadog_checks.gunicorn.sockets.Sockets.sample',
        {'gunicorn.requests.in_flight', 'gunicorn.listener.queued', 'gunicorn.listener.active'},
        id='listeners',
    ),
    pytest.param(
        'Worker pool metrics',
        'datadog_checks.gunicorn.check.GunicornCheck.submit_pool',
        {'gunicorn.worker.memory.rss.sum', 'gunicorn.master.uptime'},
        id='pool',
    ),
    # The control socket's heartbeats stand in: the gauge is still sent.
    pytest.param('Heartbeat metrics', 'datadog_checks.gunicorn.check.heartbeat_age', set(), id='heartbeats'),
    pytest.param(
        'Control socket metrics',
        'datadog_checks.gunicorn.check.read_stats',
        {'gunicorn.master.workers.target'},
        id='control-socket',
    ),
    pytest.param('Version metadata', 'datadog_checks.gunicorn.version.Versions.newest', set(), id='version'),
]
EVERY_PART_SENDS = {
    'gunicorn.requests.in_flight',
    'gunicorn.listener.queued',
    'gunicorn.listener.active',
    'gunicorn.worker.memory.rss.sum',
    'gunicorn.master.uptime',
    'gunicorn.worker.heartbeat.age.max',
    'gunicorn.master.workers.target',
}


def injected(*args, **kwargs):
    raise RuntimeError('injected fault')


@pytest.fixture
def app_with_every_part(gunicorn_server, make_check, tmp_path):
    """A real master with a control socket, and a check that runs every optional part."""
    path = tmp_path / 'gunicorn.ctl'
    gunicorn_server(name='parts', workers=2, control_socket=path)
    wait_until(path.exists, what='the control socket')
    check = make_check('parts', control_socket=str(path))
    check.check_id = 'test:parts'
    return check


def test_every_part_sends_its_data_when_nothing_fails(app_with_every_part, dd_run_check, aggregator, datadog_agent):
    dd_run_check(app_with_every_part)

    assert EVERY_PART_SENDS <= set(aggregator.metric_names)
    datadog_agent.assert_metadata_count(5)  # the version, in its five parts
    assert app_with_every_part.get_warnings() == []


@pytest.mark.parametrize('part, target, lost', PARTS)
def test_a_failing_part_costs_only_its_own_data(
    app_with_every_part, dd_run_check, aggregator, datadog_agent, monkeypatch, caplog, part, target, lost
):
    check = app_with_every_part
    monkeypatch.setattr(target, injected)
    problem = f'{part} skipped: RuntimeError: injected fault'

    warnings = []
    for _ in range(2):
        aggregator.reset()
        dd_run_check(check)  # raises if the run failed
        warnings.append(check.get_warnings())

        assert worker_counts(aggregator, 'parts') == {'working': 0, 'idle': 2}
        aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, tags=['app:parts'])
        assert set(aggregator.metric_names) & EVERY_PART_SENDS == EVERY_PART_SENDS - lost

    assert warnings == [[problem]] * 2  # in the Agent status at every run while it lasts
    logged = [r for r in caplog.records if r.getMessage() == problem]
    assert len(logged) == 1, 'logged once, when it starts'
    assert logged[0].levelno == logging.ERROR and logged[0].exc_info[0] is RuntimeError
    datadog_agent.assert_metadata_count(0 if part == 'Version metadata' else 5)


def test_a_part_that_recovers_says_so(app_with_every_part, dd_run_check, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    check = app_with_every_part
    with monkeypatch.context() as patched:
        patched.setattr('datadog_checks.gunicorn.sockets.Sockets.sample', injected)
        dd_run_check(check)
    dd_run_check(check)

    assert check.get_warnings() == ['Listener metrics skipped: RuntimeError: injected fault']  # the first run's
    assert 'No longer the case: Listener metrics skipped: RuntimeError: injected fault' in caplog.messages


def test_a_bug_in_the_core_fails_the_run_instead_of_being_hidden(app_with_every_part, monkeypatch):
    monkeypatch.setattr('datadog_checks.gunicorn.check.worker_states', injected)

    error = app_with_every_part.run()

    assert 'RuntimeError: injected fault' in error
