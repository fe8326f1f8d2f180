#!/usr/bin/env python3
"""Development entry point; needs only python3 (3.11+).

    python3 dev.py demo    # a sample gunicorn app, some traffic, the check's output
    python3 dev.py test    # lint and the whole test suite
    python3 dev.py bench   # the steady-state benchmark against the bundled check's approach

Each command first makes `.venv` (once, and again when pyproject.toml or
requirements-dev.txt change) with this project installed in editable mode.
"""

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
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


COMMANDS = {'demo': demo, 'test': test, 'bench': bench}

if __name__ == '__main__':
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    os.chdir(ROOT)
    ensure_venv()
    sys.exit(COMMANDS[sys.argv[1]]())
