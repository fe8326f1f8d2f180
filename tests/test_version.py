"""The running gunicorn's version: read once per master, the command only as a fallback."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import gunicorn
import psutil
import pytest

from datadog_checks.gunicorn import GunicornCheck, procfs, version
from datadog_checks.gunicorn.discovery import Proc

from .server import GunicornServer
from .unprivileged import run_as_nobody
from .venvs import make_venv, pip_install

VENV_GUNICORN = str(Path(sys.executable).parent / 'gunicorn')
VENV_PYTHON = sys.executable
# Two releases that run on every Python the check supports, the older one first.
OLD, NEW = '26.2.0', '27.0.1'


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

    monkeypatch.setattr(procfs, 'mapped_paths', denied)


def test_version_comes_from_the_installation_without_running_anything(gunicorn_server, count_commands):
    server = gunicorn_server(name='v-installed', workers=1)

    assert version.installation(server.master_pid).version == gunicorn.__version__
    assert count_commands == []


def test_the_maps_are_read_only_as_far_as_the_folder_holding_gunicorn(tmp_path, monkeypatch):
    site = '/venv/lib/python3.11/site-packages'
    setproctitle = f'7f0000000000-7f0000001000 r-xp 00000000 fd:01 2 {site}/setproctitle/_setproctitle.so\n'
    others = [f'7f{i:010x}000-7f{i:010x}fff r--p 00000000 fd:01 {i} /usr/lib/lib{i}.so\n' for i in range(3000)]
    maps = tmp_path / '6' / 'maps'
    maps.parent.mkdir()
    maps.write_text(setproctitle + ''.join(others))
    metadata = tmp_path / '6' / 'root' / site.lstrip('/') / 'gunicorn-27.0.1.dist-info' / 'METADATA'
    metadata.parent.mkdir(parents=True)
    metadata.write_text('Metadata-Version: 2.1\nName: gunicorn\nVersion: 27.0.1\n')
    assert maps.stat().st_size > procfs.READ_SIZE
    reads = []
    real_pread = procfs.os.pread

    def counted(fd, size, offset):
        reads.append(offset)
        return real_pread(fd, size, offset)

    monkeypatch.setattr(procfs.os, 'pread', counted)

    found = version.installation(6, str(tmp_path))

    assert (found.version, found.folder) == ('27.0.1', site)
    assert reads == [0]


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


@pytest.mark.parametrize(
    'init_config, options, ran',
    [
        pytest.param({'gunicorn': VENV_GUNICORN}, {}, VENV_GUNICORN, id='init_config'),
        pytest.param(
            {'gunicorn': '/nonexistent/gunicorn'}, {'gunicorn': VENV_GUNICORN}, VENV_GUNICORN, id='instance-wins'
        ),
        # `gunicorn:` with no value in the instance
        pytest.param({'gunicorn': VENV_GUNICORN}, {'gunicorn': None}, VENV_GUNICORN, id='empty-instance-option'),
    ],
)
def test_init_config_command_is_honoured_after_the_instances(
    gunicorn_server, dd_run_check, datadog_agent, maps_denied, count_commands, init_config, options, ran
):
    gunicorn_server(name='v-init', workers=1)
    instance = {'proc_name': 'v-init', **options}
    check = GunicornCheck('gunicorn', init_config, [instance])
    check.check_id = 'test:init'

    dd_run_check(check)
    dd_run_check(check)

    assert count_commands == [[ran, '--version']]
    datadog_agent.assert_metadata('test:init', {'version.raw': gunicorn.__version__})
    assert check.get_warnings() == []  # of both runs


@pytest.fixture
def spaced_gunicorn(tmp_path):
    """The venv's gunicorn script, reached through a folder whose name holds a space."""
    folder = tmp_path / 'my venv' / 'bin'
    folder.mkdir(parents=True)
    (folder / 'gunicorn').symlink_to(VENV_GUNICORN)
    return str(folder / 'gunicorn')


RUN_AS_GUNICORN = "from gunicorn.app.wsgiapp import run; run(prog='gunicorn')"


