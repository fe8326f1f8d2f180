"""The /proc readers on captured text, malformed input included."""

import os
import socket

import psutil
import pytest

from datadog_checks.gunicorn import procfs, sockdiag

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
            procfs.read_mapped_paths(1)
        except psutil.AccessDenied:
            return 'AccessDenied'

    assert run_as_nobody(read_init_maps) == 'AccessDenied'


def test_read_children_joins_every_thread(tmp_path):
    root = fake_proc(tmp_path, 10, {'task/10/children': '11 12 ', 'task/13/children': '14 '})

    assert sorted(procfs.read_children(10, root)) == [11, 12, 14]


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


def test_read_mapped_paths_keeps_file_paths_only(tmp_path):
    maps = (
        '55d0c4a00000-55d0c4a01000 r--p 00000000 fd:01 1 /usr/bin/python3.11\n'
        '7f1c2d000000-7f1c2d001000 r-xp 00001000 fd:01 2 /venv/lib/python3.11/site-packages/'
        'setproctitle/_setproctitle.cpython-311-x86_64-linux-gnu.so\n'
        '7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0 [stack]\n'
        '7f1c2e000000-7f1c2e100000 rw-p 00000000 00:00 0\n'
        '7f1c2f000000-7f1c2f001000 r--p 00000000 fd:01 3 /tmp/with space.so (deleted)\n'
    )
    root = fake_proc(tmp_path, 6, {'maps': maps})

    assert procfs.read_mapped_paths(6, root) == {
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
        assert os.fstat(sock.fileno()).st_ino in procfs.socket_inodes(links)


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
