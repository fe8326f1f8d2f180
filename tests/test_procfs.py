"""The /proc readers on captured text, malformed input included."""

import errno
import os
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

from datadog_checks.gunicorn import procfs, sockdiag

from .server import wait_until
from .unprivileged import run_as_nobody

# /proc/PID/stat of a gunicorn worker, captured here; comm holds a space and is cut at 15 characters.
WORKER_STAT = (
    '4641 (gunicorn: worke) S 4638 4638 4600 34816 4638 4194368 2302 0 0 0 37 9 0 0 20 0 1 0 '
    '1053231 31227904 6187 18446744073709551615 1 1 0 0 0 0 0 16781312 134234630 0 0 0 17 1 0 0 0 0 0 '
    '0 0 0 0 0 0 0 0\n'
)


def fake_proc(tmp_path, pid, files):
    for name, text in files.items():
        path = tmp_path / str(pid) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


def test_read_stat_parses_after_the_last_parenthesis(tmp_path):
    root = fake_proc(tmp_path, 4641, {'stat': WORKER_STAT})

    stat = procfs.read_stat(4641, root)

    assert stat == procfs.Stat(
        state='S', ppid=4638, cpu_ticks=46, start_ticks=1053231, num_threads=1, rss_bytes=6187 * procfs.PAGE_SIZE
    )


def test_read_stat_with_parentheses_and_spaces_in_comm(tmp_path):
    root = fake_proc(tmp_path, 7, {'stat': WORKER_STAT.replace('(gunicorn: worke)', '(a) b) c (d)')})

    assert procfs.read_stat(7, root).ppid == 4638


@pytest.mark.parametrize(
    'text, problem',
    [
        ('', 'too few fields'),
        ('4641 (gunicorn: worke) S 4638 4638\n', 'too few fields'),
        ('4641 gunicorn S 4638 ' + '0 ' * 60, 'too few fields'),
        (WORKER_STAT.replace(' 37 9 ', ' 37 x9 '), 'non-numeric field'),
    ],
)
def test_read_stat_rejects_malformed_text_naming_the_file(tmp_path, text, problem):
    root = fake_proc(tmp_path, 9, {'stat': text})

    with pytest.raises(procfs.ProcfsError, match=problem) as raised:
        procfs.read_stat(9, root)
    assert raised.value.path == f'{root}/9/stat'


def test_missing_process_is_no_such_process(tmp_path):
    with pytest.raises(psutil.NoSuchProcess):
        procfs.read_stat(123, str(tmp_path))


def test_unreadable_file_is_access_denied():
    # /proc/1/maps of a root process is closed to other users.
    def read_init_maps():
        try:
            list(procfs.mapped_paths(1))
        except psutil.AccessDenied:
            return 'AccessDenied'

    assert run_as_nobody(read_init_maps) == 'AccessDenied'


def test_read_children_reads_the_main_threads_file_only(tmp_path):
    # gunicorn forks only from its main thread: another thread's children are none of its workers.
    root = fake_proc(tmp_path, 10, {'task/10/children': '11 12 ', 'task/13/children': '14 '})

    assert sorted(procfs.read_children(10, root)) == [11, 12]


def test_read_children_of_a_process_gone(tmp_path):
    with pytest.raises(psutil.NoSuchProcess):
        procfs.read_children(10, str(tmp_path))


def test_read_children_without_the_kernel_file(tmp_path):
    (tmp_path / '10' / 'task' / '10').mkdir(parents=True)

    with pytest.raises(procfs.ChildrenUnsupported):
        procfs.read_children(10, str(tmp_path))


def test_read_children_rejects_garbage(tmp_path):
    root = fake_proc(tmp_path, 10, {'task/10/children': '11 twelve'})

    with pytest.raises(procfs.ProcfsError, match='not a list of pids'):
        procfs.read_children(10, root)


def test_read_children_of_a_real_process_matches_psutil():
    me = psutil.Process()
    child = psutil.Popen(['sleep', '5'])
    try:
        assert child.pid in procfs.read_children(me.pid)
    finally:
        child.kill()
        child.wait()


def test_read_title_turns_nul_padding_into_single_spaces(tmp_path):
    root = fake_proc(tmp_path, 3, {'cmdline': 'gunicorn: master [my app]' + '\0' * 100})
    root = fake_proc(tmp_path, 4, {'cmdline': '/venv/bin/python3\0-m\0gunicorn\0app:app\0'})

    assert procfs.read_title(3, root) == 'gunicorn: master [my app]'
    assert procfs.read_title(4, root) == '/venv/bin/python3 -m gunicorn app:app'


