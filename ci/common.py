"""Helpers shared by the CI steps: the cache folder, commands printed before they run, and
builds done once under a lock."""

import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import time
import tomllib
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A cached build unused for this long is removed when a build of the same kind is made: pins
# change, and each stale Debian tree holds some 400 MB.
STALE_AFTER = 14 * 24 * 3600


class StepFailed(Exception):
    """A command or a check of a CI step failed; the message says which and why."""


def cache_dir():
    """Outside the clone, so that fresh clones (as CI makes) and `git clean` on this machine reuse
    what was built; tests/releases.py keeps its gunicorn venvs in the same folder."""
    base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    path = Path(base) / 'datadog-gunicorn-tests'
    path.mkdir(parents=True, exist_ok=True)
    return path


def digest(*parts):
    """A short hash of PARTS (bytes or anything str() can write), for naming cached builds."""
    hashed = hashlib.sha256()
    for part in parts:
        hashed.update(part if isinstance(part, bytes) else str(part).encode())
        hashed.update(b'\0')
    return hashed.hexdigest()[:12]


def say(message):
    print(f'--> {message}', flush=True)


def run(command, shown=None, check=True, **kwargs):
    """Run COMMAND after printing it (or SHOWN, a shorter text for it); unless CHECK is false,
    StepFailed names the command and its exit code when it fails."""
    command = [str(part) for part in command]
    shown = shown or f'$ {shlex.join(command)}'
    print(shown, flush=True)
    done = subprocess.run(command, **kwargs)
    if check and done.returncode:
        raise StepFailed(f'{shown} exited with code {done.returncode}')
    return done


@contextmanager
def locked(path):
    """Hold an exclusive lock named after PATH: one builder at a time across processes (another CI
    run or a developer on this machine); the others wait, then find its work done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f'{path.name}.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_once(path, build):
    """PATH, made by build(PATH) unless a finished build is there. The stamp is written last, so a
    build that was interrupted is made again, never used half-done. Returns True if it built."""
    stamp = path / '.complete'
    if stamp.is_file():
        stamp.touch()  # marks it in use, for prune_stale
        return False
    with locked(path):
        if stamp.is_file():
            return False
        if path.exists():
            say(f'removing the unfinished build {path}')
            shutil.rmtree(path)
        build(path)
        stamp.write_text(time.strftime('%Y-%m-%d %H:%M:%S\n'))
    prune_stale(path)
    return True


def prune_stale(keep):
    """Remove the cached builds beside KEEP of the same kind (name up to its last `-`) that no run
    has used for STALE_AFTER: older pins, older recipes."""
    kind = keep.name.rsplit('-', 1)[0]
    for other in keep.parent.glob(f'{kind}-*'):
        stamp = other / '.complete'
        if other == keep or not stamp.is_file() or time.time() - stamp.stat().st_mtime < STALE_AFTER:
            continue
        with locked(other):
            say(f'removing {other}, unused for {STALE_AFTER // 86400} days')
            shutil.rmtree(other, ignore_errors=True)


def pyproject():
    with open(ROOT / 'pyproject.toml', 'rb') as f:
        return tomllib.load(f)


def base_floor():
    """The lowest datadog-checks-base the check declares it works with (`>=X` in pyproject.toml)."""
    for requirement in pyproject()['project']['dependencies']:
        name, _, version = requirement.partition('>=')
        if name.strip() == 'datadog-checks-base' and version and ',' not in version:
            return version.strip()
    raise StepFailed('pyproject.toml must require `datadog-checks-base>=X` (one floor, no other bound)')


BASE = 'datadog-checks-base'


def dev_tools():
    """requirements-dev.txt without its datadog-checks-base line: the test tools, and the pins of the
    newest base's `deps` extra, which the floor's own pins then replace."""
    lines = (ROOT / 'requirements-dev.txt').read_text().splitlines()
    return [line for line in lines if not line.strip().startswith(BASE)]


def floor_install_problems(pip_check_output):
    """What `pip check` says of a venv with the floor base installed last, but for datadog-checks-dev
    (a test tool) asking for a newer requests than bases before 37.35 pin (2.32.5)."""
    lines = pip_check_output.splitlines()
    return [line for line in lines if line and not line.startswith('datadog-checks-dev ')]


def deps_extra():
    """The `deps` extra of pyproject.toml: what the Agent's environment provides beside the base."""
    return pyproject()['project']['optional-dependencies']['deps']
