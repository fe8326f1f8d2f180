"""What a run costs, and how it survives processes that change under it."""

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from datadog_checks.base import AgentCheck
from datadog_checks.gunicorn import discovery, procfs
from datadog_checks.gunicorn.discovery import Discovery

from .server import APP_DIR, title, wait_until
from .test_check import run, worker_counts


@pytest.fixture
def count_scans(monkeypatch):
    calls = []
    real = psutil.process_iter

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(discovery.psutil, 'process_iter', counting)
    return calls


def group_of(pid):
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


class TitlePlayer:
    """tests/app/titles.py in a process group of its own: `expect` waits for the step it
    announces, `advance` lets it take the next one, `stop` kills the group by its id."""

    def __init__(self, *args):
        self.popen = subprocess.Popen(
            [sys.executable, str(APP_DIR / 'titles.py'), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self.lines = queue.Queue()
        # A thread, so that `expect` can give up on a script that hangs instead of blocking on read.
        threading.Thread(target=self._read_lines, daemon=True).start()

    def _read_lines(self):
        for line in self.popen.stdout:
            self.lines.put(line.decode().split())

    def expect(self, step, timeout=20):
        """The pids announced with `step`."""
        try:
            words = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f'titles.py never announced {step!r}') from None
        assert words[0] == step, words
        return [int(word) for word in words[1:]]

    def advance(self):
        self.popen.stdin.write(b'\n')
        self.popen.stdin.flush()

    def stop(self):
        # By group, not by descent: a scenario may end its first process and orphan the rest.
        procs = [proc for proc in psutil.process_iter() if group_of(proc.pid) == self.popen.pid]
        if procs:
            os.killpg(self.popen.pid, signal.SIGKILL)
        psutil.wait_procs(procs, timeout=10)
        self.popen.wait(timeout=5)
        self.popen.stdin.close()
        self.popen.stdout.close()


@pytest.fixture
def play_titles():
    players = []

    def start(*args):
        players.append(TitlePlayer(*args))
        return players[-1]

    yield start
    for player in players:
        player.stop()


def test_steady_state_runs_do_not_scan_the_process_table(
    gunicorn_server, make_check, dd_run_check, aggregator, count_scans
):
    gunicorn_server(name='steady', workers=2)
    check = make_check('steady')

    for _ in range(5):
        run(check, aggregator, dd_run_check)

    assert len(count_scans) == 1
    assert worker_counts(aggregator, 'steady') == {'working': 0, 'idle': 2}


def test_a_restarted_master_is_found_by_a_new_scan(gunicorn_server, make_check, dd_run_check, aggregator, count_scans):
    first = gunicorn_server(name='restarted', workers=1)
    check = make_check('restarted')
    dd_run_check(check)
    first.stop()

    gunicorn_server(name='restarted', workers=2)
    run(check, aggregator, dd_run_check)

    assert len(count_scans) == 2
    assert worker_counts(aggregator, 'restarted') == {'working': 0, 'idle': 2}


def test_new_masters_are_found_at_the_rescan_interval(gunicorn_server, count_scans):
    first = gunicorn_server(name='rescan', workers=1)
    finder = Discovery('rescan', rescan_interval=60)
    assert [m.pid for m in finder.run(now=1000).masters] == [first.master_pid]

    second = gunicorn_server(name='rescan', workers=1)
    assert [m.pid for m in finder.run(now=1059).masters] == [first.master_pid]
    assert len(count_scans) == 1

    masters = finder.run(now=1060).masters
    assert sorted(m.pid for m in masters) == sorted([first.master_pid, second.master_pid])
    assert len(count_scans) == 2


def test_a_run_never_sleeps(gunicorn_server, make_check, dd_run_check, monkeypatch):
    gunicorn_server(name='nosleep', workers=1)
    check = make_check('nosleep')

    def refuse(seconds):
        raise AssertionError(f'the check slept {seconds}s')

    monkeypatch.setattr(time, 'sleep', refuse)
    dd_run_check(check)
    dd_run_check(check)


def test_a_worker_vanishing_between_two_reads_is_not_counted(
    gunicorn_server, make_check, dd_run_check, aggregator, monkeypatch
):
    server = gunicorn_server(name='vanish', workers=2)
    check = make_check('vanish')
    dd_run_check(check)
    gone = server.workers()[0].pid
    real = procfs.read_stat

    # Listed as a child, then gone before its stat is read: a race no test can time for real.
    def vanishing(pid, root='/proc'):
        if pid == gone:
            raise psutil.NoSuchProcess(pid)
        return real(pid, root)

    monkeypatch.setattr(procfs, 'read_stat', vanishing)
    run(check, aggregator, dd_run_check)

    assert worker_counts(aggregator, 'vanish') == {'working': 0, 'idle': 1}
    assert not check.warnings


def test_a_zombie_worker_is_not_counted(gunicorn_server, make_check, dd_run_check, aggregator):
    server = gunicorn_server(name='zombie', workers=2)
    check = make_check('zombie')
    dd_run_check(check)
    victim = server.workers()[0]

    server.signal(signal.SIGSTOP)  # a stopped master cannot reap: its killed worker stays a zombie
    try:
        victim.kill()
        wait_until(lambda: victim.status() == psutil.STATUS_ZOMBIE, what='a zombie worker')
        run(check, aggregator, dd_run_check)
    finally:
        server.signal(signal.SIGCONT)

    assert worker_counts(aggregator, 'zombie') == {'working': 0, 'idle': 1}


def test_unreadable_children_are_a_warning_not_an_error(
    gunicorn_server, make_check, dd_run_check, aggregator, monkeypatch
):
    server = gunicorn_server(name='denied', workers=2)
    check = make_check('denied')

    def denied(pid, root='/proc'):
        raise psutil.AccessDenied(pid)

    monkeypatch.setattr(procfs, 'read_children', denied)
    dd_run_check(check)

    assert check.warnings == [
        f'Cannot list the children of gunicorn master {server.master_pid}: permission denied (pid {server.master_pid})'
    ]
    assert worker_counts(aggregator, 'denied') == {'working': 0, 'idle': 0}


def test_a_garbled_worker_stat_is_a_warning_and_the_rest_is_counted(
    gunicorn_server, make_check, dd_run_check, aggregator, monkeypatch
):
    server = gunicorn_server(name='garbled', workers=2)
    check = make_check('garbled')
    garbled = server.workers()[0].pid
    real = procfs.read_stat

    def garbling(pid, root='/proc'):
        if pid == garbled:
            raise procfs.ProcfsError(f'/proc/{pid}/stat', 'too few fields after comm')
        return real(pid, root)

    monkeypatch.setattr(procfs, 'read_stat', garbling)
    dd_run_check(check)

    assert worker_counts(aggregator, 'garbled') == {'working': 0, 'idle': 1}
    (warning,) = check.warnings
    assert f'/proc/{garbled}/stat: too few fields after comm' in warning


def test_kernel_without_children_files_falls_back_to_psutil(gunicorn_server, monkeypatch):
    server = gunicorn_server(name='nochildren', workers=2)

    def unsupported(pid, root='/proc'):
        raise procfs.ChildrenUnsupported(f'/proc/{pid}/task/{pid}/children does not exist')

    monkeypatch.setattr(procfs, 'read_children', unsupported)
    finder = Discovery('nochildren', rescan_interval=60)

    snapshot = finder.run(now=0)

    assert sorted(w.pid for w in snapshot.workers) == sorted(w.pid for w in server.workers())
    assert finder.children_files is False


def test_a_top_level_master_named_like_a_usr2_master_is_another_app(
    gunicorn_server, make_check, dd_run_check, aggregator
):
    gunicorn_server(name='web', workers=2)
    gunicorn_server(name='web.2', workers=3)
    check = make_check('web')

    dd_run_check(check)

    assert worker_counts(aggregator, 'web') == {'working': 0, 'idle': 2}


def test_a_child_master_of_another_app_and_its_workers_are_not_counted(
    play_titles, make_check, dd_run_check, aggregator
):
    play_titles('other-master', 'outer', 'inner').expect('ready')
    check = make_check('outer')

    dd_run_check(check)

    assert worker_counts(aggregator, 'outer') == {'working': 0, 'idle': 1}


def test_a_worker_that_first_looked_like_a_usr2_master_is_counted_once_titled(
    play_titles, make_check, dd_run_check, aggregator
):
    player = play_titles('promotion', 'seq')
    player.expect('promoted')
    check = make_check('seq')
    dd_run_check(check)
    assert worker_counts(aggregator, 'seq') == {'working': 0, 'idle': 0}

    player.advance()
    player.expect('retitled')
    run(check, aggregator, dd_run_check)

    assert worker_counts(aggregator, 'seq') == {'working': 0, 'idle': 1}


def test_a_usr2_master_orphaned_before_it_retitles_keeps_counting(play_titles, make_check, dd_run_check, aggregator):
    player = play_titles('orphaned-successor', 'orphan')
    (successor,) = player.expect('ready')
    check = make_check('orphan')
    dd_run_check(check)
    assert worker_counts(aggregator, 'orphan') == {'working': 0, 'idle': 1}

    player.advance()
    player.popen.wait(timeout=10)  # the old master is gone; its successor still says NAME.2
    wait_until(lambda: procfs.read_stat(successor).ppid != player.popen.pid, what='the successor re-parented')
    run(check, aggregator, dd_run_check)

    assert worker_counts(aggregator, 'orphan') == {'working': 0, 'idle': 1}
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK)
    # A check that never saw it under the old master cannot tell it from an app named `orphan.2`.
    fresh = make_check('orphan')
    run(fresh, aggregator, dd_run_check)
    assert worker_counts(aggregator, 'orphan') == {'working': 0, 'idle': 0}


def test_steady_state_runs_read_no_titles(gunicorn_server, monkeypatch):
    # Workers and the dirty arbiter keep their titles for life: read once, never again.
    server = gunicorn_server(name='final', workers=2, args=['--dirty-app', 'dirty:Echo', '--dirty-workers', '1'])
    wait_until(lambda: 'gunicorn: dirty-arbiter' in map(title, server.descendants()), what='the dirty arbiter')
    server.track()
    finder = Discovery('final', rescan_interval=60)
    assert len(finder.run(now=0).workers) == 2

    reads = []
    real = procfs.read_title

    def counting(pid, root='/proc'):
        reads.append(pid)
        return real(pid, root)

    monkeypatch.setattr(procfs, 'read_title', counting)
    for now in (1, 2):
        assert len(finder.run(now=now).workers) == 2

    assert reads == []