def test_mapped_paths_keeps_file_paths_only(tmp_path):
    maps = (
        '55d0c4a00000-55d0c4a01000 r--p 00000000 fd:01 1 /usr/bin/python3.11\n'
        '7f1c2d000000-7f1c2d001000 r-xp 00001000 fd:01 2 /venv/lib/python3.11/site-packages/'
        'setproctitle/_setproctitle.cpython-311-x86_64-linux-gnu.so\n'
        '7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0 [stack]\n'
        '7f1c2e000000-7f1c2e100000 rw-p 00000000 00:00 0\n'
        '7f1c2f000000-7f1c2f001000 r--p 00000000 fd:01 3 /tmp/with space.so (deleted)\n'
    )
    root = fake_proc(tmp_path, 6, {'maps': maps})

    assert set(procfs.mapped_paths(6, root)) == {
        '/usr/bin/python3.11',
        '/venv/lib/python3.11/site-packages/setproctitle/_setproctitle.cpython-311-x86_64-linux-gnu.so',
        '/tmp/with space.so (deleted)',
    }


# Lines are cut after the inode column, the last one the parser reads.
# /proc/net/tcp with a listener on 127.0.0.1:59357 (0xE7DD) holding 2 connections in its
# accept queue (inode 0) and one accepted (inode 25684), captured here.
NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   1: 0100007F:E7DD 00000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 25680 3 0 100 0 0 10 0
   9: 0100007F:E7DD 0100007F:D29C 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0 20 0 0 10 -1
  11: 0100007F:E7DD 0100007F:D28A 01 00000000:00000000 00:00000000 00000000     0        0 25684 1 0 20 0 0 10 -1
"""
NET_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31000
   1: 0000000000000000FFFF00000100007F:1F40 0000000000000000FFFF00000100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 31001
   2: 00000000000000000000000001000000:1F40 00000000000000000000000001000000:C351 01 00000000:00000000 00:00000000 00000000     0        0 31002
"""
NET_UNIX = """\
Num       RefCount Protocol Flags    Type St Inode Path
00000000c703a941: 00000003 00000000 00000000 0001 03 25678 /tmp/exp.sock
00000000ad09b94e: 00000003 00000000 00000000 0001 02     0 /tmp/exp.sock
0000000039356271: 00000002 00000000 00010000 0001 01 25674 /tmp/exp.sock
00000000bdb5431e: 00000003 00000000 00000000 0001 03 25690
0000000012345678: 00000002 00000000 00010000 0001 01 25700 /run/with space.sock
"""


def test_read_net_tcp(tmp_path):
    root = fake_proc(tmp_path, 8, {'net/tcp': NET_TCP, 'net/tcp6': NET_TCP6})

    assert procfs.read_net_tcp(8, 'tcp', root) == [
        procfs.TcpSocket('127.0.0.1', 59357, procfs.TCP_LISTEN, 2, 25680),
        procfs.TcpSocket('127.0.0.1', 59357, procfs.TCP_ESTABLISHED, 0, 0),
        procfs.TcpSocket('127.0.0.1', 59357, procfs.TCP_ESTABLISHED, 0, 25684),
    ]
    assert [(s.local_ip, s.local_port, s.inode) for s in procfs.read_net_tcp(8, 'tcp6', root)] == [
        ('::', 8000, 31000),
        ('::ffff:127.0.0.1', 8000, 31001),
        ('::1', 8000, 31002),
    ]


@pytest.mark.parametrize(
    'line',
    [
        '   1: 0100007F 00000000:0000 0A 00000000:00000002 00:00000000 00000000 0 0 25680',
        '   1: 0100007F:E7DD 00000000:0000 0A 00000000:0000000Z 00:00000000 00000000 0 0 25680',
        '   1: 0100007F:E7DD 00000000:0000 0A',
        '   1: 01007F:E7DD 00000000:0000 0A 00000000:00000002 00:00000000 00000000 0 0 25680',
    ],
)
def test_read_net_tcp_rejects_malformed_lines(tmp_path, line):
    root = fake_proc(tmp_path, 8, {'net/tcp': 'header\n' + line + '\n'})

    with pytest.raises(procfs.ProcfsError, match='unexpected line'):
        procfs.read_net_tcp(8, 'tcp', root)


