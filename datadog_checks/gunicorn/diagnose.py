"""Explicit diagnoses for `datadog-agent diagnose`: is the master there, and if not, why;
may the Agent read the workers' fds. They scan the process table on their own, since
the Agent may ask before any check run."""

import os

import psutil

from . import procfs
from .discovery import MASTER_TITLE, Discovery

MASTER = 'gunicorn master'
WORKER_FDS = 'gunicorn worker fds'
TITLE_PREFIX = 'gunicorn: '


def gunicorn_processes():
    """({pid: command line} of processes running gunicorn under their raw command line,
    {titles of gunicorn masters}), from one scan of the process table."""
    untitled, master_titles = {}, set()
    for proc in psutil.process_iter(['cmdline']):
        cmdline = [part for part in proc.info['cmdline'] or () if part]
        if not cmdline:
            continue
        if cmdline[0].startswith(TITLE_PREFIX):
            if cmdline[0].startswith('gunicorn: master ['):
                master_titles.add(' '.join(cmdline))
        elif any(os.path.basename(part) == 'gunicorn' for part in cmdline[:2]) or cmdline[1:3] == ['-m', 'gunicorn']:
            untitled[proc.pid] = ' '.join(cmdline)
    return untitled, master_titles


def diagnose_master(check):
    proc_name = check.config.proc_name
    title = MASTER_TITLE.format(proc_name)
    finder = Discovery(proc_name, rescan_interval=1, root=check.root)
    snapshot = finder.run(now=0)
    if snapshot.masters:
        pids = ', '.join(str(master.pid) for master in snapshot.masters)
        check.diagnosis.success(
            MASTER, f'Found `{title}` (pid {pids}) with {len(snapshot.workers)} workers.', category=proc_name
        )
        return snapshot

    untitled, master_titles = gunicorn_processes()
    if untitled:
        masters = [pid for pid in untitled if _parent(pid) not in untitled]
        listing = '; '.join(f'{pid}: {untitled[pid]}' for pid in sorted(untitled))
        example = masters[0] if masters else min(untitled)
        check.diagnosis.fail(
            MASTER,
            f'No process is titled `{title}`, but gunicorn runs with its raw command line as its title '
            f'(master pid {", ".join(map(str, masters))}; all: {listing}): setproctitle is missing in the '
            "app's environment, so gunicorn cannot set process titles.",
            category=proc_name,
            remediation=(
                'Install setproctitle with the pip of the Python that runs gunicorn (for pid '
                f'{example}: `{_pip_hint(untitled[example])}`), then restart '
                'gunicorn: a HUP is not enough, the master must start again.'
            ),
        )
        return snapshot

    others = sorted(master_titles)
    if others:
        check.diagnosis.fail(
            MASTER,
            f'No process is titled `{title}`; gunicorn masters running here: {", ".join(others)}.',
            category=proc_name,
            remediation='Set `proc_name` to the name in brackets of the app to monitor.',
        )
    else:
        check.diagnosis.fail(
            MASTER,
            f'No process is titled `{title}`, and no gunicorn process is visible to the Agent.',
            category=proc_name,
            remediation='Start gunicorn, or run the Agent in the PID namespace of gunicorn (its host, or its pod).',
        )
    return snapshot


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


def _parent(pid):
    try:
        return procfs.read_stat(pid).ppid
    except (psutil.Error, procfs.ProcfsError):
        return None


def _pip_hint(command_line):
    interpreter = command_line.split()[0]
    if os.path.basename(interpreter) == 'gunicorn':
        interpreter = os.path.join(os.path.dirname(interpreter), 'python')
    return f'{interpreter} -m pip install setproctitle'
