"""What a run costs, how it finds new masters, and how it survives processes that change under it."""

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from datadog_checks.base import AgentCheck
from datadog_checks.gunicorn import discovery, procfs
from datadog_checks.gunicorn.containers import Container
from datadog_checks.gunicorn.discovery import RANGE_LIMIT, Discovery

from .server import APP_DIR, GunicornServer, title, wait_until
from .test_check import run, worker_counts
from .test_pods import cgroups_writable, pods  # noqa: F401 (pods: a fixture)

NS_LAST_PID = Path('/proc/sys/kernel/ns_last_pid')
PID_MAX = int(Path('/proc/sys/kernel/pid_max').read_text())


@pytest.fixture
def count_scans(monkeypatch):
    """The full scans of the process table, one item each."""
    calls = []
    real = Discovery.full_scan

    def counting(self, now):
        calls.append(now)
        return real(self, now)

    monkeypatch.setattr(Discovery, 'full_scan', counting)
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


def test_a_restarted_master_is_found_at_the_next_run_without_a_full_scan(
    gunicorn_server, make_check, dd_run_check, aggregator, count_scans
):
    first = gunicorn_server(name='restarted', workers=1)
    check = make_check('restarted')
    dd_run_check(check)
    first.stop()

    gunicorn_server(name='restarted', workers=2)
    run(check, aggregator, dd_run_check)

    assert len(count_scans) == 1
    assert worker_counts(aggregator, 'restarted') == {'working': 0, 'idle': 2}


def test_a_second_master_beside_a_known_one_is_reported_at_the_very_next_run(gunicorn_server, count_scans):
    first = gunicorn_server(name='beside', workers=1)
    finder = Discovery('beside', rescan_interval=60)
    assert [m.pid for m in finder.run(now=1000).masters] == [first.master_pid]

    second = gunicorn_server(name='beside', workers=2)
    snapshot = finder.run(now=1015)

    assert sorted(m.pid for m in snapshot.masters) == sorted([first.master_pid, second.master_pid])
    assert len(snapshot.workers) == 3
    assert len(count_scans) == 1


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
    real = procfs.StatReader.read_stat

    # Listed as a child, then gone before its stat is read: a race no test can time for real.
    def vanishing(self, pid):
        if pid == gone:
            raise psutil.NoSuchProcess(pid)
        return real(self, pid)

    monkeypatch.setattr(procfs.StatReader, 'read_stat', vanishing)
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

    def denied(self, key):
        raise psutil.AccessDenied(key[0])

    monkeypatch.setattr(procfs.ChildrenReader, 'read_children', denied)
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
    real = procfs.StatReader.read_stat

    def garbling(self, pid):
        if pid == garbled:
            raise procfs.ProcfsError(f'/proc/{pid}/stat', 'too few fields after comm')
        return real(self, pid)

    monkeypatch.setattr(procfs.StatReader, 'read_stat', garbling)
    dd_run_check(check)

    assert worker_counts(aggregator, 'garbled') == {'working': 0, 'idle': 1}
    (warning,) = check.warnings
    assert f'/proc/{garbled}/stat: too few fields after comm' in warning


def test_kernel_without_children_files_falls_back_to_psutil(gunicorn_server, monkeypatch):
    server = gunicorn_server(name='nochildren', workers=2)

    def unsupported(self, key):
        raise procfs.ChildrenUnsupported(f'/proc/{key[0]}/task/{key[0]}/children does not exist')

    monkeypatch.setattr(procfs.ChildrenReader, 'read_children', unsupported)
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


def test_a_usr2_master_orphaned_before_it_retitles_keeps_counting(
    play_titles, make_check, dd_run_check, aggregator, count_scans
):
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
    assert len(count_scans) == 1  # the successor, known from the previous run, is followed on
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

    # Only this server's: a master started meanwhile by anything else on the machine is read once.
    assert [pid for pid in reads if pid in server.started] == []


# New masters, found without a full scan.


@pytest.fixture
def unstarted_server(tmp_path):
    """GunicornServer objects to adjust before start(); all are stopped at the end."""
    servers = []

    def make(**options):
        servers.append(GunicornServer(tmp_path, **options))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def next_pids_after():
    """Sets where this pid namespace goes on numbering from, as when numbering wraps around
    pid_max or many pids are given out between two runs."""

    def set_last_pid(pid):
        try:
            NS_LAST_PID.write_text(str(pid))
        except PermissionError:
            pytest.skip('setting ns_last_pid needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE')

    return set_last_pid


def in_pid_namespace_of(server, pid, first_pid=None):
    """`server`, made to start in the pid namespace of `pid`; with `first_pid`, numbered from there."""
    setup = 'exec "$@"' if first_pid is None else f'echo {first_pid} > /proc/sys/kernel/ns_last_pid && exec "$@"'
    server.command = ['nsenter', f'--target={pid}', '--pid', '--mount', '--', 'sh', '-c', setup, 'sh', *server.command]
    server.own_pid_namespace = True  # nsenter forks the master: its only child
    return server