@pytest.mark.parametrize(
    'command, words',
    [
        pytest.param('{python} -m gunicorn', ['{python}', '-m', 'gunicorn'], id='python-m-gunicorn'),
        pytest.param(f'{{python}} -c "{RUN_AS_GUNICORN}"', ['{python}', '-c', RUN_AS_GUNICORN], id='quoted-argument'),
        pytest.param("'{spaced}'", ['{spaced}'], id='quoted-path-with-a-space'),
    ],
)
def test_the_command_is_split_as_a_shell_would_and_run_without_one_once_per_master(
    gunicorn_server,
    make_check,
    dd_run_check,
    datadog_agent,
    maps_denied,
    count_commands,
    spaced_gunicorn,
    command,
    words,
):
    paths = {'python': VENV_PYTHON, 'spaced': spaced_gunicorn}
    command = command.format(**paths)
    words = [word.format(**paths) for word in words]
    first = gunicorn_server(name='v-words', workers=1)
    check = make_check('v-words', gunicorn=command)
    check.check_id = 'test:words'

    for _ in range(3):
        dd_run_check(check)
    first.stop()
    gunicorn_server(name='v-words', workers=1)
    dd_run_check(check)
    dd_run_check(check)

    assert count_commands == [[*words, '--version']] * 2  # once per master
    datadog_agent.assert_metadata('test:words', {'version.raw': gunicorn.__version__})
    assert check.get_warnings() == []


def test_without_a_master_the_configured_command_gives_the_version_once_until_a_master_appears(
    gunicorn_server, make_check, dd_run_check, datadog_agent, count_commands
):
    check = make_check('v-absent', gunicorn=f'{VENV_PYTHON} -m gunicorn')
    check.check_id = 'test:absent'

    warnings = []
    for _ in range(3):
        dd_run_check(check)
        warnings.append(check.get_warnings())

    assert count_commands == [[VENV_PYTHON, '-m', 'gunicorn', '--version']]
    datadog_agent.assert_metadata('test:absent', {'version.raw': gunicorn.__version__})
    (warning,) = warnings[0]
    assert 'No process titled `gunicorn: master [v-absent]`' in warning  # and nothing about the version

    server = gunicorn_server(name='v-absent', workers=1)
    dd_run_check(check)  # the master's own installation: no command
    server.stop()
    dd_run_check(check)
    dd_run_check(check)
    assert len(count_commands) == 2, 'asked again after a master was seen, as gunicorn may have been upgraded'


def test_without_a_master_a_failing_command_is_run_once_and_warned_at_every_run(
    make_check, dd_run_check, datadog_agent, count_commands
):
    check = make_check('v-absent-bad', gunicorn='/nonexistent/bin/gunicorn')

    warnings = []
    for _ in range(3):
        dd_run_check(check)
        warnings.append(check.get_warnings())

    version_warnings = [w for w in warnings[0] if 'version' in w]
    assert len(version_warnings) == 1
    assert version_warnings[0].startswith('Cannot determine the version of gunicorn while no master runs:')
    assert '/nonexistent/bin/gunicorn --version' in version_warnings[0]
    assert warnings == [warnings[0]] * 3
    assert len(count_commands) == 1
    datadog_agent.assert_metadata_count(0)


def test_without_a_master_the_default_command_is_not_run(make_check, dd_run_check, datadog_agent, count_commands):
    # Whatever `gunicorn` is on the Agent's PATH, nothing says it is the app's.
    check = make_check('v-absent-default')

    dd_run_check(check)

    assert count_commands == []
    datadog_agent.assert_metadata_count(0)


def test_unknown_version_is_looked_up_once_and_warned_at_every_run(
    gunicorn_server, make_check, dd_run_check, datadog_agent, maps_denied, count_commands
):
    server = gunicorn_server(name='v-unknown', workers=1)
    check = make_check('v-unknown', gunicorn='/nonexistent/bin/gunicorn')

    warnings = []
    for _ in range(3):
        dd_run_check(check)
        warnings.append(check.get_warnings())

    (warning,) = warnings[0]
    assert warning.startswith(f'Cannot determine the version of gunicorn master {server.master_pid}:')
    assert 'permission denied' in warning and '/nonexistent/bin/gunicorn' in warning
    assert warnings == [[warning]] * 3  # a lasting condition: in the Agent status at every run
    assert len(count_commands) == 1
    datadog_agent.assert_metadata_count(0)