def test_read_net_unix(tmp_path):
    root = fake_proc(tmp_path, 8, {'net/unix': NET_UNIX})

    assert procfs.read_net_unix(8, root) == [
        procfs.UnixSocket(0, procfs.UNIX_CONNECTED, 25678, '/tmp/exp.sock'),
        procfs.UnixSocket(0, procfs.UNIX_CONNECTING, 0, '/tmp/exp.sock'),
        procfs.UnixSocket(procfs.UNIX_ACCEPTING, 1, 25674, '/tmp/exp.sock'),
        procfs.UnixSocket(procfs.UNIX_ACCEPTING, 1, 25700, '/run/with space.sock'),
    ]
    assert [s.inode for s in procfs.read_net_unix(8, root, paths={'/run/with space.sock'})] == [25700]


@pytest.mark.parametrize('line', ['0000: 00000003 00000000', '0000: 00000003 00000000 0000000G 0001 03 1 /x'])
def test_read_net_unix_rejects_malformed_lines(tmp_path, line):
    root = fake_proc(tmp_path, 8, {'net/unix': 'header\n' + line + '\n'})

    with pytest.raises(procfs.ProcfsError, match='unexpected line'):
        procfs.read_net_unix(8, root)


def test_fd_links_of_a_real_process_name_its_sockets():
    with socket.socket() as sock:
        links = procfs.read_fd_links(os.getpid())

        assert links[sock.fileno()] == f'socket:[{os.fstat(sock.fileno()).st_ino}]'
        assert procfs.socket_fds(links)[os.fstat(sock.fileno()).st_ino] == sock.fileno()


