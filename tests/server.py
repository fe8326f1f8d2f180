"""Real gunicorn processes for the tests, on free 127.0.0.1 ports, always stopped by pid."""

import http.client
import os
import signal
import socket
import subprocess
import sys
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
    """One gunicorn master started with `python -m gunicorn`, and everything it spawns."""

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
    ):
        self.name = name
        self.workers_expected = workers
        self.port = free_port()
        self.bind = bind or f'127.0.0.1:{self.port}'
        self.error_log = Path(log_dir) / f'{name}-{self.port}-error.log'
        self.command = [
            sys.executable,
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
            # Every gunicorn >= 25.1 would otherwise share ~/.gunicorn/gunicorn.ctl.
            *(['--control-socket', str(control_socket)] if control_socket else ['--no-control-socket']),
            *args,
            app,
        ]
        if own_network_namespace:
            # As gunicorn in a container: a network namespace of its own, with only loopback, up.
            # unshare and sh exec in place, so the pid stays the master's.
            self.command = ['unshare', '--net', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh', *self.command]
        self.env = dict(os.environ)
        if not setproctitle:
            paths = [str(NO_SETPROCTITLE_DIR), os.environ.get('PYTHONPATH')]
            self.env['PYTHONPATH'] = os.pathsep.join(filter(None, paths))
        self.popen = None
        self.started = {}  # pid -> psutil.Process: every process seen under this server, stopped at the end

    # Lifecycle

    def start(self, wait=True):
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
        """SIGQUIT (gunicorn's quick shutdown: requests in flight are cut), then SIGKILL, to
        every process this server ever had, by pid."""
        self.track()
        procs = [p for p in self.started.values() if p.is_running()]
        for proc in procs:
            try:
                proc.send_signal(signal.SIGQUIT)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
        if self.popen is not None:
            self.popen.wait(timeout=5)

    # What the server looks like from outside

    @property
    def master_pid(self):
        return self.popen.pid

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
