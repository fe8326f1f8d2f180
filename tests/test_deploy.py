"""deploy/: the Agent image's Dockerfile and the script that restores this check after an Agent upgrade.

Neither a Docker engine nor an Agent runs here. The Dockerfile is held to the wheel the build
really produces. The script runs for real against stand-ins for `sudo`, `datadog-agent` and
`systemctl` that record what they are asked, and against a real Python environment standing for
the Agent's embedded one, whose datadog-checks-base is below the wheel's floor or at it.
"""

import os
import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from .venvs import build_wheel

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / 'deploy' / 'Dockerfile'
SCRIPT = ROOT / 'deploy' / 'restore-after-agent-upgrade.sh'
BUNDLED_VERSION = '4.3.0'  # the bundled datadog-gunicorn of the last public Agent release list


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    return build_wheel(ROOT, tmp_path_factory.mktemp('wheel'))


def base_floor(wheel):
    """The datadog-checks-base version the wheel's METADATA requires at least."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith('.dist-info/METADATA'))
        metadata = Parser().parsestr(archive.read(name).decode())
    (requirement,) = [r for r in metadata.get_all('Requires-Dist') if r.startswith('datadog-checks-base')]
    match = re.fullmatch(r'datadog-checks-base\s*>=\s*([\d.]+)', requirement)
    assert match, f'expected a plain >= floor, got {requirement!r}'
    return tuple(int(part) for part in match[1].split('.'))


# Dockerfile


def dockerfile_instructions():
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    text = re.sub(r'\\\n', ' ', DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith('#')]


def test_dockerfile_copies_and_installs_the_wheel_the_build_produces(wheel):
    instructions = dockerfile_instructions()
    (copy,) = [args for op, args in instructions if op == 'COPY']
    source, destination = copy.split()
    # The build context is dist/, where `pip wheel -w dist .` puts the wheel under this name.
    assert source == wheel.name
    assert destination == '/tmp/'
    (run,) = [args for op, args in instructions if op == 'RUN']
    steps = [step.strip() for step in run.split('&&')]
    installed = f'/tmp/{wheel.name}'
    # The floor check comes first, so a base too old fails the build before anything is installed.
    assert steps[0].startswith('/opt/datadog-agent/embedded/bin/python3 -m pip install --dry-run --no-index')
    assert steps[0].endswith(installed)
    assert steps[1] == f'agent integration install -r -w {installed}'


def test_dockerfile_pins_an_agent_7_release():
    instructions = dockerfile_instructions()
    assert instructions.index(('FROM', 'gcr.io/datadoghq/agent:${AGENT_VERSION}')) > 0
    (default,) = [args for op, args in instructions if op == 'ARG' and args.startswith('AGENT_VERSION=')]
    # A release tag, not `7` or `latest`: the bundled check comes back with every new Agent image.
    assert re.fullmatch(r'AGENT_VERSION=7\.\d+\.\d+', default)


# The restore script

# Each stand-in appends its command line to $CALLS. datadog-agent keeps the installed
# datadog-gunicorn version in $STATE/installed, as `integration show -q` would print it.
STUBS = {
    'sudo': """#!/bin/sh
echo "sudo $*" >> "$CALLS"
[ "$1" = -u ] && [ "$2" = dd-agent ] || { echo "stand-in sudo only knows -u dd-agent" >&2; exit 1; }
shift 2
exec "$@"
""",
    'datadog-agent': """#!/bin/sh
echo "datadog-agent $*" >> "$CALLS"
case "$*" in
    "integration show -q datadog-gunicorn")
        [ -f "$STATE/installed" ] || { echo "not installed" >&2; exit 1; }
        cat "$STATE/installed" ;;
    "integration install -w "*)
        basename "$4" | cut -d- -f2 > "$STATE/installed" ;;
    *) echo "unexpected: $*" >&2; exit 1 ;;
esac
""",
    'systemctl': """#!/bin/sh
