#!/usr/bin/env python3
"""Development entry point; needs only python3 (3.11+).

    python3 dev.py demo        # a sample gunicorn app, some traffic, the check's output
    python3 dev.py test        # lint and the whole test suite (CPython 3.11, newest datadog-checks-base)
    python3 dev.py bench       # the steady-state benchmark against the bundled check's approach

    python3 dev.py test-floor  # the suite with the datadog-checks-base floor of pyproject.toml
    python3 dev.py test-py313  # the suite on CPython 3.13, the Agent's Python, with that floor
                               # (in a Debian trixie tree; root)
    python3 dev.py validate    # Datadog's own validators, `ddev validate ...` (in that tree; root)
    python3 dev.py prepare [venv floor py313 ddev]   # only make (or find) what those need
    python3 dev.py ci          # what CI runs (.ci/run): validate, test-py313 and test, each timed

Arguments after test, test-floor and test-py313 go to pytest.

demo, test and bench first make `.venv` (once, and again when pyproject.toml or
requirements-dev.txt change) with this project installed in editable mode. The other
environments are cached outside the clone, in ${XDG_CACHE_HOME:-~/.cache}/datadog-gunicorn-tests
(ci/ says how), so fresh clones on the same machine reuse them.
"""

import hashlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / '.venv'
PYTHON = VENV / 'bin' / 'python'
STAMP = VENV / '.installed-from'
INPUTS = [ROOT / 'pyproject.toml', ROOT / 'requirements-dev.txt']


def ensure_venv():
    wanted = hashlib.sha256(b''.join(path.read_bytes() for path in INPUTS)).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print('Creating .venv ...', flush=True)
        subprocess.run([sys.executable, '-m', 'venv', str(VENV)], check=True)
    print('Installing the check and its development tools into .venv ...', flush=True)
    pip = [str(PYTHON), '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check']
    subprocess.run([*pip, '--upgrade', 'pip'], check=True)
    subprocess.run([*pip, '-e', f'{ROOT}[deps]', '-r', str(ROOT / 'requirements-dev.txt')], check=True)
    STAMP.write_text(wanted)


def venv_run(*args, **kwargs):
    return subprocess.run([str(PYTHON), *args], cwd=ROOT, **kwargs).returncode


def test():
    for command in (['-m', 'ruff', 'check', '.'], ['-m', 'ruff', 'format', '--check', '.']):
        if venv_run(*command):
            return 1
    return venv_run('-m', 'pytest', *sys.argv[2:])


def bench():
    return venv_run(str(ROOT / 'benchmarks' / 'bench_check.py'), *sys.argv[2:])


def demo():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    base = f'http://127.0.0.1:{port}'
    gunicorn = subprocess.Popen(
        [str(PYTHON), '-m', 'gunicorn', '--name', 'demo', '--workers', '4', '--bind', f'127.0.0.1:{port}']
        + ['--chdir', str(ROOT / 'tests' / 'app'), '--no-control-socket', '--log-level', 'warning']
        + ['sample:application'],
        cwd=ROOT,
    )
    print(f'Started gunicorn: master pid {gunicorn.pid}, 4 sync workers, app `demo` on {base}', flush=True)
    try:
        wait_for(base)
        for _ in range(20):
            urllib.request.urlopen(base + '/', timeout=5).read()
        print('Sent 20 quick requests; now 1 request spinning the CPU and 2 waiting on I/O (3 s each).', flush=True)
        slow = [
            subprocess.Popen([str(PYTHON), '-c', f'import urllib.request; urllib.request.urlopen("{base}{path}")'])
            for path in ('/spin?s=3', '/sleep?s=3', '/sleep?s=3')
        ]
        time.sleep(0.5)
        print('Running the check twice, one second apart:\n', flush=True)
        code = venv_run('-m', 'datadog_checks.gunicorn', '--proc-name', 'demo', '--check-times', '2', '--pause', '1000')
        for request in slow:
            request.wait(timeout=30)
        return code
    finally:
        gunicorn.send_signal(signal.SIGTERM)
        try:
            gunicorn.wait(timeout=15)
        except subprocess.TimeoutExpired:
            gunicorn.kill()
            gunicorn.wait()
        print(f'Stopped gunicorn (pid {gunicorn.pid}).')


def wait_for(url, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f'gunicorn did not answer on {url} within {timeout}s') from None
            time.sleep(0.1)


# The commands below need no .venv: they make their own environments, with the standard
# library only (ci/).


def in_ci_step(function):
    """Run FUNCTION from ci/, turning its StepFailed into a message and exit code 1."""
    from ci.common import StepFailed

    try:
        function()
        return 0
    except StepFailed as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
    except subprocess.CalledProcessError as e:
        print(f'error: {shlex.join(map(str, e.cmd))} exited with code {e.returncode}', file=sys.stderr, flush=True)
    return 1


def test_floor():
    from ci import floor

    return in_ci_step(lambda: floor.test(sys.argv[2:]))


