"""The /proc readers on captured text, malformed input included."""

import psutil
import pytest

from datadog_checks.gunicorn import procfs

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
