"""Real gunicorn processes for the tests, on free 127.0.0.1 ports, always stopped by pid."""

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

APP_DIR = Path(__file__).parent / 'app'
# A `setproctitle` package that fails to import, put first on PYTHONPATH to run gunicorn
# as in an environment where setproctitle is missing.
NO_SETPROCTITLE_DIR = Path(__file__).parent / 'no_setproctitle'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=20.0, what='condition'):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout}s waiting for {what() if callable(what) else what}')
        time.sleep(0.05)


def title(proc):
    try:
        return ' '.join(part for part in proc.cmdline() if part)
    except psutil.Error:
        return ''


class GunicornServer:
    """One gunicorn master started with `python -m gunicorn`, and everything it spawns.

    `python` is the interpreter of the environment gunicorn runs from (tests/releases.py makes
    one per gunicorn release). gunicorn >= 25.1 serves a control socket unless told otherwise:
    this harness turns it off, or uses `control_socket=PATH`, or with
    `default_control_socket=True` leaves gunicorn's default as users get it, at
    `$XDG_RUNTIME_DIR/gunicorn.ctl` in a runtime folder private to this server
    (`default_control_socket_path`); releases without a control socket need this last one,
    as they reject `--no-control-socket`.
    """

    def __init__(
        self,
        log_dir,
        name='testapp',
        workers=2,
        worker_class='sync',
        args=(),
        app='sample:application',
        setproctitle=True,
        bind=None,
        control_socket=None,
        config_file=None,
        own_network_namespace=False,
        own_pid_namespace=False,
        cgroups=(),
        python=None,
        default_control_socket=False,
        stop_signal=signal.SIGQUIT,
        stop_timeout=10,
    ):
        if control_socket and default_control_socket:
            raise ValueError('control_socket=PATH and default_control_socket=True contradict each other')
        self.name = name
        self.workers_expected = workers
        self.port = free_port()
        self.bind = bind or f'127.0.0.1:{self.port}'
        self.error_log = Path(log_dir) / f'{name}-{self.port}-error.log'
        self.command = [
            str(python or sys.executable),
            '-m',
            'gunicorn',
            '--name',
            name,
            '--workers',
            str(workers),
            '--worker-class',
            worker_class,
            # From the command line unless a config file names it (a HUP re-reads only the file).
            *([] if config_file else ['--bind', self.bind]),
            *(['--config', str(config_file)] if config_file else []),
            '--chdir',
            str(APP_DIR),
            '--error-logfile',
            str(self.error_log),
            # Never gunicorn's plain default: every gunicorn >= 25.1 would share ~/.gunicorn/gunicorn.ctl.
            *self._control_socket_args(control_socket, default_control_socket),
            *args,
            app,
        ]
        if own_network_namespace or own_pid_namespace:
            # As gunicorn in a container: a network namespace of its own, with only loopback up;
            # a PID namespace of its own, where the master is PID 1 (unshare forks it and waits).
            # Without a PID namespace, unshare and sh exec in place: the pid stays the master's.
            unshare = ['unshare', *(['--net'] if own_network_namespace else [])]
            unshare += ['--pid', '--fork', '--mount-proc'] if own_pid_namespace else []
            setup = 'ip link set lo up && exec "$@"' if own_network_namespace else 'exec "$@"'
            self.command = [*unshare, 'sh', '-c', setup, 'sh', *self.command]
        if cgroups:
            # Moved into each cgroup (v1 hierarchies and v2) before anything starts, so that every
            # process of the server is born there, as in a container.
            join = 'while [ "$1" != -- ]; do echo $$ > "$1/cgroup.procs" || exit 97; shift; done; shift; exec "$@"'
            self.command = ['sh', '-c', join, 'sh', *map(str, cgroups), '--', *self.command]
        self.own_pid_namespace = own_pid_namespace
        self._master_pid = None
        self.env = dict(os.environ)
        self.default_control_socket = default_control_socket
        self.runtime_dir = None
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        if not setproctitle:
            paths = [str(NO_SETPROCTITLE_DIR), os.environ.get('PYTHONPATH')]
            self.env['PYTHONPATH'] = os.pathsep.join(filter(None, paths))
        self.popen = None
        self.started = {}  # pid -> psutil.Process: every process seen under this server, stopped at the end

    @staticmethod
    def _control_socket_args(path, default):
        if default:
            return []
        return ['--control-socket', str(path)] if path else ['--no-control-socket']

    @property
    def default_control_socket_path(self):
        """Where gunicorn >= 25.1 puts its control socket when left to its default."""
        return self.runtime_dir / 'gunicorn.ctl' if self.runtime_dir else None

    # Lifecycle

    def start(self, wait=True):
        if self.default_control_socket and self.runtime_dir is None:
            # Made here, as stop() removes it. Short, under /tmp: a Unix socket path longer than
            # 107 bytes cannot be bound, and pytest's tmp_path of a long parametrized test nears it.
            self.runtime_dir = Path(tempfile.mkdtemp(prefix='gunicorn-run-'))
            self.env['XDG_RUNTIME_DIR'] = str(self.runtime_dir)
        self.popen = subprocess.Popen(self.command, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.started[self.popen.pid] = psutil.Process(self.popen.pid)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, workers=None, master=None):
        expected = self.workers_expected if workers is None else workers
        wait_until(
            lambda: len(self.workers(master)) == expected and self.listening(),
            what=lambda: f'{expected} workers of {self.name} and a listening socket (log: {self.log_tail()})',
        )

    def stop(self):
        """SIGQUIT (gunicorn's quick shutdown: requests in flight are cut), or `stop_signal`
        for a worker class that ignores it, then SIGKILL after `stop_timeout` seconds, to
        every process this server ever had, by pid."""
        if self.popen is not None:  # None: never started, or its command could not be run
            self.track()
            procs = [p for p in self.started.values() if p.is_running()]
            alive = self._signal_until_exited(procs, self.stop_signal, self.stop_timeout)
            self._signal_until_exited(alive, signal.SIGKILL, 5)
            self.popen.wait(timeout=5)
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def _signal_until_exited(self, procs, sig, timeout):
        """The processes still running after `timeout`. The signal is sent again every second:
        a worker still booting (the gevent one takes a moment to import and patch) runs the
        master's handlers, inherited at the fork, which drop it."""
        deadline = time.monotonic() + timeout
        alive = procs
        while alive and time.monotonic() < deadline:
            for proc in alive:
                try:
                    proc.send_signal(sig)
                except psutil.Error:
                    pass
            again = min(time.monotonic() + 1, deadline)
            while alive and time.monotonic() < again:
                time.sleep(0.05)
                alive = [p for p in alive if not self._exited(p)]
        return alive

    def _exited(self, proc):
        if self.popen is not None and proc.pid == self.popen.pid:
            return self.popen.poll() is not None
        try:
            if not proc.is_running():  # gone, or its pid already reused
                return True
            if proc.status() != psutil.STATUS_ZOMBIE:
                return False
            # Dead. A worker that outlived its master is an orphan the tests' subreaper
            # inherited: reaped here, or it would stay a zombie (psutil.wait_procs only polls
            # a pid that was not a child when it started waiting, and a zombie's pid exists).
            if proc.ppid() == os.getpid():
                os.waitpid(proc.pid, os.WNOHANG)
            return True
        except (psutil.NoSuchProcess, ChildProcessError):
            return True

    # What the server looks like from outside

    @property
    def master_pid(self):
        if not self.own_pid_namespace:
            return self.popen.pid
        if self._master_pid is None:
            # unshare --fork: the master is unshare's only child, PID 1 of its namespace.
            wait_until(lambda: self.popen.poll() is not None or self._forked(), what='unshare to fork')
            if not self._forked():
                return self.popen.pid  # unshare failed: nothing else to find or stop
            self._master_pid = self._forked()[0].pid
            self.started.setdefault(self._master_pid, psutil.Process(self._master_pid))
        return self._master_pid

    def _forked(self):
        try:
            return psutil.Process(self.popen.pid).children()
        except psutil.NoSuchProcess:
            return []

    def descendants(self, pid=None):
        try:
            children = psutil.Process(pid or self.master_pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return children

    def track(self, pid=None):
        for proc in self.descendants(pid):
            self.started.setdefault(proc.pid, proc)

    def workers(self, master=None):
        """The master's children titled as workers; tracks them for the teardown."""
        try:
            children = psutil.Process(master or self.master_pid).children()
        except psutil.NoSuchProcess:
            return []
        if self.env.get('PYTHONPATH', '').startswith(str(NO_SETPROCTITLE_DIR)):
            workers = children  # untitled: every child is a worker, as no title says otherwise
        else:
            workers = [c for c in children if title(c).startswith('gunicorn: worker [')]
        for worker in workers:
            self.started.setdefault(worker.pid, worker)
        return workers

    def connect(self, timeout=30):
        """A client socket connected to the bind address, TCP or `unix:PATH`."""
        if self.bind.startswith('unix:'):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(self.bind[5:])
            except OSError:
                sock.close()
                raise
            return sock
        host, port = self.bind.rsplit(':', 1)
        return socket.create_connection((host.strip('[]'), int(port)), timeout=timeout)

    def listening(self):
        """Whether the master listens yet. Asked without connecting: a probe connection would
        keep a worker busy for a moment and the check would rightly count it as working.
        Read from the master's own /proc/PID/net, which holds in any network namespace."""
        if self.bind.startswith('unix:'):
            return Path(self.bind[5:]).is_socket()
        port = f':{int(self.bind.rsplit(":", 1)[1]):04X}'
        for table in ('tcp', 'tcp6'):
            try:
                lines = Path(f'/proc/{self.master_pid}/net/{table}').read_text().splitlines()[1:]
            except OSError:
                return False
            if any(fields[1].endswith(port) and fields[3] == '0A' for fields in map(str.split, lines)):
                return True
        return False

    def log_tail(self, lines=5):
        try:
            return ' | '.join(self.error_log.read_text().splitlines()[-lines:])
        except OSError:
            return '(no log yet)'

    # Driving it

    def signal(self, sig, pid=None):
        os.kill(pid or self.master_pid, sig)

    def get(self, path, timeout=30):
        conn = http.client.HTTPConnection('localhost', timeout=timeout)
        conn.sock = self.connect(timeout)
        try:
            conn.request('GET', path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def get_in_background(self, path):
        """Start a request in a thread; join the returned thread to wait for its answer."""
        thread = threading.Thread(target=self._get_quietly, args=(path,), daemon=True)
        thread.start()
        return thread

    def _get_quietly(self, path):
        try:
            self.get(path)
        except OSError:
            pass  # the test may stop the server while the request is in flight
