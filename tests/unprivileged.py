"""Run a function in a forked child that dropped to `nobody`, as an Agent that is not root.

A fork rather than an exec: the interpreter under /root is not executable by nobody,
and the child keeps every module the parent imported. The kernel then checks each
/proc read against nobody's rights, exactly as it does for an unprivileged Agent.
"""

import os
import pickle
import pwd
import traceback

NOBODY = pwd.getpwnam('nobody')


def run_as_nobody(function, *args):
    """function(*args) as nobody; its result or its exception comes back pickled."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        try:
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            outcome = ('ok', function(*args))
        except BaseException as e:  # everything must go back to the parent
            outcome = ('error', f'{type(e).__name__}: {e}\n{traceback.format_exc()}')
        with os.fdopen(write_end, 'wb') as pipe:
            pickle.dump(outcome, pipe)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, 'rb') as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    status, value = pickle.loads(data)
    if status == 'error':
        raise AssertionError(f'as nobody: {value}')
    return value
