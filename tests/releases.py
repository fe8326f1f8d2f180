"""Other gunicorn releases for the tests: one cached virtualenv per release, built on first use.

    python -m tests.releases    # build every release's venv now (as a CI step before the tests)

The venvs live outside the repository, in `${XDG_CACHE_HOME:-~/.cache}/datadog-gunicorn-tests/venvs`,
so that fresh clones and `git clean` on the same machine do not pay for them again. A venv's
name holds the gunicorn release, the interpreter and a hash of its exact requirement list: a
change of pins, or a run on another Python, builds a new one instead of reusing a stale one.
"""

import fcntl
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# Installed without dependencies, so this is the whole environment and the hash covers all of
# it; `pip check` at build time says if a pin now needs something missing here. Every wheel
# exists for CPython 3.11 and 3.13 on manylinux x86_64, and works with each gunicorn below.
COMMON = (
    'setproctitle==1.3.8',
    'gevent==26.9.0',
    'greenlet==3.5.6',
    'zope.event==6.2',
    'zope.interface==8.7',
    # uvicorn.workers is deprecated in favour of the uvicorn-worker package, which needs
    # gunicorn >= 21; uvicorn's own module still works with all three releases.
    'uvicorn==0.54.0',
    'click==8.5.1',
    'h11==0.16.0',
    # The gevent worker imports it: a dependency of gunicorn 23, of only the gevent extra in 27.
    'packaging==26.4',
)


@dataclass(frozen=True)
class WorkerClass:
    option: str  # what --worker-class gets
    app: str  # the test app it can serve, under tests/app
    stop_signal: int = signal.SIGQUIT  # for GunicornServer.stop


WORKER_CLASSES = {
    'sync': WorkerClass('sync', 'sample:application'),
    'gthread': WorkerClass('gthread', 'sample:application'),
    'gevent': WorkerClass('gevent', 'sample:application'),
    # Its SIGQUIT handler only clears gunicorn's `alive` flag, which uvicorn never reads: the
    # worker would stay until the teardown's SIGKILL, 10 s later. SIGTERM makes uvicorn stop.
    'uvicorn': WorkerClass('uvicorn.workers.UvicornWorker', 'asgi_sample:application', signal.SIGTERM),
    'asgi': WorkerClass('asgi', 'asgi_sample:application'),  # gunicorn's own, since 24.0
}


@dataclass(frozen=True)
class Release:
    version: str
    requirements: tuple
    worker_classes: tuple

    def __str__(self):
        return self.version


_BEFORE_24 = ('sync', 'gthread', 'gevent', 'uvicorn')

RELEASES = {
    # 20.x imports pkg_resources at start: a setuptools that still ships it, deprecated.
    '20.1.0': Release('20.1.0', ('gunicorn==20.1.0', 'setuptools==80.9.0', *COMMON), _BEFORE_24),
    '23.0.0': Release('23.0.0', ('gunicorn==23.0.0', *COMMON), _BEFORE_24),
    '27.0.1': Release('27.0.1', ('gunicorn==27.0.1', *COMMON), (*_BEFORE_24, 'asgi')),
}

# Imported in the finished venv before it is put in place: a venv that cannot run every
# worker class it is listed for is never cached.
SMOKE_TEST = """
import sys
import gevent, gunicorn, packaging, setproctitle, uvicorn.workers
import gunicorn.workers.ggevent, gunicorn.workers.gthread
assert gunicorn.__version__ == sys.argv[1], gunicorn.__version__
if 'asgi' in sys.argv[2:]:
    import gunicorn.workers.gasgi
"""


def cache_root():
    base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(base) / 'datadog-gunicorn-tests' / 'venvs'


def venv_name(release):
    digest = hashlib.sha256('\n'.join(release.requirements).encode()).hexdigest()[:12]
    return f'gunicorn-{release.version}-{sys.implementation.cache_tag}-{digest}'


def gunicorn_python(release):
    """The python of RELEASE's venv (a Release or its version string), built if not cached yet."""
    release = RELEASES[str(release)]
    root = cache_root()
    venv = root / venv_name(release)
    python = venv / 'bin' / 'python'
    if python.exists():
        return python
    root.mkdir(parents=True, exist_ok=True)
    # One builder per venv at a time, across processes: the others wait and then reuse its work.
    with open(root / f'{venv.name}.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists():
            return python
        _discard(venv)  # left with a dangling python when its base interpreter was removed
        for leftover in root.glob(f'.{venv.name}.building-*'):
            _discard(leftover)  # a build that was killed: nobody else builds it while we hold the lock
        # One write: builders in threads side by side must not interleave their lines.
        sys.stderr.write(f'Building the gunicorn {release} venv for the tests in {venv} ...\n')
        sys.stderr.flush()
        building = Path(tempfile.mkdtemp(dir=root, prefix=f'.{venv.name}.building-'))
        building.chmod(0o755)  # mkdtemp's 0700 would keep gunicorn run as another user out
        try:
            _build(release, building)
            # Only a complete venv ever has the final name, so a crash leaves nothing to reuse.
            building.rename(venv)
        except BaseException:
            _discard(building)
            raise
    return python


def _build(release, target):
    _run([sys.executable, '-m', 'venv', *_venv_pip_option(), str(target)])
    python = str(target / 'bin' / 'python')
    # pip runs from the tests' own environment and installs into the target: quicker than
    # bootstrapping pip into every venv.
    pip = [*_pip(python), '--disable-pip-version-check']
    # Wheels only: a source build of gevent would take minutes and need a compiler.
    _run([*pip, 'install', '--quiet', '--no-deps', '--only-binary=:all:', *release.requirements])
    _run([*pip, 'check'])
    _run([python, '-c', SMOKE_TEST, release.version, *release.worker_classes])


def _venv_pip_option():
    return ['--without-pip'] if _has_pip() else []


def _pip(python):
    if _has_pip():
        return [sys.executable, '-m', 'pip', '--python', python]
    return [python, '-m', 'pip']


def _has_pip():
    return importlib.util.find_spec('pip') is not None


def _run(command):
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        output = (done.stdout + done.stderr).strip()
        raise RuntimeError(f'{" ".join(command)} failed with exit code {done.returncode}:\n{output}')


def _discard(path):
    """Out of the way at once (a rename), then deleted: no half-deleted venv stays under a name
    that looks usable."""
    if not os.path.lexists(path):
        return
    trash = Path(tempfile.mkdtemp(dir=path.parent, prefix='.trash-'))
    path.rename(trash / 'venv')
    shutil.rmtree(trash, ignore_errors=True)


def build_all(releases=None):
    """Every release's venv, built side by side: pip waits on the network and the disk part of
    the time, so this is somewhat quicker than one after the other, even on two cores."""
    releases = list(RELEASES.values()) if releases is None else [RELEASES[str(r)] for r in releases]
    with ThreadPoolExecutor(max_workers=len(releases) or 1) as pool:
        return dict(zip(map(str, releases), pool.map(gunicorn_python, releases), strict=True))


if __name__ == '__main__':
    for version, python in build_all().items():
        print(f'gunicorn {version}: {python}')
