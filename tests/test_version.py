"""The running gunicorn's version: read once per master, the command only as a fallback."""

import shutil
import sys
from pathlib import Path

import gunicorn
import psutil
import pytest

from datadog_checks.gunicorn import procfs, version
from datadog_checks.gunicorn.discovery import Proc

from .unprivileged import run_as_nobody

VENV_GUNICORN = str(Path(sys.executable).parent / 'gunicorn')


@pytest.fixture
def count_commands(monkeypatch):
    calls = []
    real = version.get_subprocess_output

    def counting(command, *args, **kwargs):
        calls.append(command)
        return real(command, *args, **kwargs)

    monkeypatch.setattr(version, 'get_subprocess_output', counting)
    return calls


@pytest.fixture
def maps_denied(monkeypatch):
    # Root reads every /proc/PID/maps; an Agent running as another user than gunicorn does not.
    def denied(pid, root='/proc'):
        raise psutil.AccessDenied(pid)

    monkeypatch.setattr(procfs, 'read_mapped_paths', denied)


def test_version_comes_from_the_installation_without_running_anything(gunicorn_server, count_commands):
    server = gunicorn_server(name='v-installed', workers=1)

    assert version.installed_version(server.master_pid) == gunicorn.__version__
    assert count_commands == []


def test_command_fallback_runs_once_per_master(
    gunicorn_server, make_check, dd_run_check, datadog_agent, maps_denied, count_commands
):
    assert shutil.which(VENV_GUNICORN)
    gunicorn_server(name='v-fallback', workers=1)
    check = make_check('v-fallback', gunicorn=VENV_GUNICORN)
    check.check_id = 'test:fallback'

    for _ in range(3):
        dd_run_check(check)

    assert count_commands == [[VENV_GUNICORN, '--version']]
    datadog_agent.assert_metadata('test:fallback', {'version.raw': gunicorn.__version__})


def test_unknown_version_warns_once_per_master(
    gunicorn_server, make_check, dd_run_check, datadog_agent, maps_denied, count_commands
):
    server = gunicorn_server(name='v-unknown', workers=1)
    check = make_check('v-unknown', gunicorn='/nonexistent/bin/gunicorn')

    dd_run_check(check)
    first = check.get_warnings()
    dd_run_check(check)
    dd_run_check(check)

    (warning,) = first
    assert warning.startswith(f'Cannot determine the version of gunicorn master {server.master_pid}:')
    assert 'permission denied' in warning and '/nonexistent/bin/gunicorn' in warning
    assert check.get_warnings() == []
    assert len(count_commands) == 1
    datadog_agent.assert_metadata_count(0)


def test_newest_master_wins_and_gone_masters_are_forgotten(gunicorn_server):
    old = gunicorn_server(name='v-old', workers=1)
    new = gunicorn_server(name='v-new', workers=1)
    versions = version.Versions('gunicorn', log=None)
    masters = [
        procfs_proc(old.master_pid),
        procfs_proc(new.master_pid),
    ]

    assert versions.newest(masters) == (gunicorn.__version__, None)
    assert list(versions.by_master) == [masters[1].key]

    versions.newest(masters[:1])
    assert list(versions.by_master) == [masters[0].key]


def procfs_proc(pid):
    return Proc(pid, procfs.read_stat(pid))


@pytest.mark.parametrize(
    'output, expected',
    [
        ('gunicorn (version 27.0.1)\n', '27.0.1'),
        ('gunicorn (version 19.9.0)\n', '19.9.0'),
        ('gunicorn (version 23.0.0.dev1)', '23.0.0.dev1'),
    ],
)
def test_command_output_is_parsed(monkeypatch, output, expected):
    monkeypatch.setattr(version, 'get_subprocess_output', lambda *a, **k: (output, '', 0))

    assert version.command_version('gunicorn', log=None) == expected


@pytest.mark.parametrize(
    'result, problem',
    [
        (('', 'No module named gunicorn', 1), 'exited 1'),
        (('Python 3.11.7', '', 0), 'exited 0'),
    ],
)
def test_command_garbage_is_a_clear_error(monkeypatch, result, problem):
    monkeypatch.setattr(version, 'get_subprocess_output', lambda *a, **k: result)

    with pytest.raises(version.VersionNotFound, match=problem):
        version.command_version('gunicorn', log=None)


def test_as_nobody_the_installation_is_unreadable(gunicorn_server):
    server = gunicorn_server(name='v-nobody', workers=1)

    def read():
        try:
            return version.installed_version(server.master_pid)
        except psutil.AccessDenied:
            return 'AccessDenied'

    assert run_as_nobody(read) == 'AccessDenied'