def test_py313():
    from ci import trixie

    return in_ci_step(lambda: trixie.test(sys.argv[2:]))


def validate():
    from ci import validate

    return in_ci_step(validate.validate)


def prepare_venv():
    ensure_venv()
    if (ROOT / 'tests' / 'releases.py').is_file():  # the other gunicorn releases' venvs
        subprocess.run([str(PYTHON), '-m', 'tests.releases'], cwd=ROOT, check=True)


def prepare_ddev():
    from ci import trixie, validate

    validate.ensure_ddev(trixie.ensure_tree())


def prepare_floor():
    from ci import floor

    floor.ensure_venv()


def prepare_py313():
    from ci import trixie

    trixie.prepare()


PREPARE = {'venv': prepare_venv, 'floor': prepare_floor, 'py313': prepare_py313, 'ddev': prepare_ddev}


def prepare():
    """Make what the named parts need (all by default), one after the other."""
    wanted = sys.argv[2:] or list(PREPARE)
    unknown = [name for name in wanted if name not in PREPARE]
    if unknown:
        sys.exit(f'prepare: unknown {", ".join(unknown)}; known: {", ".join(PREPARE)}')
    return in_ci_step(lambda: [PREPARE[name]() for name in wanted])


# CI: the README's test command and the runs the issue asks for, in one command that fails when
# any of them fails. The environments are made first, side by side: making them mostly waits on
# the network and the disk. Then two suites cover both Pythons and both ends of the
# datadog-checks-base range: CPython 3.13 with the floor, and the README's command, CPython 3.11
# with the newest base, last, so that its pytest line closes the output. (A third suite, 3.11 on
# the floor, took CI to 15 minutes; `python3 dev.py test-floor` still runs it.) The suites run
# one after the other, alone on the machine: the check counts every gunicorn master of a name it
# sees, the suites use the same names, and their tests of a host's view (pods in PID namespaces
# of their own, kthreadd as pid 2) rule out hiding suites from each other in PID namespaces.
# Each step: what it is, its dev.py command, and the part of PREPARE it needs.
CI_PREPARE = ('venv', 'py313', 'ddev')
CI_STEPS = (
    ('Datadog\'s validators (ddev validate)', ['validate'], 'ddev'),
    ('the suite on CPython 3.13 (the Agent\'s Python) with the datadog-checks-base floor', ['test-py313'], 'py313'),
    ('lint and the suite on CPython 3.11 with the newest datadog-checks-base (README)', ['test'], 'venv'),
)


def banner(text):
    print(f'\n==== {text}', flush=True)


def prepare_in_parallel(parts):
    """`dev.py prepare NAME` for every part at once, each into a log shown when it ends."""
    logs = Path(tempfile.mkdtemp(prefix='dev-ci-'))

    def make(name):
        started = time.monotonic()
        with open(logs / f'{name}.log', 'w+') as log:
            code = subprocess.run([sys.executable, __file__, 'prepare', name], stdout=log, stderr=subprocess.STDOUT)
            log.seek(0)
            return name, code.returncode, time.monotonic() - started, log.read()

    results = []
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        for name, code, took, output in pool.map(make, parts):
            banner(f'prepare {name}: {"ready" if code == 0 else f"FAILED (exit code {code})"} in {took:.0f}s')
            print(output, end='', flush=True)
            results.append((f'prepare {name}', code, took))
    return results


def ci():
    started = time.monotonic()
    banner('making or finding the environments: ' + ', '.join(CI_PREPARE))
    results = prepare_in_parallel(CI_PREPARE)
    unprepared = {what.split()[-1] for what, code, _ in results if code}
    for what, arguments, needs in CI_STEPS:
        banner(f'{what}: {shlex.join(["python3", "dev.py", *arguments])}')
        if needs in unprepared:
            print(f'skipped: `python3 dev.py prepare {needs}` failed (above)', flush=True)
            results.append((what, 'skipped', 0))
            continue
        step_started = time.monotonic()
        code = subprocess.run([sys.executable, 'dev.py', *arguments], cwd=ROOT).returncode
        results.append((what, code, time.monotonic() - step_started))
    banner(f'CI steps, {time.monotonic() - started:.0f}s in all:')
    for what, code, took in results:
        verdict = 'ok' if code == 0 else 'SKIPPED' if code == 'skipped' else 'FAILED'
        print(f'  {verdict:<7} {took:6.0f}s  {what}')
    failed = [what for what, code, _ in results if code]
    if failed:
        print(f'CI failed: {"; ".join(failed)}', flush=True)
    return 1 if failed else 0


COMMANDS = {
    'demo': demo,
    'test': test,
    'bench': bench,
    'test-floor': test_floor,
    'test-py313': test_py313,
    'validate': validate,
    'prepare': prepare,
    'ci': ci,
}
NEED_VENV = {'demo', 'test', 'bench'}

if __name__ == '__main__':
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    os.chdir(ROOT)
    if sys.argv[1] in NEED_VENV:
        ensure_venv()
    sys.exit(COMMANDS[sys.argv[1]]())