def test_sock_diag_and_proc_net_tcp_agree_on_a_real_accept_queue():
    with socket.socket() as listener:
        listener.bind(('127.0.0.1', 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        clients = [socket.create_connection(('127.0.0.1', port)) for _ in range(3)]
        try:
            inode = os.fstat(listener.fileno()).st_ino
            from_netlink = [s for s in sockdiag.dump_tcp(socket.AF_INET, {procfs.TCP_LISTEN}) if s.local_port == port]
            from_proc = [s for s in procfs.read_net_tcp(os.getpid(), 'tcp') if s.local_port == port]
        finally:
            for client in clients:
                client.close()

    assert from_netlink == [procfs.TcpSocket('127.0.0.1', port, procfs.TCP_LISTEN, 3, inode)]
    assert [s for s in from_proc if s.state == procfs.TCP_LISTEN] == from_netlink


def test_sock_diag_refused_is_a_clear_error(monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(1, 'Operation not permitted')

    monkeypatch.setattr(sockdiag.socket, 'socket', refuse)

    with pytest.raises(sockdiag.SockDiagUnavailable, match='sock_diag netlink: Operation not permitted'):
        sockdiag.dump_tcp(socket.AF_INET, {procfs.TCP_LISTEN})


# Reading as bytes, files longer than one read, and the error mapping shared by every reader.


def test_mapped_paths_of_a_file_longer_than_one_read(tmp_path):
    lines = [f'7f{i:010x}000-7f{i:010x}fff r--p 00000000 fd:01 {i} /lib/mod{i}.so\n' for i in range(3000)]
    root = fake_proc(tmp_path, 6, {'maps': ''.join(lines)})
    assert len(''.join(lines)) > procfs.READ_SIZE

    assert set(procfs.mapped_paths(6, root)) == {f'/lib/mod{i}.so' for i in range(3000)}


def test_read_net_tcp_of_a_real_table_the_kernel_returns_in_several_reads():
    # Each read of a /proc/net table returns at most a page of lines: 300 listeners need a dozen.
    listeners = [socket.socket() for _ in range(300)]
    try:
        for listener in listeners:
            listener.bind(('127.0.0.1', 0))
            listener.listen(1)
        ports = {listener.getsockname()[1] for listener in listeners}

        found = {s.local_port for s in procfs.read_net_tcp(os.getpid(), 'tcp') if s.state == procfs.TCP_LISTEN}
    finally:
        for listener in listeners:
            listener.close()

    assert ports <= found


def test_read_title_keeps_undecodable_bytes_visible(tmp_path):
    path = tmp_path / '5' / 'cmdline'
    path.parent.mkdir()
    path.write_bytes(b'gunicorn: master [caf\xe9]\0\0')

    assert procfs.read_title(5, str(tmp_path)) == 'gunicorn: master [caf\ufffd]'


@pytest.mark.parametrize(
    'error, raised',
    [
        (ProcessLookupError(3, 'No such process'), psutil.NoSuchProcess),
        (FileNotFoundError(2, 'No such file or directory'), psutil.NoSuchProcess),
        (PermissionError(13, 'Permission denied'), psutil.AccessDenied),
        (OSError(5, 'Input/output error'), procfs.ProcfsError),
    ],
)
@pytest.mark.parametrize('reader, name', [('read_title', 'cmdline'), ('read_stat', 'stat')])
def test_an_error_while_reading_is_mapped_like_one_while_opening(tmp_path, monkeypatch, error, raised, reader, name):
    root = fake_proc(tmp_path, 9, {'stat': WORKER_STAT, 'cmdline': 'x'})

    def fail(*args):
        raise error

    monkeypatch.setattr(procfs.os, 'pread', fail)
    with pytest.raises(raised) as caught:
        getattr(procfs, reader)(9, root)
    if raised is procfs.ProcfsError:
        assert caught.value.path == f'{root}/9/{name}'
        assert 'Input/output error' in str(caught.value)


def test_readers_leave_no_fd_open(tmp_path):
    root = fake_proc(tmp_path, 4641, {'stat': WORKER_STAT, 'cmdline': 'a\0b', 'maps': ''})
    before = os.listdir('/proc/self/fd')

    procfs.read_stat(4641, root)
    procfs.read_title(4641, root)
    list(procfs.mapped_paths(4641, root))
    assert next(procfs.mapped_paths(os.getpid())).startswith('/')  # left after its first path
    with pytest.raises(psutil.NoSuchProcess):
        procfs.read_cgroup(4641, root)

    assert os.listdir('/proc/self/fd') == before


# StatReader and FdReader: files kept open between runs.


def child_process():
    """A child that sleeps, with its Proc key; stopped with stop_child."""
    child = sleeping(psutil.Popen(['sleep', '60']))
    return child, (child.pid, procfs.read_stat(child.pid).start_ticks)


def sleeping(child):
    """`child` once `sleep` runs: until then the dynamic loader opens and closes files."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if child.name() == 'sleep' and child.status() == psutil.STATUS_SLEEPING:
            if set(procfs.read_fd_links(child.pid)) == {0, 1, 2}:
                break
        time.sleep(0.001)
    return child


def stop_child(child):
    child.kill()
    child.wait()


def open_fds():
    return len(os.listdir('/proc/self/fd'))


def test_stat_reader_reads_what_read_stat_reads_through_one_kept_fd(tmp_path):
    root = fake_proc(tmp_path, 4641, {'stat': WORKER_STAT})
    reader = procfs.StatReader(root)
    before = open_fds()

    first = reader.read_stat(4641)
    second = reader.read_stat(4641)

    assert first == second == procfs.read_stat(4641, root)
    assert len(reader.fds) == 1
    assert open_fds() == before + 1
    reader.close()
    assert open_fds() == before


def test_stat_reader_of_a_stat_longer_than_one_read(tmp_path):
    # A real comm is at most 15 bytes: this one only checks that a long file is read whole.
    long_stat = WORKER_STAT.replace('(gunicorn: worke)', '(' + ') x' * 2000 + ')')
    root = fake_proc(tmp_path, 7, {'stat': long_stat})
    assert len(long_stat) > procfs.STAT_READ_SIZE

    assert procfs.StatReader(root).read_stat(7) == procfs.read_stat(7, root)
    assert procfs.read_stat(7, root).ppid == 4638


def test_stat_reader_follows_a_real_process_until_it_is_reaped():
    child, _ = child_process()
    reader = procfs.StatReader()
    try:
        assert reader.read_stat(child.pid).state in 'SR'
        child.kill()  # and not reaped yet: a zombie, still there to read
        while reader.read_stat(child.pid).state not in procfs.DEAD_STATES:
            pass
    finally:
        stop_child(child)

    with pytest.raises(psutil.NoSuchProcess):
        reader.read_stat(child.pid)
    assert len(reader.fds) == 0


def test_comm_reader_follows_its_process_through_exec_on_one_kept_fd():
    child = psutil.Popen(['sh', '-c', 'read line; exec sleep 60'], stdin=subprocess.PIPE)
    reader = procfs.CommReader()
    try:
        assert reader.read_comm(child.pid) == 'sh'
        kept = dict(reader.fds)
        child.stdin.write(b'\n')
        child.stdin.flush()
        wait_until(lambda: procfs.read_comm(child.pid) == 'sleep', what='sh to exec sleep')
        assert reader.read_comm(child.pid) == 'sleep'
        assert reader.fds == kept
    finally:
        stop_child(child)
        child.stdin.close()

    with pytest.raises(psutil.NoSuchProcess):
        reader.read_comm(child.pid)
    assert reader.fds == {}


def test_run_time_reader_reads_a_running_process_anew_on_one_kept_fd():
    child = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    reader = procfs.RunTimeReader()
    try:
        first = reader.read_run_time(child.pid)
        kept = dict(reader.fds)
        wait_until(lambda: reader.read_run_time(child.pid) > first, what='the spinning child to run on')
        assert reader.fds == kept
        assert abs(reader.read_run_time(child.pid) - procfs.read_run_time(child.pid)) < 1e9
    finally:
        stop_child(child)

    with pytest.raises(psutil.NoSuchProcess):
        reader.read_run_time(child.pid)
    assert reader.fds == {}


def test_children_reader_follows_one_process_on_one_kept_fd():
    me = (os.getpid(), procfs.read_stat(os.getpid()).start_ticks)
    reader = procfs.ChildrenReader()
    child, _ = child_process()
    try:
        assert child.pid in reader.read_children(me)
        kept = dict(reader.fds)
        second = psutil.Popen(['sleep', '60'])
        try:
            assert {child.pid, second.pid} <= set(reader.read_children(me))
        finally:
            stop_child(second)
        assert reader.fds == kept
    finally:
        stop_child(child)
        reader.close()


# A parent of N children that pause: it prints their pids, and reaps them once they are killed
# and its standard input closes.
MANY_CHILDREN = """
import os, signal, sys
pids = []
for _ in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        signal.pause()
        os._exit(0)
    pids.append(pid)
print(' '.join(map(str, pids)), flush=True)
sys.stdin.read()
for _ in pids:
    os.wait()
"""


def test_children_longer_than_a_page_come_back_whole():
    # The kernel hands a children file out a page at most per read, cut between two records.
    parent = subprocess.Popen(
        [sys.executable, '-c', MANY_CHILDREN, '1000'], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    children = []
    reader = procfs.ChildrenReader()
    try:
        children = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(' '.join(map(str, children))) > procfs.PAGE_SIZE
        key = (parent.pid, procfs.read_stat(parent.pid).start_ticks)

        assert sorted(procfs.read_children(parent.pid)) == sorted(children)
        assert sorted(reader.read_children(key)) == sorted(children)
        assert sorted(reader.read_children(key)) == sorted(children)  # again, on the kept fd
    finally:
        reader.close()
        for pid in children:
            os.kill(pid, 9)
        parent.communicate(timeout=30)


def test_children_reader_of_a_pid_now_another_processs(tmp_path):
    root = fake_proc(tmp_path, 10, {'stat': WORKER_STAT, 'task/10/children': '11 '})
    start_ticks = procfs.read_stat(10, root).start_ticks
    reader = procfs.ChildrenReader(root)
    try:
        with pytest.raises(psutil.NoSuchProcess):
            reader.read_children((10, start_ticks + 1))
        assert reader.fds == {}
        assert reader.read_children((10, start_ticks)) == [11]
    finally:
        reader.close()  # not left to the garbage collector: other tests count open fds


def test_children_reader_without_the_kernel_file(tmp_path):
    root = fake_proc(tmp_path, 10, {'stat': WORKER_STAT})
    start_ticks = procfs.read_stat(10, root).start_ticks

    reader = procfs.ChildrenReader(root)
    try:
        with pytest.raises(procfs.ChildrenUnsupported):
            reader.read_children((10, start_ticks))
        with pytest.raises(psutil.NoSuchProcess):
            reader.read_children((11, start_ticks))
        assert reader.fds == {}
    finally:
        reader.close()


def test_children_reader_rejects_garbage(tmp_path):
    root = fake_proc(tmp_path, 10, {'stat': WORKER_STAT, 'task/10/children': '11 twelve'})
    start_ticks = procfs.read_stat(10, root).start_ticks

    reader = procfs.ChildrenReader(root)
    try:
        with pytest.raises(procfs.ProcfsError, match='not a list of pids'):
            reader.read_children((10, start_ticks))
    finally:
        reader.close()


def test_kept_kernel_counters_move_on_one_fd():
    last_pid, forks = procfs.LastPidReader(), procfs.ForkCountReader()
    try:
        before = last_pid.read(), forks.read()
        kept = dict(last_pid._fds), dict(forks._fds)
        subprocess.run(['true'], check=True)
        assert last_pid.read() != before[0]
        assert forks.read() > before[1]
        assert (last_pid._fds, forks._fds) == kept
    finally:
        last_pid.close()
        forks.close()


def test_a_kept_kernel_counter_that_cannot_be_read_is_opened_anew(tmp_path, monkeypatch):
    (tmp_path / 'loadavg').write_text('0.00 0.01 0.05 1/85 13584\n')
    reader = procfs.LastPidReader(str(tmp_path))
    assert reader.read() == 13584
    (tmp_path / 'loadavg').write_text('0.00 0.01\n')
    with pytest.raises(procfs.ProcfsError, match='no last pid'):
        reader.read()

    real_pread = os.pread

    def failing(fd, size, offset):
        monkeypatch.setattr(os, 'pread', real_pread)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, 'pread', failing)
    with pytest.raises(procfs.ProcfsError, match='Input/output error'):
        reader.read()
    assert reader._fds == {}
    (tmp_path / 'loadavg').write_text('0.00 0.01 0.05 1/85 13600\n')
    assert reader.read() == 13600
    reader.close()


def test_stat_reader_reopens_the_pid_after_esrch(tmp_path, monkeypatch):
    # What a kept fd answers once its process is reaped; the pid's file is now another process's.
    root = fake_proc(tmp_path, 4641, {'stat': WORKER_STAT})
    reader = procfs.StatReader(root)
    reader.read_stat(4641)
    (kept,) = reader.fds.values()
    fake_proc(tmp_path, 4641, {'stat': WORKER_STAT.replace(' 1053231 ', ' 2000000 ')})
    real_pread = os.pread
    failed = []

    def gone(fd, *args):
        if fd == kept and not failed:
            failed.append(fd)
            raise ProcessLookupError(3, 'No such process')
        return real_pread(fd, *args)

    monkeypatch.setattr(procfs.os, 'pread', gone)
    before = open_fds()

    assert reader.read_stat(4641).start_ticks == 2000000
    assert failed  # the kept fd was asked first
    assert len(reader.fds) == 1
    assert open_fds() == before  # the old fd closed, the new one kept


def start_with_pid(pid):
    """A child given exactly `pid`, by setting the kernel's last pid (root only); None when
    another process on the host takes that pid first every time."""
    for _ in range(50):
        with open('/proc/sys/kernel/ns_last_pid', 'w') as f:
            f.write(str(pid - 1))
        child = psutil.Popen(['sleep', '60'])
        if child.pid == pid:
            return sleeping(child)
        stop_child(child)
    return None


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason='choosing a pid needs root')


@needs_root
def test_kept_files_never_read_a_process_that_reused_the_pid():
    first, first_key = child_process()
    stats, fds = procfs.StatReader(), procfs.FdReader()
    assert stats.read_stat(first.pid).start_ticks == first_key[1]
    fds.read_fd_links(first_key)
    stop_child(first)
    time.sleep(0.05)  # a few clock ticks: the second process starts at another tick

    second = start_with_pid(first.pid)
    if second is None:
        pytest.skip(f'pid {first.pid} kept being taken by another process')
    try:
        second_key = (second.pid, procfs.read_stat(second.pid).start_ticks)
        assert second_key != first_key

        assert stats.read_stat(first.pid).start_ticks == second_key[1]
        with pytest.raises(psutil.NoSuchProcess):
            fds.read_fd_links(first_key)
        assert fds.read_fd_links(second_key) == procfs.read_fd_links(second.pid)
    finally:
        stop_child(second)


def test_stat_reader_sweep_closes_what_a_run_did_not_read(tmp_path):
    root = fake_proc(tmp_path, 1, {'stat': WORKER_STAT})
    root = fake_proc(tmp_path, 2, {'stat': WORKER_STAT})
    reader = procfs.StatReader(root)
    reader.read_stat(1)
    reader.read_stat(2)
    reader.sweep()
    before = open_fds()

    reader.read_stat(2)
    reader.sweep()

    assert list(reader.fds) == [2]
    assert open_fds() == before - 1


def test_stat_reader_past_its_limit_reads_without_keeping(tmp_path):
    root = fake_proc(tmp_path, 1, {'stat': WORKER_STAT})
    root = fake_proc(tmp_path, 2, {'stat': WORKER_STAT})
    reader = procfs.StatReader(root, limit=1)
    before = open_fds()

    assert reader.read_stat(1) == reader.read_stat(2) == procfs.read_stat(2, root)

    assert list(reader.fds) == [1]
    assert open_fds() == before + 1


def test_stat_reader_dropped_without_close_closes_its_fds(tmp_path):
    root = fake_proc(tmp_path, 1, {'stat': WORKER_STAT})
    before = open_fds()
    reader = procfs.StatReader(root)
    reader.read_stat(1)
    del reader

    assert open_fds() == before


def test_stat_reader_maps_errors_like_read_stat(tmp_path):
    reader = procfs.StatReader(str(tmp_path))
    with pytest.raises(psutil.NoSuchProcess):
        reader.read_stat(123)
    root = fake_proc(tmp_path, 9, {'stat': 'garbage'})
    with pytest.raises(procfs.ProcfsError, match='too few fields') as raised:
        reader.read_stat(9)
    assert raised.value.path == f'{root}/9/stat'


def test_fd_reader_sees_each_run_what_the_process_holds_now():
    with socket.socket() as listener:
        listener.bind(('127.0.0.1', 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        # bash: a process whose fds change only when told to (it connects on the second line).
        script = f'echo; read; exec 7<>/dev/tcp/127.0.0.1/{port}; echo; read'
        child = psutil.Popen(['bash', '-c', script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            child.stdout.readline()
            key = (child.pid, procfs.read_stat(child.pid).start_ticks)
            reader = procfs.FdReader()
            before = reader.read_fd_links(key)
            assert before == procfs.read_fd_links(child.pid)
            assert not procfs.socket_fds(before)

            child.stdin.write(b'\n')
            child.stdin.flush()
            child.stdout.readline()
            after = reader.read_fd_links(key)

            assert after == procfs.read_fd_links(child.pid)
            assert after[7].startswith('socket:[')
            assert len(reader.fds) == 1
            assert reader.fd_change_time(key, 7) == procfs.fd_change_time(child.pid, 7)
        finally:
            stop_child(child)

    with pytest.raises(psutil.NoSuchProcess):
        reader.read_fd_links(key)
    assert len(reader.fds) == 0


def test_fd_reader_refuses_a_key_whose_start_ticks_are_not_the_process():
    child, (pid, start_ticks) = child_process()
    reader = procfs.FdReader()
    before = open_fds()
    try:
        with pytest.raises(psutil.NoSuchProcess):
            reader.read_fd_links((pid, start_ticks - 1))
        with pytest.raises(psutil.NoSuchProcess):
            reader.fd_change_time((pid, start_ticks + 1), 0)
    finally:
        stop_child(child)

    assert len(reader.fds) == 0
    assert open_fds() == before


def test_fd_reader_of_another_users_process_is_access_denied():
    def read_init_fds():
        reader = procfs.FdReader()
        try:
            reader.read_fd_links((1, procfs.read_stat(1).start_ticks))
        except psutil.AccessDenied:
            return 'AccessDenied', len(reader.fds)

    assert run_as_nobody(read_init_fds) == ('AccessDenied', 0)


# Readers for finding new processes cheaply.


def test_read_comm_without_its_newline(tmp_path):
    root = fake_proc(tmp_path, 3, {'comm': 'gunicorn: maste\n'})

    assert procfs.read_comm(3, root) == 'gunicorn: maste'
    assert procfs.read_comm(os.getpid()) == psutil.Process().name()[:15]
    with pytest.raises(psutil.NoSuchProcess):
        procfs.read_comm(4, root)


def test_find_comms_keeps_the_comms_asked_for(tmp_path):
    fake_proc(tmp_path, 3, {'comm': 'gunicorn: maste\n'})
    fake_proc(tmp_path, 5, {'comm': 'python3.12\n'})
    fake_proc(tmp_path, 7, {'comm': 'sleep\n'})
    fake_proc(tmp_path, 'self', {'comm': 'python3.12\n'})
    (tmp_path / '9').mkdir()  # a process gone since the listing

    assert procfs.find_comms(['gunicorn: maste', 'python'], str(tmp_path)) == {3: 'gunicorn: maste', 5: 'python3.12'}
    own = procfs.read_comm(os.getpid())
    assert procfs.find_comms([own])[os.getpid()] == own
    with pytest.raises(procfs.ProcfsError):
        procfs.find_comms([], str(tmp_path / 'missing'))


def test_read_task_of_a_captured_stat(tmp_path):
    root = fake_proc(tmp_path, 4641, {'stat': WORKER_STAT})
    fake_proc(tmp_path, 9, {'stat': WORKER_STAT.split(' 17 1 0 ')[0] + '\n'})

    assert procfs.read_task(4641, root) == procfs.Task('gunicorn: worke', False, procfs.read_stat(4641, root))
    with pytest.raises(procfs.ProcfsError, match='no exit_signal'):
        procfs.read_task(9, root)


def test_read_task_tells_a_thread_from_its_process():
    done = threading.Event()
    thread = threading.Thread(target=done.wait)
    thread.start()
    try:
        process, other = procfs.read_task(os.getpid()), procfs.read_task(thread.native_id)
    finally:
        done.set()
        thread.join()

    assert (process.thread, other.thread) == (False, True)
    assert process.comm == procfs.read_comm(os.getpid())
    assert process.stat.ppid == other.stat.ppid == os.getppid()


def test_list_pids_keeps_the_numeric_entries(tmp_path):
    for name in ('1', '22', 'self', 'net', '3x'):
        (tmp_path / name).mkdir()

    assert sorted(procfs.list_pids(str(tmp_path))) == [1, 22]
    assert os.getpid() in procfs.list_pids()
    with pytest.raises(procfs.ProcfsError):
        procfs.list_pids(str(tmp_path / 'missing'))


def test_read_last_pid(tmp_path):
    (tmp_path / 'loadavg').write_text('0.00 0.01 0.05 1/95 13584\n')
    assert procfs.read_last_pid(str(tmp_path)) == 13584

    (tmp_path / 'loadavg').write_text('0.00 0.01\n')
    with pytest.raises(procfs.ProcfsError, match='no last pid'):
        procfs.read_last_pid(str(tmp_path))


def test_last_pid_and_fork_count_move_when_a_process_starts():
    last, forks = procfs.read_last_pid(), procfs.read_fork_count()
    child, _ = child_process()
    stop_child(child)

    assert procfs.read_last_pid() != last
    assert procfs.read_fork_count() > forks


def test_read_fork_count(tmp_path):
    (tmp_path / 'stat').write_text('cpu  1 2 3\nintr 5 0 0\nctxt 99\nbtime 1\nprocesses 4242\nprocs_running 1\n')
    assert procfs.read_fork_count(str(tmp_path)) == 4242

    (tmp_path / 'stat').write_text('cpu  1 2 3\n')
    with pytest.raises(procfs.ProcfsError, match='no `processes` line'):
        procfs.read_fork_count(str(tmp_path))


def test_shows_own_pid_namespace(tmp_path):
    assert procfs.shows_own_pid_namespace()
    assert not procfs.shows_own_pid_namespace(str(tmp_path))
    (tmp_path / 'self').symlink_to('1')
    assert not procfs.shows_own_pid_namespace(str(tmp_path))


def test_read_run_time(tmp_path):
    root = fake_proc(tmp_path, 8, {'schedstat': '27420656 20942434 21\n'})

    assert procfs.read_run_time(8, root) == 27420656
    assert procfs.read_run_time(os.getpid()) > 0  # this process has run


@pytest.mark.parametrize('text', ['', 'soon 1 2\n'])
def test_read_run_time_rejects_garbage(tmp_path, text):
    root = fake_proc(tmp_path, 8, {'schedstat': text})

    with pytest.raises(procfs.ProcfsError, match='schedstat'):
        procfs.read_run_time(8, root)


def test_network_namespace_is_shared_within_one_and_errors_are_mapped():
    child = subprocess.Popen(['sleep', '30'])
    try:
        assert procfs.network_namespace(child.pid) == procfs.network_namespace('self')
    finally:
        child.kill()
        child.wait()

    with pytest.raises(psutil.NoSuchProcess):
        procfs.network_namespace(child.pid)
