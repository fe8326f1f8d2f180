"""Plays gunicorn's process titles and layouts without gunicorn, for the ones no gunicorn makes
on demand: a child master of another app, and the moment a USR2 master is promoted while one
of its workers still shows the title it inherited.

Usage: `titles.py other-master NAME OTHER`, `titles.py promotion NAME` or
`titles.py orphaned-successor NAME`.
Every step reached is announced by one line on stdout; a step that waits for the test
reads one line from stdin. Processes never exit by themselves: the test kills the group.
"""

import os
import signal
import sys

from setproctitle import setproctitle


def title(text):
    setproctitle(f'gunicorn: {text}')


def announce(*words):
    # One write per line: lines of several processes sharing the pipe never interleave.
    os.write(sys.stdout.fileno(), (' '.join(map(str, words)) + '\n').encode())


def park():
    while True:
        signal.pause()


def fork_titled(text, then=None):
    """Fork a child that titles itself `gunicorn: TEXT`, runs `then` and stays; returns its pid
    once all that is done, so that the caller can announce a layout that is complete."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        title(text)
        if then:
            then()
        # A byte rather than EOF: the grandchildren `then` forked hold this end too.
        os.write(write_end, b'.')
        os.close(write_end)
        park()
    os.close(write_end)
    os.read(read_end, 1)
    os.close(read_end)
    return pid


def other_master(name, other):
    """`master [NAME]` with one worker and a child `master [OTHER]` that has two workers."""
    title(f'master [{name}]')
    worker = fork_titled(f'worker [{name}]')
    stranger = fork_titled(f'master [{other}]', then=lambda: [fork_titled(f'worker [{other}]') for _ in range(2)])
    announce('ready', worker, stranger)
    park()


def promotion(name):
    """A USR2 master `master [NAME.2]` forks a worker, then is promoted and retitles itself
    `master [NAME]` while the worker still shows `master [NAME.2]`: to a monitor, the worker
    looks like a USR2 master of the app. On a line from stdin, the worker takes its own title."""
    title(f'master [{name}.2]')
    go_read, go_write = os.pipe()
    worker = os.fork()
    if worker == 0:
        os.close(go_write)
        os.read(go_read, 1)
        title(f'worker [{name}.2]')
        announce('retitled', os.getpid())
        park()
    os.close(go_read)
    title(f'master [{name}]')
    announce('promoted', worker)
    sys.stdin.readline()
    os.write(go_write, b'.')
    park()


def orphaned_successor(name):
    """`master [NAME]` with a USR2 master `master [NAME.2]` under it, which has one worker. On a
    line from stdin the old master exits: for a moment, until gunicorn's next loop retitles
    it, the successor is a top-level `master [NAME.2]` serving the app."""
    title(f'master [{name}]')
    successor = fork_titled(f'master [{name}.2]', then=lambda: fork_titled(f'worker [{name}.2]'))
    announce('ready', successor)
    sys.stdin.readline()
    os._exit(0)


SCENARIOS = {'other-master': other_master, 'promotion': promotion, 'orphaned-successor': orphaned_successor}

if __name__ == '__main__':
    SCENARIOS[sys.argv[1]](*sys.argv[2:])
