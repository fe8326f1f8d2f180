"""The check against real gunicorn masters: discovery, worker counts and states, service check, version."""

import re
import signal
import time

import gunicorn
import psutil
import pytest

from datadog_checks.base import AgentCheck
from datadog_checks.dev.utils import get_metadata_metrics

from .server import title, wait_until


def worker_counts(aggregator, app):
    """{state: value} of the last gunicorn.workers gauges submitted for app."""
    counts = {}
    for stub in aggregator.metrics('gunicorn.workers'):
        if f'app:{app}' in stub.tags:
            state = next(tag.split(':', 1)[1] for tag in stub.tags if tag.startswith('state:'))
            counts[state] = stub.value
    return counts


def run(check, aggregator, dd_run_check):
    aggregator.reset()
    dd_run_check(check)


@pytest.mark.parametrize('worker_class', ['sync', 'gthread'])
def test_counts_workers_with_tags_and_metadata(gunicorn_server, make_check, dd_run_check, aggregator, worker_class):
    server = gunicorn_server(name='counted', workers=3, worker_class=worker_class)
    check = make_check('counted', tags=['team:web', 'tier:front'])

    dd_run_check(check)

    tags = ['app:counted', 'team:web', 'tier:front']
    aggregator.assert_metric('gunicorn.workers', value=0, tags=[*tags, 'state:working'], count=1)
    aggregator.assert_metric('gunicorn.workers', value=3, tags=[*tags, 'state:idle'], count=1)
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, tags=tags, count=1)
    listener = [*tags, f'listener:127.0.0.1:{server.port}']
    aggregator.assert_metric('gunicorn.listener.queued', value=0, tags=listener, count=1)
    aggregator.assert_metric('gunicorn.listener.active', value=0, tags=listener, count=1)
    aggregator.assert_metric('gunicorn.connections.active', value=0, tags=tags, count=1)
    aggregator.assert_metric('gunicorn.requests.in_flight', value=0, tags=tags, count=1)
    for name in ('gunicorn.worker.memory.rss.sum', 'gunicorn.worker.memory.rss.max', 'gunicorn.master.uptime'):
        aggregator.assert_metric(name, tags=tags, count=1)
    aggregator.assert_metric('gunicorn.worker.heartbeat.age.max', tags=tags, count=1)
    aggregator.assert_all_metrics_covered()  # the churn and CPU metrics wait for a second run
    aggregator.assert_metrics_using_metadata(get_metadata_metrics())


def test_no_master_is_critical_with_a_warning_not_an_error(make_check, dd_run_check, aggregator):
    check = make_check('absent-app')

    dd_run_check(check)  # raises if run() reported an error

    aggregator.assert_service_check(
        'gunicorn.is_running',
        AgentCheck.CRITICAL,
        tags=['app:absent-app'],
        message=re.escape('No process titled `gunicorn: master [absent-app]` is running.'),
    )
    assert worker_counts(aggregator, 'absent-app') == {'working': 0, 'idle': 0}
    (warning,) = check.warnings
    assert 'gunicorn: master [absent-app]' in warning and 'setproctitle' in warning


def test_master_without_workers_is_critical(gunicorn_server, make_check, dd_run_check, aggregator):
    server = gunicorn_server(name='no-workers', workers=0)
    check = make_check('no-workers')

    dd_run_check(check)

    aggregator.assert_service_check(
        'gunicorn.is_running',
        AgentCheck.CRITICAL,
        message=re.escape(f'The gunicorn master ({server.master_pid}) is running but has no workers.'),
    )
    assert worker_counts(aggregator, 'no-workers') == {'working': 0, 'idle': 0}


def test_master_killed(gunicorn_server, make_check, dd_run_check, aggregator):
    server = gunicorn_server(name='killed', workers=2)
    check = make_check('killed')
    dd_run_check(check)
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK)

    server.track()
    server.signal(signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(server.master_pid) or _is_zombie(server.master_pid), what='master gone')
    run(check, aggregator, dd_run_check)

    # Its orphaned workers may still be alive for a moment: they are not the app's workers any more.
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.CRITICAL)
    assert worker_counts(aggregator, 'killed') == {'working': 0, 'idle': 0}


def _is_zombie(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_two_masters_with_one_name_are_both_counted(gunicorn_server, make_check, dd_run_check, aggregator):
    gunicorn_server(name='replica', workers=2)
    gunicorn_server(name='replica', workers=3)
    gunicorn_server(name='replica-other', workers=1)
    check = make_check('replica')

    dd_run_check(check)

    assert worker_counts(aggregator, 'replica') == {'working': 0, 'idle': 5}
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK)


def test_hup_replaces_workers_and_counts_stay_right(gunicorn_server, make_check, dd_run_check, aggregator):
    server = gunicorn_server(name='hup', workers=2)
    check = make_check('hup')
    dd_run_check(check)
    before = {w.pid for w in server.workers()}

    server.signal(signal.SIGHUP)
    wait_until(lambda: {w.pid for w in server.workers()}.isdisjoint(before), what='new workers')
    server.wait_ready(workers=2)
    run(check, aggregator, dd_run_check)

    assert worker_counts(aggregator, 'hup') == {'working': 0, 'idle': 2}


