"""Explicit diagnoses, as `datadog-agent diagnose` and the runner show them."""

import io
import json
import re

import pytest

from datadog_checks.gunicorn import GunicornCheck, runner
from datadog_checks.gunicorn.diagnose import MASTER, WORKER_FDS, raw_app_name

from .test_matrix import matrix
from .unprivileged import run_as_nobody

PASS, FAIL = 0, 1


def diagnoses(check):
    return {d['name']: d for d in json.loads(check.get_diagnoses())}


def test_master_found_and_fds_readable(gunicorn_server, make_check):
    server = gunicorn_server(name='diag-ok', workers=2)
    check = make_check('diag-ok')

    found = diagnoses(check)  # before any run, as the Agent may ask

    assert found[MASTER]['result'] == PASS
    assert f'pid {server.master_pid}' in found[MASTER]['diagnosis'] and 'with 2 workers' in found[MASTER]['diagnosis']
    assert found[WORKER_FDS]['result'] == PASS


def test_missing_setproctitle_is_named_with_the_pids_and_the_fix(gunicorn_server, make_check):
    server = gunicorn_server(name='diag-untitled', workers=2, setproctitle=False)
    workers_pids = [w.pid for w in server.workers()]
    check = make_check('diag-untitled')

    found = diagnoses(check)

    master = found[MASTER]
    assert master['result'] == FAIL
    assert 'setproctitle is missing' in master['diagnosis']
    assert f'master pid {server.master_pid}' in master['diagnosis']
    assert all(str(pid) in master['diagnosis'] for pid in workers_pids)
    assert 'pip install setproctitle' in master['remediation'] and 'restart gunicorn' in master['remediation']
    assert WORKER_FDS not in found  # no worker found to try


def test_other_app_names_are_listed(gunicorn_server, make_check):
    gunicorn_server(name='diag-real-name', workers=1)
    check = make_check('diag-typo')

    master = diagnoses(check)[MASTER]

    assert master['result'] == FAIL
    assert 'gunicorn: master [diag-real-name]' in master['diagnosis']
    assert 'proc_name' in master['remediation']


@matrix(worker_classes=('sync',))
def test_a_typo_names_the_running_master_first_and_blames_setproctitle_only_for_untitled_apps(
    release_server, make_check
):
    alpha = release_server(name='diag-alpha', workers=1)
    untitled = release_server(name='diag-untitled-beta', workers=1, setproctitle=False)
    untitled_pids = [untitled.master_pid, *(w.pid for w in untitled.workers())]
    check = make_check('diag-alpah')

    master = diagnoses(check)[MASTER]

    text = master['diagnosis']
    assert master['result'] == FAIL
    configured, first_listed, *_ = re.findall(r'gunicorn: master \[([^\]]*)\]', text)
    assert (configured, first_listed) == ('diag-alpah', 'diag-alpha')
    assert f'`gunicorn: master [diag-alpha]` (pid {alpha.master_pid}), likely the one meant' in text
    untitled_part = text[text.index('setproctitle') :]
    assert 'diag-alpha' not in untitled_part
    assert 'app `diag-untitled-beta`' in untitled_part and all(str(pid) in untitled_part for pid in untitled_pids)
    assert master['remediation'].startswith('Set `proc_name: diag-alpha`')


@pytest.mark.parametrize(
    'cmdline, name',
    [
        (['/v/bin/python3', '/v/bin/gunicorn', '-w', '2', '--name', 'shop', 'shop.wsgi:app'], 'shop'),
        (['/v/bin/python3', '-m', 'gunicorn', '-n', 'shop', 'app:app'], 'shop'),
        (['/v/bin/gunicorn', '--name=shop', '--bind', ':80', 'app:app'], 'shop'),
        (['/v/bin/gunicorn', '--bind', ':80', '--workers', '3', 'shop.wsgi:application'], 'shop.wsgi:application'),
        (['/v/bin/gunicorn', '-w', '3', 'shop'], 'shop'),
        (['/v/bin/gunicorn', '--paste', '/etc/shop.ini'], '/etc/shop.ini'),
        (['/v/bin/gunicorn', '--preload', 'shop:create_app()'], 'shop:create_app()'),
        # `--preload` takes no value, but nothing on the command line says so.
        (['/v/bin/gunicorn', '--preload', 'shop'], None),
        (['/v/bin/gunicorn', '-c', '/etc/gunicorn.conf.py'], None),
        (['/v/bin/gunicorn', '-c', '/etc/gunicorn.conf.py', '-b', '0.0.0.0:8000'], None),
        (['/usr/bin/python3', 'manage.py', 'runserver'], None),
    ],
)
def test_the_app_of_a_raw_command_line(cmdline, name):
    assert raw_app_name(cmdline) == name


def test_unreadable_worker_fds_are_diagnosed(gunicorn_server, make_check):
    gunicorn_server(name='diag-nobody', workers=1)
    make_check('warm-up').get_diagnoses()

    found = run_as_nobody(lambda: diagnoses(make_check('diag-nobody')))

    assert found[MASTER]['result'] == PASS
    assert found[WORKER_FDS]['result'] == FAIL
    assert 'CAP_SYS_PTRACE' in found[WORKER_FDS]['remediation'] and '`listeners`' in found[WORKER_FDS]['remediation']


def test_bad_configuration_is_a_diagnosis_not_a_crash():
    found = diagnoses(GunicornCheck('gunicorn', {}, [{'proc_name': 3}]))

    assert found['gunicorn configuration']['result'] == FAIL
    assert 'proc_name' in found['gunicorn configuration']['diagnosis']


def test_runner_prints_the_diagnoses(gunicorn_server):
    gunicorn_server(name='diag-runner', workers=1)
    out = io.StringIO()

    assert runner.main(['--proc-name', 'diag-runner'], out=out) == 0

    text = out.getvalue()
    assert '=== Diagnoses ===' in text
    assert f'[PASS] {MASTER}: Found `gunicorn: master [diag-runner]`' in text
    assert f'[PASS] {WORKER_FDS}:' in text
