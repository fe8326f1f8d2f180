"""The suite against the lowest datadog-checks-base the check declares: pyproject.toml's floor.

    python3 -m ci.floor [PYTEST ARGS]    # what `python3 dev.py test-floor` runs

Its venv is cached in ${XDG_CACHE_HOME:-~/.cache}/datadog-gunicorn-tests/venv-floor-KEY, made by
the python3 that runs this, keyed by it, the floor and requirements-dev.txt. It gets the test
tools of requirements-dev.txt first (all but its base pin), then datadog-checks-base[deps] at the
floor, whose own pins (pydantic, requests, ...) then win, as in an Agent that ships that base:
datadog-checks-dev asks for requests>=2.33 while bases before 37.35 pin 2.32.5, so `pip check` may
complain about datadog-checks-dev, and about nothing else.

The check itself is not installed: the clone goes on PYTHONPATH, as an editable install puts it,
so one venv serves every clone on the machine.
"""

import os
import subprocess
import sys
import tempfile

from .common import (
    BASE,
    ROOT,
    StepFailed,
    base_floor,
    build_once,
    cache_dir,
    deps_extra,
    dev_tools,
    digest,
    floor_install_problems,
    run,
    say,
)


def venv_path():
    requirements = (ROOT / 'requirements-dev.txt').read_bytes()
    interpreter = (os.path.realpath(sys.executable), sys.version)
    return cache_dir() / f'venv-floor-{digest(base_floor(), requirements, *deps_extra(), *interpreter)}'


def _build(venv):
    floor = base_floor()
    say(f'making the venv {venv}: the test tools, then {BASE} {floor} with its own pins')
    run([sys.executable, '-m', 'venv', venv])
    pip = [venv / 'bin' / 'python', '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check']
    with tempfile.NamedTemporaryFile('w', suffix='.txt') as tools:
        tools.write('\n'.join(dev_tools()) + '\n')
        tools.flush()
        run([*pip, '-r', tools.name])
    # pip warns here that datadog-checks-dev wants a newer requests: checked just below.
    run([*pip, f'{BASE}[deps]=={floor}', *deps_extra()], stderr=subprocess.DEVNULL)
    check = subprocess.run([venv / 'bin' / 'python', '-m', 'pip', 'check'], capture_output=True, text=True)
    unexpected = floor_install_problems(check.stdout)
    if unexpected:
        raise StepFailed('pip check in the floor venv:\n' + '\n'.join(unexpected))


def ensure_venv():
    venv = venv_path()
    if not build_once(venv, _build):
        say(f'reusing the venv {venv}')
    return venv


def test(pytest_args=()):
    venv = ensure_venv()
    python = venv / 'bin' / 'python'
    version = subprocess.run(
        [python, '-c', f'import importlib.metadata as m; print(m.version("{BASE}"))'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if version != base_floor():
        raise StepFailed(f'{venv} holds {BASE} {version}, not the floor {base_floor()}: remove it and run again')
    say(f'the test suite with {BASE} {version}, the floor pyproject.toml declares')
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
    run([python, '-m', 'pytest', *pytest_args], cwd=ROOT, env=env)


if __name__ == '__main__':
    try:
        test(sys.argv[1:])
    except StepFailed as e:
        sys.exit(f'error: {e}')
