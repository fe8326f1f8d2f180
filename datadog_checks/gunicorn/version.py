"""The version of the gunicorn that is actually running, read once per master.

A master with setproctitle has `_setproctitle*.so` mapped from the site-packages of the
environment it runs in; gunicorn's distribution metadata is read from the same
folder(s), through /proc/PID/root so that it also works across containers. Only when
that is not readable (the Agent runs as another user than gunicorn) is the `gunicorn`
command run, once per master. With no master running, a command the configuration names
gives the version, as the bundled check did; it runs once until a master appears.

What is on disk is what the master runs only if it was there when the master started:
`pip install -U` under a running master writes a new dist-info folder while the master
keeps the modules it imported. So the version is sent only when gunicorn's metadata (or
the configured command, which pip rewrites with every install) last changed before the
master started; otherwise no version is sent, and the problem says what a restart would run.
"""

import importlib.metadata
import os
import re
import shlex
import shutil
import time
from datetime import UTC, datetime
from typing import NamedTuple

import psutil

from datadog_checks.base.utils.subprocess_output import get_subprocess_output

from . import procfs

PACKAGE_FOLDERS = re.compile(r'^(.*?/(?:site|dist)-packages)/')
METADATA_FOLDER = re.compile(r'^gunicorn-[^-]+\.(?:dist|egg)-info$', re.IGNORECASE)
# The folder's own change time covers files added to it; METADATA (PKG-INFO for an egg) holds
# the version read, and pip writes RECORD last.
METADATA_FILES = ('METADATA', 'PKG-INFO', 'RECORD')
VERSION_OUTPUT = re.compile(r'gunicorn \(version ([^)\s]+)\)')
# What the bundled check ran when the configuration names no command.
DEFAULT_COMMAND = 'gunicorn'

# An install that finished before the master started can look up to this much later than the
# start: start ticks are truncated to a tick, and the boot time comes from two clock reads
# one after the other. (File change times come from a coarse clock that lags: never later.)
START_SLACK = 2 / procfs.CLOCK_TICKS

INSTALLED_AFTER_START = (
    'gunicorn {version} was installed in {folder} at {changed}, after gunicorn master {pid} started (at '
    '{started}): the master still runs the gunicorn it loaded then, whose version cannot be read, so no '
    'version is sent. A restart of the master would run gunicorn {version}.'
)
COMMAND_CHANGED_AFTER_START = (
    '`{command}` (gunicorn {version}) changed at {changed}, after gunicorn master {pid} started (at '
    '{started}): the master still runs the gunicorn it loaded then, whose version cannot be read, so no '
    'version is sent. A restart of the master would run gunicorn {version}, if `{command}` is the '
    'gunicorn of that app.'
)
UNKNOWN = (
    'Cannot determine the version of gunicorn master {pid}: reading its libraries: {reason}; '
    '{command_error}. Set `gunicorn` to the gunicorn executable of that app.'
)
UNKNOWN_WITHOUT_MASTER = (
    'Cannot determine the version of gunicorn while no master runs: {command_error}. Set `gunicorn` to '
    'the gunicorn executable of that app.'
)


class VersionNotFound(Exception):
    pass


class Installation(NamedTuple):
    version: str
    folder: str  # the package folder holding it, as the master sees it
    changed_at: float  # wall-clock time of the last change to gunicorn's metadata there


def installation(pid, root='/proc'):
    """gunicorn's installation in the first of the package folders mapped into the master's
    memory that holds one. setproctitle's is among the libraries a master loads last, which
    come early in its maps: the rest of the file is seldom read."""
    for folder in package_folders(pid, root):
        seen_from_here = f'{root}/{pid}/root{folder}'
        metadata = metadata_folder(seen_from_here)
        if metadata is None:
            continue
        found = importlib.metadata.Distribution.at(metadata).version
        if found:
            return Installation(found, folder, changed_at(metadata))
    raise VersionNotFound(f'no gunicorn package next to the libraries mapped by process {pid}')


def package_folders(pid, root='/proc'):
    """The site-packages folders of the files mapped by PID, as PID sees them, each once, in
    the order of the mappings (the libraries loaded last come first), read as the caller goes."""
    folders = set()
    for path in procfs.mapped_paths(pid, root):
        match = PACKAGE_FOLDERS.match(path)
        if match and match.group(1) not in folders:
            folders.add(match.group(1))
            yield match.group(1)


def metadata_folder(folder):
    """Path of gunicorn's dist-info (or egg-info) folder in a package folder, or None."""
    try:
        names = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    for name in names:
        if METADATA_FOLDER.match(name):
            return os.path.join(folder, name)
    return None


def changed_at(metadata):
    """When a metadata folder, or the files in it that say which release it is, last changed.
    The change time (ctime), which no installer sets back, unlike the modification time."""
    times = [os.stat(metadata).st_ctime]
    for name in METADATA_FILES:
        try:
            times.append(os.stat(os.path.join(metadata, name)).st_ctime)
        except (FileNotFoundError, NotADirectoryError):  # Debian ships some egg-info as one file
            continue
    return max(times)