def test_ttin_and_ttou_change_the_count(gunicorn_server, make_check, dd_run_check, aggregator):
    server = gunicorn_server(name='ttin', workers=2)
    check = make_check('ttin')

    for sig, expected in ((signal.SIGTTIN, 3), (signal.SIGTTOU, 2)):
        server.signal(sig)
        server.wait_ready(workers=expected)
        run(check, aggregator, dd_run_check)
        assert worker_counts(aggregator, 'ttin') == {'working': 0, 'idle': expected}, sig.name


def test_usr2_upgrade_before_and_after_promotion(gunicorn_server, make_check, dd_run_check, aggregator):
    server = gunicorn_server(name='upg', workers=2)
    check = make_check('upg')
    dd_run_check(check)

    server.signal(signal.SIGUSR2)
    new_master = wait_until(lambda: _child_master(server), what='the USR2 master `gunicorn: master [upg.2]`')
    server.wait_ready(workers=2, master=new_master.pid)
    server.track()
    run(check, aggregator, dd_run_check)
    # The old master's workers and the new one's, not the new master itself.
    assert worker_counts(aggregator, 'upg') == {'working': 0, 'idle': 4}

    server.signal(signal.SIGTERM)  # the old master leaves; the new one is promoted
    wait_until(lambda: title(new_master) == 'gunicorn: master [upg]', what='promotion of the new master')
    run(check, aggregator, dd_run_check)
    # Its workers keep the title `worker [upg.2]` until they are recycled, and keep counting.
    assert worker_counts(aggregator, 'upg') == {'working': 0, 'idle': 2}
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK)


def _child_master(server):
    for proc in server.descendants():
        if title(proc) == 'gunicorn: master [upg.2]':
            server.started.setdefault(proc.pid, proc)
            return proc
    return None


def test_dirty_arbiter_and_dirty_workers_are_not_workers(gunicorn_server, make_check, dd_run_check, aggregator):
    assert int(gunicorn.__version__.split('.')[0]) >= 25, 'dirty apps need gunicorn >= 25'
    server = gunicorn_server(name='dirty', workers=2, args=['--dirty-app', 'dirty:Echo', '--dirty-workers', '2'])
    wait_until(lambda: sum('dirty-worker' in title(p) for p in server.descendants()) == 2, what='dirty workers')
    server.track()
    check = make_check('dirty')

    dd_run_check(check)

    assert worker_counts(aggregator, 'dirty') == {'working': 0, 'idle': 2}


def test_worker_spinning_the_cpu_is_working(gunicorn_server, make_check, dd_run_check, aggregator):
    server = gunicorn_server(name='spin', workers=2)
    check = make_check('spin')
    dd_run_check(check)  # the first sample: every worker is new, hence idle
    assert worker_counts(aggregator, 'spin') == {'working': 0, 'idle': 2}

    request = server.get_in_background('/spin?s=3')
    time.sleep(0.5)  # let the worker burn CPU between the two runs
    run(check, aggregator, dd_run_check)

    assert worker_counts(aggregator, 'spin') == {'working': 1, 'idle': 1}
    request.join()


def test_version_metadata_is_the_running_gunicorn(gunicorn_server, make_check, dd_run_check, datadog_agent):
    gunicorn_server(name='versioned', workers=1)
    check = make_check('versioned', gunicorn='/nonexistent/gunicorn')  # the fallback must not be needed
    check.check_id = 'test:versioned'

    dd_run_check(check)

    major, minor, patch = gunicorn.__version__.split('.')
    datadog_agent.assert_metadata(
        'test:versioned',
        {
            'version.scheme': 'semver',
            'version.major': major,
            'version.minor': minor,
            'version.patch': patch,
            'version.raw': gunicorn.__version__,
        },
    )
    assert not check.warnings


def test_procfs_path_of_a_containerized_agent_is_honoured(
    gunicorn_server, make_check, dd_run_check, aggregator, datadog_agent, tmp_path, monkeypatch
):
    # A containerized Agent mounts the host's /proc elsewhere and names it in datadog.yaml.
    host_proc = tmp_path / 'host' / 'proc'
    host_proc.parent.mkdir()
    host_proc.symlink_to('/proc')
    monkeypatch.setattr(psutil, 'PROCFS_PATH', psutil.PROCFS_PATH)  # restored after the test
    monkeypatch.setitem(datadog_agent._config, 'procfs_path', f'{host_proc}/')
    gunicorn_server(name='host-proc', workers=2)
    check = make_check('host-proc')

    dd_run_check(check)

    assert check.root == str(host_proc)
    assert psutil.PROCFS_PATH == str(host_proc)
    assert worker_counts(aggregator, 'host-proc') == {'working': 0, 'idle': 2}
