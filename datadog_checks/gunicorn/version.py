"""The version of the gunicorn that is actually running, read once per master.

A master with setproctitle has `_setproctitle*.so` mapped from the site-packages of the
environment it runs in; gunicorn's distribution metadata is read from the same
folder(s), through /proc/PID/root so that it also works across containers. Only when
that is not readable (the Agent runs as another user than gunicorn) is the configured
`gunicorn` command run, once per master.
"""

import importlib.metadata
import re

import psutil

from datadog_checks.base.utils.subprocess_output import get_subprocess_output

from . import procfs

PACKAGE_FOLDERS = re.compile(r'^(.*?/(?:site|dist)-packages)/')
VERSION_OUTPUT = re.compile(r'gunicorn \(version ([^)\s]+)\)')


class VersionNotFound(Exception):
    pass


def installed_version(pid, root='/proc'):
    """gunicorn's version from the package folders mapped into the master's memory."""
    folders = set()
    for path in procfs.read_mapped_paths(pid, root):
        match = PACKAGE_FOLDERS.match(path)
        if match:
            folders.add(f'{root}/{pid}/root{match.group(1)}')
    for folder in sorted(folders):
        for distribution in importlib.metadata.distributions(name='gunicorn', path=[folder]):
            return distribution.version
    raise VersionNotFound(f'no gunicorn package next to the libraries mapped by process {pid}')


def command_version(command, log):
    """gunicorn's version as `COMMAND --version` prints it: `gunicorn (version 27.0.1)`."""
    try:
        out, err, returncode = get_subprocess_output([command, '--version'], log, raise_on_empty_output=False)
    except Exception as e:  # the Agent's runner raises its own types for a missing executable
        raise VersionNotFound(f'`{command} --version` failed: {e}') from None
    match = VERSION_OUTPUT.search(f'{out}\n{err}')
    if returncode != 0 or not match:
        raise VersionNotFound(f'`{command} --version` exited {returncode}: {(out or err).strip()[:200]!r}')
    return match.group(1)


class Versions:
    """Each master's version, determined the first time the master is seen and kept while it runs."""

    def __init__(self, command, log, root='/proc'):
        self.command = command
        self.log = log
        self.root = root
        self.by_master = {}  # Proc.key -> version string, or None when it could not be found

    def newest(self, masters):
        """(version, problem) of the most recently started master, the one that outlives a USR2
        upgrade. Either may be None; a problem is returned only the first time a master is seen."""
        current = {master.key for master in masters}
        self.by_master = {key: version for key, version in self.by_master.items() if key in current}
        if not masters:
            return None, None
        master = max(masters, key=lambda m: m.stat.start_ticks)
        if master.key in self.by_master:
            return self.by_master[master.key], None
        version, problem = None, None
        try:
            version = installed_version(master.pid, self.root)
        except (psutil.Error, procfs.ProcfsError, VersionNotFound, OSError) as installed_error:
            try:
                version = command_version(self.command, self.log)
            except VersionNotFound as command_error:
                reason = 'permission denied' if isinstance(installed_error, psutil.AccessDenied) else installed_error
                problem = (
                    f'Cannot determine the version of gunicorn master {master.pid}: reading its libraries: '
                    f'{reason}; {command_error}. Set `gunicorn` to the gunicorn executable of that app.'
                )
        self.by_master[master.key] = version
        return version, problem