def started_at(stat):
    """Wall-clock time at which a process started, to a clock tick. Its start ticks count on
    CLOCK_BOOTTIME; the boot time is read on that clock too rather than from /proc/stat's btime,
    which is truncated to the second: an install and a restart within one second stay ordered."""
    boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return boot + stat.start_ticks / procfs.CLOCK_TICKS


def command_words(text):
    """The words of a `gunicorn` option, split as a POSIX shell splits them, so that
    `docker exec web gunicorn` and `"/srv/my app/bin/gunicorn"` mean what they say in a
    shell. They are run without one: nothing in them is expanded or interpreted."""
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise ValueError(f'{text!r} cannot be split into words as a shell would: {e}') from None
    if not words:
        raise ValueError('names no command; give the gunicorn executable, as in /srv/app/venv/bin/gunicorn')
    return words


def command_version(words, log):
    """gunicorn's version as `COMMAND --version` prints it: `gunicorn (version 27.0.1)`."""
    command = shlex.join([*words, '--version'])
    try:
        out, err, returncode = get_subprocess_output([*words, '--version'], log, raise_on_empty_output=False)
    except Exception as e:  # the Agent's runner raises its own types for a missing executable
        raise VersionNotFound(f'`{command}` failed: {e}') from None
    match = VERSION_OUTPUT.search(f'{out}\n{err}')
    if returncode != 0 or not match:
        raise VersionNotFound(f'`{command}` exited {returncode}: {(out or err).strip()[:200]!r}')
    return match.group(1)


def command_changed_at(words):
    """When the configured executable last changed, as pip writes gunicorn's script anew at every
    install; None for a command of several words, whose gunicorn (`docker exec web gunicorn`,
    `python -m gunicorn`) is no file the Agent can look at."""
    if len(words) > 1:
        return None
    path = shutil.which(words[0])
    if path is None:
        raise VersionNotFound(f'`{words[0]}` is not an executable on the PATH')
    return os.stat(path).st_ctime


def utc(timestamp):
    return datetime.fromtimestamp(timestamp, UTC).isoformat(sep=' ', timespec='milliseconds')


class Versions:
    """Each master's version, determined the first time the master is seen and kept while it runs."""

    def __init__(self, configured_command, log, root='/proc'):
        """`configured_command`: the `gunicorn` option's text, None when the configuration has none."""
        self.command = command_words(configured_command or DEFAULT_COMMAND)
        # Only a command someone configured is trusted to be the app's gunicorn when no master
        # runs to tell; the default one is whatever `gunicorn` the Agent's PATH holds.
        self.ask_without_master = configured_command is not None
        self.log = log
        self.root = root

        # State kept between runs. Outcomes are (version, problem), either may be None, kept
        # whole so that a lasting problem is returned at every run without reading the disk or
        # running the command again.
        self.by_master = {}  # Proc.key -> outcome
        self.without_master = None  # outcome of the command while no master runs; None: not asked

    def newest(self, masters):
        """(version, problem) of the most recently started master, the one that outlives a USR2
        upgrade, or of the configured command while no master runs. Either may be None; a
        problem is returned at every call while it holds."""
        current = {master.key for master in masters}
        self.by_master = {key: outcome for key, outcome in self.by_master.items() if key in current}
        if not masters:
            return self.version_without_master()
        self.without_master = None  # the next absence may follow an upgrade: ask again then
        master = max(masters, key=lambda m: m.stat.start_ticks)
        if master.key not in self.by_master:
            self.by_master[master.key] = self.determine(master)
        return self.by_master[master.key]

    def determine(self, master):
        started = started_at(master.stat)
        try:
            found = installation(master.pid, self.root)
        except (psutil.Error, procfs.ProcfsError, VersionNotFound, OSError) as installed_error:
            return self.from_command(master, started, installed_error)
        if found.changed_at > started + START_SLACK:
            return None, INSTALLED_AFTER_START.format(
                version=found.version,
                folder=found.folder,
                changed=utc(found.changed_at),
                pid=master.pid,
                started=utc(started),
            )
        return found.version, None

    def version_without_master(self):
        if not self.ask_without_master:
            return None, None
        if self.without_master is None:
            try:
                self.without_master = command_version(self.command, self.log), None
            except VersionNotFound as command_error:
                self.without_master = None, UNKNOWN_WITHOUT_MASTER.format(command_error=command_error)
        return self.without_master

    def from_command(self, master, started, installed_error):
        try:
            version = command_version(self.command, self.log)
            changed = command_changed_at(self.command)
        except (VersionNotFound, OSError) as command_error:
            reason = 'permission denied' if isinstance(installed_error, psutil.AccessDenied) else installed_error
            return None, UNKNOWN.format(pid=master.pid, reason=reason, command_error=command_error)
        if changed is not None and changed > started + START_SLACK:
            return None, COMMAND_CHANGED_AFTER_START.format(
                command=shlex.join(self.command),
                version=version,
                changed=utc(changed),
                pid=master.pid,
                started=utc(started),
            )
        return version, None
