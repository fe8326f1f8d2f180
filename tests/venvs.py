"""Throwaway Python environments holding another gunicorn release than the tests' own.

Made without pip of their own (`venv --without-pip`) and filled by the tests' pip through
`pip --python`: creating one then takes a fraction of a second, and pip's wheel cache makes
each install a copy.
"""

import subprocess
import sys
from pathlib import Path


def make_venv(path, *requirements):
    """A new environment at `path` with `requirements` installed; returns its python."""
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(path)], check=True)
    python = Path(path) / 'bin' / 'python'
    pip_install(python, *requirements)
    return python


def pip_install(python, *arguments):
    """`pip install ARGUMENTS` into the environment of `python`, failing with pip's own words."""
    command = [sys.executable, '-m', 'pip', '--python', str(python), 'install', '--quiet', *arguments]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f'{" ".join(command)} exited {result.returncode}: {result.stderr[-2000:]}')


def build_wheel(project, out):
    """The wheel of `project` (a folder with a pyproject.toml), built into `out` with the dev
    environment's hatchling: no build isolation, no network."""
    subprocess.run(
        [sys.executable, '-m', 'hatchling', 'build', '-t', 'wheel', '-d', str(out)],
        cwd=project,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = Path(out).glob('*.whl')
    return wheel
