"""Explicit diagnoses for `datadog-agent diagnose`: is the master there, and if not, why;
may the Agent read the workers' fds. They scan the process table on their own, since
the Agent may ask before any check run."""

import difflib
import os
import re
from typing import NamedTuple

import psutil

from . import pidfd, procfs, sockdiag
from .discovery import MASTER_TITLE, MASTER_TITLE_PREFIX, UPGRADE_SUFFIX, Discovery

MASTER = 'gunicorn master'
WORKER_FDS = 'gunicorn worker fds'
VISIBILITY = 'gunicorn process visibility'
NETWORK_NAMESPACES = 'gunicorn container network namespaces'
KTHREADD = 2
TITLE_PREFIX = 'gunicorn: '
# A host may run many apps: a diagnosis names this many of each kind, the likeliest first.
LISTED = 10

NAME_OPTIONS = ('--name', '-n')
PASTE_OPTIONS = ('--paste', '--paster')
# gunicorn's APP_MODULE, `module.path` or `module.path:variable`, with `(args)` for a factory.
# A bind address (`0.0.0.0:80`, `unix:/run/x.sock`) never fits it, though it also holds a colon.
APP_URI = re.compile(r'[A-Za-z_][\w.]*(?::[A-Za-z_][\w.]*(?:\(.*\))?)?')


class UntitledApp(NamedTuple):
    """gunicorn processes without a title: a master and its direct children."""

    master: int
    workers: list  # pids
    name: str | None  # as far as the command line tells
    command_line: str


def gunicorn_processes():
    """({master pid: NAME} of titled masters, [UntitledApp]) from one scan of the process table."""
    titled, untitled = {}, {}
    for proc in psutil.process_iter(['cmdline', 'ppid']):
        cmdline = [part for part in proc.info['cmdline'] or () if part]
        if not cmdline:
            continue
        title = ' '.join(cmdline)
        if title.startswith(MASTER_TITLE_PREFIX) and title.endswith(']'):
            titled[proc.pid] = title[len(MASTER_TITLE_PREFIX) : -1]
        elif not title.startswith(TITLE_PREFIX) and gunicorn_arguments(cmdline) is not None:
            untitled[proc.pid] = (proc.info['ppid'], cmdline)
    return titled, untitled_apps(untitled)


def untitled_apps(untitled):
    """Group {pid: (ppid, cmdline)}: master and workers look alike, only parenthood tells them apart."""
    apps = []
    for pid, (ppid, cmdline) in sorted(untitled.items()):
        if ppid in untitled:
            continue
        workers = sorted(child for child, (parent, _) in untitled.items() if parent == pid)
        apps.append(UntitledApp(pid, workers, raw_app_name(cmdline), ' '.join(cmdline)))
    return apps


def gunicorn_arguments(cmdline):
    """The arguments gunicorn itself got, or None when the command line does not run gunicorn."""
    if cmdline[1:3] == ['-m', 'gunicorn']:
        return cmdline[3:]
    for index, part in enumerate(cmdline[:2]):
        if os.path.basename(part) == 'gunicorn':
            return cmdline[index + 1 :]
    return None


def raw_app_name(cmdline):
    """The NAME gunicorn would title the app with, as far as a raw command line tells: `--name`,
    else the `--paste` file, else the app URI. None when it cannot be told (a config file)."""
    arguments = gunicorn_arguments(cmdline) or []
    return option_value(arguments, NAME_OPTIONS) or option_value(arguments, PASTE_OPTIONS) or app_uri(arguments)


def option_value(arguments, names):
    """The value of the last of `names` (`--opt VALUE` or `--opt=VALUE`): the one argparse keeps."""
    value = None
    for index, argument in enumerate(arguments):
        option, equals, inline = argument.partition('=')
        if option in names:
            value = inline if equals else (arguments[index + 1] if index + 1 < len(arguments) else None)
    return value


def app_uri(arguments):
    """The positional APP_MODULE: the last argument, when it cannot be the value of an option.
    Which options take no value (`--preload`) is not on the command line, so after any option
    only a `module:variable` is taken for the app."""
    if not arguments or not APP_URI.fullmatch(arguments[-1]):
        return None
    last = arguments[-1]
    previous = arguments[-2] if len(arguments) > 1 else ''
    if ':' in last or not previous.startswith('-') or '=' in previous:
        return last
    return None


def diagnose_master(check):
    proc_name = check.config.proc_name
    finder = Discovery(proc_name, rescan_interval=1, root=check.root, pod_uid=check.config.pod_uid)
    snapshot = finder.run(now=0)
    if proc_name is None:
        return diagnose_every_master(check, snapshot)
    title = MASTER_TITLE.format(proc_name)
    if snapshot.masters:
        pids = ', '.join(str(master.pid) for master in snapshot.masters)
        check.diagnosis.success(
            MASTER, f'Found `{title}` (pid {pids}) with {len(snapshot.workers)} workers.', category=proc_name
        )
        return snapshot
    diagnosis, remediation = missing_master(proc_name)
    check.diagnosis.fail(MASTER, diagnosis, category=proc_name, remediation=remediation)
    return snapshot