echo "systemctl $*" >> "$CALLS"
""",
}


def fake_base_wheel(directory, version):
    """A datadog-checks-base wheel of that version holding nothing: all pip needs to resolve a floor."""
    project = directory / f'base-{version}'
    package = project / f'fake_base_{version.replace(".", "_")}'
    package.mkdir(parents=True)
    (package / '__init__.py').write_text('')
    (project / 'pyproject.toml').write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
        f'[project]\nname = "datadog-checks-base"\nversion = "{version}"\n'
        f'[tool.hatch.build.targets.wheel]\npackages = ["{package.name}"]\n'
    )
    return build_wheel(project, directory / f'dist-{version}')


@pytest.fixture(scope='module')
def agent_python(tmp_path_factory, wheel):
    """A Python environment standing for the Agent's embedded one, and a function that puts a
    datadog-checks-base below or at the wheel's floor into it."""
    directory = tmp_path_factory.mktemp('agent-python')
    env = directory / 'env'
    subprocess.run([sys.executable, '-m', 'venv', str(env)], check=True, capture_output=True, timeout=120)
    python = env / 'bin' / 'python'
    floor = base_floor(wheel)
    below = '.'.join(map(str, (*floor[:-1], floor[-1] - 1))) if floor[-1] else f'{floor[0] - 1}.0.0'
    wheels = {
        'below': fake_base_wheel(directory, below),
        'at': fake_base_wheel(directory, '.'.join(map(str, floor))),
    }

    def set_base(which):
        subprocess.run(
            [python, '-m', 'pip', 'install', '--no-index', '--disable-pip-version-check', '-q', wheels[which]],
            check=True,
            capture_output=True,
            timeout=120,
        )

    return python, set_base


@pytest.fixture
def host(tmp_path, agent_python):
    """Runs the script as on a host whose Agent has `installed` (a version, or None)."""
    python, set_base = agent_python
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name, text in STUBS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    state = tmp_path / 'state'
    state.mkdir()
    calls = tmp_path / 'calls'
    env = {
        'PATH': f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
        'CALLS': str(calls),
        'STATE': str(state),
        'DD_AGENT_PYTHON': str(python),
    }

    class Host:
        def run(self, wheel, installed=None, base='at'):
            if installed is not None:
                (state / 'installed').write_text(installed + '\n')
            set_base(base)
            calls.write_text('')
            result = subprocess.run(
                ['sh', str(SCRIPT), str(wheel)], env=env, capture_output=True, text=True, timeout=120
            )
            return result, calls.read_text().splitlines()

        @property
        def installed(self):
            return (state / 'installed').read_text().strip()

        @property
        def in_agent_python(self):
            """Distributions pip really installed in the environment standing for the Agent's."""
            listed = subprocess.run(
                [python, '-m', 'pip', 'list', '--format=freeze', '--disable-pip-version-check'],
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            )
            return {line.split('==')[0] for line in listed.stdout.splitlines()}

    return Host()


def version_of(wheel):
    return wheel.name.split('-')[1]


def test_script_puts_ours_back_over_the_bundled_check_then_restarts_the_agent(host, wheel):
    result, calls = host.run(wheel, installed=BUNDLED_VERSION)
    assert result.returncode == 0, result.stderr
    assert host.installed == version_of(wheel)
    assert f'sudo -u dd-agent datadog-agent integration install -w {wheel}' in calls
    assert calls[-1] == 'systemctl restart datadog-agent'
    # The floor check before it is a dry run: only `integration install` may install anything.
    assert 'datadog-gunicorn' not in host.in_agent_python
    assert (
        result.stdout
        == f'installed datadog-gunicorn {version_of(wheel)} in place of {BUNDLED_VERSION}; restarted the Agent\n'
    )


def test_script_changes_nothing_when_ours_is_installed(host, wheel):
    result, calls = host.run(wheel, installed=version_of(wheel))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ''
    # One question, as dd-agent, and nothing else: no install, no restart.
    assert calls == [
        'sudo -u dd-agent datadog-agent integration show -q datadog-gunicorn',
        'datadog-agent integration show -q datadog-gunicorn',
    ]


def test_script_installs_when_no_datadog_gunicorn_is_there(host, wheel):
    result, calls = host.run(wheel)
    assert result.returncode == 0, result.stderr
    assert host.installed == version_of(wheel)
    assert 'in place of none' in result.stdout
    assert calls[-1] == 'systemctl restart datadog-agent'


def test_script_leaves_the_bundled_check_when_the_agent_base_is_below_the_floor(host, wheel):
    result, calls = host.run(wheel, installed=BUNDLED_VERSION, base='below')
    assert result.returncode == 1
    assert host.installed == BUNDLED_VERSION
    assert not any('integration install' in call or call.startswith('systemctl') for call in calls)
    # pip's own reason, then ours.
    assert 'datadog-checks-base>=' in result.stderr
    assert 'NOT installed' in result.stderr


def test_script_refuses_a_missing_wheel(host, tmp_path):
    result, calls = host.run(tmp_path / 'datadog_gunicorn-9.9.9-py3-none-any.whl', installed=BUNDLED_VERSION)
    assert result.returncode == 2
    assert 'usage:' in result.stderr
    assert calls == []