@pytest.fixture
def old_venv(tmp_path):
    """The python of a new environment holding gunicorn OLD, installed just now."""
    return make_venv(tmp_path / 'venv', f'gunicorn=={OLD}', 'setproctitle')


@pytest.fixture
def venv_server(tmp_path):
    """Start real gunicorn masters with another python than the tests'; all are stopped by pid at the end."""
    servers = []

    def start(python, **options):
        server = GunicornServer(tmp_path, **options)
        server.command[0] = str(python)  # GunicornServer runs `sys.executable -m gunicorn`
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def test_an_upgrade_under_a_running_master_is_not_reported_as_running(
    old_venv, venv_server, make_check, dd_run_check, datadog_agent
):
    server = venv_server(old_venv, name='v-upgraded', workers=1)
    knew_it = make_check('v-upgraded')
    knew_it.check_id = 'test:before'
    dd_run_check(knew_it)
    datadog_agent.assert_metadata('test:before', {'version.raw': OLD})
    datadog_agent.reset()

    pip_install(old_venv, '--upgrade', f'gunicorn=={NEW}')
    fresh = make_check('v-upgraded')
    fresh.check_id = 'test:after'
    dd_run_check(fresh)
    dd_run_check(knew_it)

    datadog_agent.assert_metadata_count(0)
    (warning,) = fresh.get_warnings()
    assert f'gunicorn {NEW} was installed' in warning and f'master {server.master_pid}' in warning
    assert f'A restart of the master would run gunicorn {NEW}.' in warning
    assert knew_it.get_warnings() == []  # it read the disk before the upgrade, when it still told the truth
    dd_run_check(fresh)
    assert fresh.get_warnings() == [warning]  # it holds while the master runs: shown at every run


def test_an_upgrade_under_a_running_master_is_not_taken_from_the_command_either(
    old_venv, venv_server, make_check, dd_run_check, datadog_agent, maps_denied
):
    server = venv_server(old_venv, name='v-upgraded-cmd', workers=1)
    command = str(old_venv.parent / 'gunicorn')
    knew_it = make_check('v-upgraded-cmd', gunicorn=command)
    knew_it.check_id = 'test:before'
    dd_run_check(knew_it)
    datadog_agent.assert_metadata('test:before', {'version.raw': OLD})
    datadog_agent.reset()

    pip_install(old_venv, '--upgrade', f'gunicorn=={NEW}')
    fresh = make_check('v-upgraded-cmd', gunicorn=command)
    fresh.check_id = 'test:after'
    dd_run_check(fresh)

    datadog_agent.assert_metadata_count(0)
    (warning,) = fresh.get_warnings()
    assert f'`{command}` (gunicorn {NEW})' in warning and f'master {server.master_pid}' in warning
    assert f'A restart of the master would run gunicorn {NEW}' in warning


def test_start_time_is_known_to_a_clock_tick_not_a_second():
    # Installs followed by a restart within the same second must still be told apart.
    before = time.time()
    proc = subprocess.Popen(['sleep', '60'])
    after = time.time()
    try:
        started = version.started_at(procfs.read_stat(proc.pid))
    finally:
        proc.kill()
        proc.wait()

    assert before - 1 / procfs.CLOCK_TICKS <= started <= after


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
    return Proc.of(pid, procfs.read_stat(pid))


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

    assert version.command_version(['gunicorn'], log=None) == expected


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
        version.command_version(['gunicorn'], log=None)


def test_as_nobody_the_installation_is_unreadable(gunicorn_server):
    server = gunicorn_server(name='v-nobody', workers=1)

    def read():
        try:
            return version.installation(server.master_pid).version
        except psutil.AccessDenied:
            return 'AccessDenied'

    assert run_as_nobody(read) == 'AccessDenied'