def diagnose_every_master(check, snapshot):
    """Without proc_name: which apps are in scope."""
    scope = f' in pod {check.config.pod_uid}' if check.config.pod_uid else ''
    apps = sorted({tree.app for tree in snapshot.trees})
    if apps:
        listing = ', '.join(f'`{app}`' for app in apps[:LISTED]) + more(apps)
        check.diagnosis.success(MASTER, f'Found the gunicorn masters of {listing}{scope}.')
    else:
        check.diagnosis.fail(
            MASTER,
            f'No process titled `gunicorn: master [NAME]` is visible to the Agent{scope}.',
            remediation=(
                "Start gunicorn with the setproctitle package in its environment, and run the Agent in the "
                'PID namespace of gunicorn (its host, or its pod), or with the host\'s /proc at `procfs_path`.'
            ),
        )
    return snapshot


def diagnose_visibility(check):
    """An Agent in a PID namespace of its own (a container without `hostPID`) that reads its own
    /proc sees its container's processes only: another container's gunicorn is invisible. Only
    the host's PID namespace shows the kernel's threads, kthreadd first, as pid 2 with no parent."""
    try:
        host = procfs.read_stat(KTHREADD, check.root).ppid == 0
    except psutil.NoSuchProcess:
        host = False
    except (psutil.Error, procfs.ProcfsError) as e:
        check.diagnosis.warning(VISIBILITY, f'Cannot tell which processes the Agent sees: {procfs.describe(e)}')
        return
    if host:
        check.diagnosis.success(VISIBILITY, f"The Agent sees the host's processes in {check.root}.")
        return
    check.diagnosis.fail(
        VISIBILITY,
        f"{check.root} is not the host's: the Agent runs in a PID namespace of its own and sees the processes of "
        'its own container only, not the gunicorn of other containers or of the host.',
        remediation=(
            "Run the Agent with the host's PID namespace (`hostPID: true` in Kubernetes, `--pid host` in "
            "Docker), or mount the host's /proc into it and set `procfs_path` in datadog.yaml."
        ),
    )


def diagnose_network_namespaces(check, snapshot):
    """May the Agent read tcp_info for the connections of each containerized master: from the
    workers' sockets themselves, or else through sock_diag in the master's network namespace?
    Without either, kept-alive connections there count as work."""
    own = procfs.network_namespace('self')
    refused = []
    for tree in snapshot.trees:
        pid = tree.masters[0].pid
        try:
            if procfs.network_namespace(pid, check.root) == own or asks_sockets(tree, check.root):
                continue
            sockdiag.open_socket(f'{check.root}/{pid}/ns/net').close()
        except psutil.NoSuchProcess:
            continue
        except (psutil.AccessDenied, procfs.ProcfsError, sockdiag.SockDiagUnavailable) as e:
            refused.append(f'{pid} ({procfs.describe(e)})')
    if refused:
        check.diagnosis.fail(
            NETWORK_NAMESPACES,
            'The Agent may neither ask the sockets of the workers of gunicorn master '
            f'{", ".join(refused[:LISTED])}{more(refused)} (pidfd_getfd) nor open a sock_diag socket in their '
            'network namespace: connections there are read from /proc/PID/net/tcp, which cannot tell a '
            'kept-alive connection from a request in flight, so every connection a worker holds counts as work.',
            remediation='Run the Agent as root in the host\'s namespaces (the DaemonSet\'s default), or give it '
            'CAP_SYS_PTRACE, or accept that behind keep-alive clients those workers read as working.',
        )


def asks_sockets(tree, root):
    """Whether a socket of the tree's first worker answers through pidfd.py, as the check asks
    them: that tells a request in flight whatever network namespace it is in."""
    if not tree.workers or not procfs.shows_own_pid_namespace(root):
        return False
    worker = tree.workers[0]
    try:
        fds = procfs.socket_fds(procfs.read_fd_links(worker.pid, root))
    except (psutil.Error, procfs.ProcfsError):
        return False
    pidfds = pidfd.Pidfds(root)
    try:
        pidfds.sockets_of(worker.key, dict(list(fds.items())[:1]))
    except (psutil.Error, procfs.ProcfsError):
        return False
    finally:
        pidfds.close()
    return bool(fds)