def test_the_full_scan_comes_back_hourly(count_scans):
    finder = Discovery('hourly', rescan_interval=60)

    for now in (0, 15, 3599, 3600):
        finder.run(now=now)

    assert count_scans == [0, 3600]


GATED_APP = """
import os, time

here = os.path.dirname(os.path.abspath(__file__))
open(os.path.join(here, 'loading'), 'w').close()
while not os.path.exists(os.path.join(here, 'loaded')):
    time.sleep(0.05)

from sample import application
"""


def test_a_master_still_loading_its_app_at_the_first_run_is_found_once_titled(gunicorn_server, tmp_path, count_scans):
    # With --preload, gunicorn loads the app before it titles the master.
    (tmp_path / 'gated.py').write_text(GATED_APP)
    server = gunicorn_server(
        name='preloaded',
        workers=1,
        app='gated:application',
        args=['--preload', '--pythonpath', str(tmp_path)],
        wait=False,
    )
    wait_until(lambda: (tmp_path / 'loading').exists(), what='gunicorn loading the app')
    finder = Discovery('preloaded', rescan_interval=60)
    assert finder.run(now=0).masters == []
    assert procfs.read_comm(server.master_pid) == sys.executable[:15]  # as setproctitle, imported, made it

    (tmp_path / 'loaded').touch()
    server.wait_ready()
    snapshot = finder.run(now=15)

    assert [m.pid for m in snapshot.masters] == [server.master_pid]
    assert len(snapshot.workers) == 1
    assert len(count_scans) == 1


def test_a_script_that_execs_gunicorn_after_some_work_is_found_at_the_next_run(unstarted_server, tmp_path, count_scans):
    finder = Discovery('scripted', rescan_interval=60)
    finder.run(now=0)
    server = unstarted_server(name='scripted', workers=1)
    gate = tmp_path / 'go'
    # As an entrypoint script: some work first (here, waiting for the gate), then exec gunicorn.
    server.command = ['sh', '-c', 'while [ ! -e "$0" ]; do sleep 0.05; done; exec "$@"', str(gate), *server.command]
    server.start(wait=False)
    assert finder.run(now=15).masters == []
    assert procfs.read_comm(server.master_pid) == 'sh'

    gate.touch()
    server.wait_ready()
    snapshot = finder.run(now=30)

    assert [m.pid for m in snapshot.masters] == [server.master_pid]
    assert len(count_scans) == 1


THREADED_MASTER = """
import sys, threading
from setproctitle import setproctitle

def wait():
    # Named after the process: as a thread started after setproctitle is, whatever Python names it.
    with open(f'/proc/self/task/{threading.get_native_id()}/comm', 'w') as comm:
        comm.write('gunicorn: maste')
    print(threading.get_native_id(), flush=True)
    sys.stdin.read()

setproctitle('gunicorn: master [threaded]')
thread = threading.Thread(target=wait)
thread.start()
thread.join()
"""