def missing_master(proc_name):
    """(diagnosis, remediation) when no master is titled after `proc_name`: the app running
    untitled under that very name, else the masters that do run (a likely typo first), and
    only then setproctitle, as a possible reason, for the gunicorn processes without a title."""
    titled, apps = gunicorn_processes()
    named = [app for app in apps if app.name in (proc_name, proc_name + UPGRADE_SUFFIX)]
    if named:
        return untitled_under_that_name(proc_name, named[0])
    title = MASTER_TITLE.format(proc_name)
    if not titled and not apps:
        return (
            f'No process is titled `{title}`, and no gunicorn process is visible to the Agent.',
            'Start gunicorn, or run the Agent in the PID namespace of gunicorn (its host, or its pod).',
        )
    diagnosis, remediation = [f'No process is titled `{title}`.'], []
    if titled:
        names = by_likeliness(proc_name, set(titled.values()))
        likely = likely_meant(proc_name, names)
        diagnosis.append(f'gunicorn masters running here: {titled_listing(names, titled, likely)}.')
        remediation.append(proc_name_remediation(likely))
    if apps:
        apps = sorted(apps, key=lambda app: -similarity(proc_name, app.name or ''))
        diagnosis.append(
            'Without setproctitle in their environment, these gunicorn apps keep their raw command line '
            f'as their title, so they cannot be found by name: {untitled_listing(apps)}. If the app to '
            'monitor is one of them, that is why.'
        )
        remediation.append(f'If it is one of the apps without a title, install {setproctitle_fix(apps[0])}')
    return ' '.join(diagnosis), ' '.join(remediation)


def untitled_under_that_name(proc_name, app):
    return (
        f'No process is titled `{MASTER_TITLE.format(proc_name)}`, but app `{app.name}` runs with its raw '
        f'command line as its title ({describe(app)}): setproctitle is missing in its environment, so '
        'gunicorn cannot set process titles.',
        f'Install {setproctitle_fix(app)}',
    )


def similarity(proc_name, name):
    return difflib.SequenceMatcher(None, proc_name, name).ratio()


def by_likeliness(proc_name, names):
    """Names close to `proc_name` first, closest first (a typo); then the others, sorted."""
    close = difflib.get_close_matches(proc_name, names, n=len(names))
    return close + sorted(set(names) - set(close))


def likely_meant(proc_name, names):
    close = difflib.get_close_matches(proc_name, names, n=1)
    return close[0] if close else None


def titled_listing(names, titled, likely):
    entries = []
    for name in names[:LISTED]:
        pids = ', '.join(str(pid) for pid in sorted(pid for pid, title in titled.items() if title == name))
        entry = f'`{MASTER_TITLE.format(name)}` (pid {pids})'
        entries.append(f'{entry}, likely the one meant' if name == likely else entry)
    return '; '.join(entries) + more(names)


def proc_name_remediation(likely):
    if likely:
        return f'Set `proc_name: {likely}` if that is the app to monitor, or to the name in brackets of another.'
    return 'Set `proc_name` to the name in brackets of the app to monitor.'


def untitled_listing(apps):
    return '; '.join(f'{label(app)} ({describe(app)})' for app in apps[:LISTED]) + more(apps)


def label(app):
    return f'app `{app.name}`' if app.name else 'an app its command line does not name'


def describe(app):
    workers = f', workers {", ".join(map(str, app.workers))}' if app.workers else ', no workers'
    return f'master pid {app.master}{workers}, command line `{app.command_line}`'


def more(items):
    return f'; and {len(items) - LISTED} more' if len(items) > LISTED else ''


def setproctitle_fix(app):
    """How to get setproctitle into an app's environment, after the word `install`."""
    return (
        'setproctitle with the pip of the Python that runs it (for pid '
        f'{app.master}: `{_pip_hint(app.command_line)}`), then restart gunicorn: a HUP is not enough, '
        'the master must start again.'
    )


def diagnose_worker_fds(check, snapshot):
    proc_name = check.config.proc_name
    if not snapshot.workers:
        return
    worker = snapshot.workers[0]
    try:
        procfs.read_fd_links(worker.pid, check.root)
    except psutil.AccessDenied:
        check.diagnosis.fail(
            WORKER_FDS,
            f'The Agent (uid {os.geteuid()}) may not read /proc/{worker.pid}/fd of gunicorn worker {worker.pid}: '
            'busy workers are counted by CPU time, which misses workers waiting on I/O, and the '
            'listen addresses must come from the `listeners` option.',
            category=proc_name,
            remediation=(
                "Run the Agent as root or as gunicorn's user, or grant it CAP_SYS_PTRACE, for exact busy "
                'counts; otherwise set `listeners` to the addresses gunicorn binds.'
            ),
        )
    except psutil.NoSuchProcess:
        return
    else:
        check.diagnosis.success(
            WORKER_FDS,
            f'The Agent can read the fds of gunicorn worker {worker.pid}: busy workers are counted by the '
            'client connections they hold.',
            category=proc_name,
        )


def _pip_hint(command_line):
    interpreter = command_line.split()[0]
    if os.path.basename(interpreter) == 'gunicorn':
        interpreter = os.path.join(os.path.dirname(interpreter), 'python')
    return f'{interpreter} -m pip install setproctitle'