def test_a_thread_of_a_master_is_not_another_master(count_scans):
    finder = Discovery('threaded', rescan_interval=60)
    finder.run(now=0)
    master = subprocess.Popen([sys.executable, '-c', THREADED_MASTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        thread_id = int(master.stdout.readline())
        snapshot = finder.run(now=15)
        assert procfs.read_task(thread_id).comm == 'gunicorn: maste'
    finally:
        master.stdin.close()
        master.wait(timeout=10)
        master.stdout.close()

    assert [m.pid for m in snapshot.masters] == [master.pid]
    assert len(count_scans) == 1


@pytest.mark.parametrize('numbering', ['wrapped around', 'jumped ahead'])
def test_a_new_master_is_found_at_the_next_run_however_far_numbering_went(
    gunicorn_server, next_pids_after, count_scans, numbering
):
    name = numbering.replace(' ', '-')
    first = gunicorn_server(name=name, workers=1)
    next_pids_after(PID_MAX // 2)  # room on both sides
    finder = Discovery(name, rescan_interval=60)
    finder.run(now=0)
    before = finder.counter
    next_pids_after(300 if numbering == 'wrapped around' else before + RANGE_LIMIT + 100)

    second = gunicorn_server(name=name, workers=2)
    snapshot = finder.run(now=15)

    if numbering == 'wrapped around':
        assert second.master_pid < before
    else:
        assert second.master_pid > before + RANGE_LIMIT
    assert sorted(m.pid for m in snapshot.masters) == sorted([first.master_pid, second.master_pid])
    assert len(snapshot.workers) == 3
    assert len(count_scans) == 1


def namespace_root(server):
    """The /proc of the pid namespace `server` runs in, as a containerized Agent reads the host's
    at /host/proc: a procfs of a pid namespace other than its own."""
    return f'/proc/{server.master_pid}/root/proc'


def test_a_new_master_in_another_pid_namespace_is_found_at_the_next_run(gunicorn_server, unstarted_server, count_scans):
    first = gunicorn_server(name='elsewhere', workers=1, own_pid_namespace=True)
    finder = Discovery('elsewhere', rescan_interval=60, root=namespace_root(first))
    assert not finder.own_namespace
    assert [m.pid for m in finder.run(now=0).masters] == [1]

    in_pid_namespace_of(unstarted_server(name='elsewhere', workers=2), first.master_pid).start()
    snapshot = finder.run(now=15)

    assert sorted(len(tree.workers) for tree in snapshot.trees) == [1, 2]
    assert len(count_scans) == 1


def test_in_another_pid_namespace_numbering_started_again_brings_a_full_scan(
    gunicorn_server, unstarted_server, count_scans
):
    first = gunicorn_server(name='renumbered', workers=1, own_pid_namespace=True)
    # A process numbered high in that namespace, so that numbering can start again below it.
    high = in_pid_namespace_of(unstarted_server(name='renumbered-high', workers=1), first.master_pid, first_pid=5000)
    high.start()
    finder = Discovery('renumbered', rescan_interval=60, root=namespace_root(first))
    finder.run(now=0)
    assert max(finder.listed) > 5000

    second = in_pid_namespace_of(unstarted_server(name='renumbered', workers=2), first.master_pid, first_pid=100)
    second.start()
    snapshot = finder.run(now=15)

    assert sorted(len(tree.workers) for tree in snapshot.trees) == [1, 2]
    assert count_scans == [0, 15]


@pytest.mark.skipif(cgroups_writable() is not None, reason=f'{cgroups_writable()}')
def test_new_masters_in_pods_are_scoped_and_know_their_container(pods, count_scans):  # noqa: F811
    first = pods('podded', workers=1)
    scoped, everywhere = Discovery('podded', 60, pod_uid=first.uid), Discovery('podded', 60)
    scoped.run(now=0)
    everywhere.run(now=0)

    second = pods('podded', workers=2)

    assert [tree.container for tree in scoped.run(now=15).trees] == [Container(first.container_id, first.uid)]
    assert {tree.container for tree in everywhere.run(now=15).trees} == {
        Container(first.container_id, first.uid),
        Container(second.container_id, second.uid),
    }
    assert len(count_scans) == 2  # the first run of each


# Bounds: what is kept between runs, and what brings a full scan.


def test_a_new_process_is_watched_for_rescan_interval_or_until_it_exits():
    finder = Discovery('patient', rescan_interval=60)
    finder.run(now=0)
    short, long = subprocess.Popen(['sleep', '60']), subprocess.Popen(['sleep', '60'])
    try:
        finder.run(now=15)
        assert {short.pid: 75, long.pid: 75}.items() <= finder.watched.items()
        short.kill()
        short.wait()
        finder.run(now=74)
        assert short.pid not in finder.watched and long.pid in finder.watched
        finder.run(now=75)
        assert long.pid not in finder.watched
    finally:
        for sleeper in (short, long):
            sleeper.kill()
            sleeper.wait()


def test_more_new_processes_than_can_be_watched_bring_a_full_scan_once_they_had_the_time(monkeypatch, count_scans):
    finder = Discovery('crowded', rescan_interval=60)
    finder.run(now=0)
    monkeypatch.setattr(discovery, 'WATCH_LIMIT', 2)
    sleepers = [subprocess.Popen(['sleep', '60']) for _ in range(3)]
    try:
        finder.run(now=15)
        assert not {sleeper.pid for sleeper in sleepers} <= finder.watched.keys()
        finder.run(now=74)
        assert count_scans == [0]
        finder.run(now=75)
        assert count_scans == [0, 75]
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()


def test_without_a_count_of_new_processes_every_run_scans_in_full(tmp_path, count_scans):
    # A /proc with neither loadavg nor stat: nothing tells which processes are new.
    finder = Discovery('uncounted', rescan_interval=60, root=str(tmp_path))

    for now in (0, 15):
        assert finder.run(now=now).masters == []

    assert count_scans == [0, 15]


def test_a_master_whose_stat_cannot_be_read_is_a_warning_and_still_followed(gunicorn_server, monkeypatch, count_scans):
    server = gunicorn_server(name='unreadable', workers=1)
    finder = Discovery('unreadable', rescan_interval=60)
    finder.run(now=0)
    real = procfs.StatReader.read_stat

    def garbling(self, pid):
        if pid == server.master_pid:
            raise procfs.ProcfsError(f'/proc/{pid}/stat', 'too few fields after comm')
        return real(self, pid)

    monkeypatch.setattr(procfs.StatReader, 'read_stat', garbling)
    snapshot = finder.run(now=15)
    assert snapshot.masters == []
    assert snapshot.problems == [
        f'Cannot read gunicorn master {server.master_pid}: /proc/{server.master_pid}/stat: too few fields after comm'
    ]

    monkeypatch.setattr(procfs.StatReader, 'read_stat', real)
    assert [m.pid for m in finder.run(now=30).masters] == [server.master_pid]
    assert len(count_scans) == 1
