import time
from typing import NamedTuple

import psutil

from datadog_checks.base import AgentCheck
from datadog_checks.base.agent import datadog_agent

from . import metrics, procfs
from .config_models import ConfigMixin
from .containers import container_tags, tag_cardinality
from .control import ControlError, read_stats
from .diagnose import diagnose_master, diagnose_network_namespaces, diagnose_visibility, diagnose_worker_fds
from .discovery import MASTER_TITLE, Discovery
from .sockets import Sockets, parse_listener
from .version import Versions
from .workers import FdTables, WorkerHistory, heartbeat_age, read_worker_fds, requests_in_flight, worker_states

FDS_DENIED = (
    'Cannot read /proc/<PID>/fd of the gunicorn workers: busy workers are counted by CPU time, which '
    'misses workers waiting on I/O, and heartbeat ages are unknown{listeners}. Run the Agent as root or as '
    "gunicorn's user, or give it CAP_SYS_PTRACE, for exact counts."
)


class PoolState(NamedTuple):
    """What is kept between runs for one pool: the masters of one app in one container (or on
    the host), which report as one series."""

    sockets: Sockets
    history: WorkerHistory


class GunicornCheck(AgentCheck, ConfigMixin):
    """One run: find the app's masters and workers, sample them, submit.

    The core signal, `gunicorn.workers` and `gunicorn.is_running`, needs only discovery.
    Everything else is an optional part, run through `optional_part`: whatever goes wrong
    in one costs only that part's data, and says so in a warning that names it.
    """

    def __init__(self, name, init_config, instances):
        super().__init__(name, init_config, instances)
        # Built from the validated configuration before the first run, so that a bad
        # configuration is reported by run() as the Agent shows it, not as a load error.
        self.root = None
        self.boot_time = None
        self.instance_tags = None  # app:NAME (when proc_name is set) and the user's tags
        self.cardinality = None
        self.discovery = None
        self.listeners = None
        self.pools = {}  # (app, container) -> PoolState, of the pools seen at the previous run
        self.versions = None
        self.fd_tables = None  # the workers' fds, kept between runs
        self.submitted_version = None
        self.problems = set()  # lasting conditions reported at the previous run
        self.problems_now = set()  # ... and at this one
        self.check_initializations.append(self.build_state)
        self.diagnosis.register(self.diagnose)

    def build_state(self):
        config = self.config
        # A containerized Agent sees the host's processes under the `procfs_path` of datadog.yaml
        # (/host/proc); psutil's scans must read the same tree as the check's own readers.
        procfs_path = datadog_agent.get_config('procfs_path')
        if procfs_path:
            psutil.PROCFS_PATH = procfs_path.rstrip('/')
        self.root = root = psutil.PROCFS_PATH
        self.boot_time = psutil.boot_time()
        self.instance_tags = [*([f'app:{config.proc_name}'] if config.proc_name else []), *(config.tags or ())]
        self.cardinality = tag_cardinality(datadog_agent.get_config('checks_tag_cardinality'))
        self.discovery = Discovery(config.proc_name, config.rescan_interval, root, config.pod_uid)
        self.listeners = [parse_listener(address) for address in config.listeners or ()]
        self.fd_tables = FdTables(root)
        # The instance's command first, then init_config's, as the bundled check looked it up.
        self.versions = Versions(config.gunicorn or self.shared_config.gunicorn, self.log, root)

    def diagnose(self):
        """What `datadog-agent diagnose` shows; it may run before the first check run."""
        try:
            self.run_check_initializations()
        except Exception as e:
            self.diagnosis.fail(
                'gunicorn configuration', str(e), remediation='Correct the option named above in gunicorn.d/conf.yaml.'
            )
            return
        diagnose_visibility(self)
        snapshot = diagnose_master(self)
        diagnose_worker_fds(self, snapshot)
        diagnose_network_namespaces(self, snapshot)

    def check(self, _):
        self.problems, self.problems_now = self.problems_now, set()
        try:
            self.run_once()
        finally:
            for problem in self.problems - self.problems_now:
                self.log.info('No longer the case: %s', problem)

    def run_once(self):
        now = time.monotonic()
        snapshot = self.discovery.run(now)
        for problem in snapshot.problems:
            self.report(problem)
        pools = snapshot.pools()
        for key in self.pools.keys() - pools.keys():
            self.pools[key].sockets.close()
        self.pools = {key: self.pools.get(key) or self.new_pool_state() for key in pools}
        if not pools:
            self.submit_absent()
        control_ages = []
        if self.config.control_socket:
            control_ages = self.optional_part('Control socket metrics', self.submit_control, default=[])
        for key, pool in pools.items():
            # The control socket speaks for one master: its heartbeats stand in only for a lone pool's.
            self.run_pool(pool, self.pools[key], now, control_ages if len(pools) == 1 else [])
        self.optional_part('Version metadata', self.submit_version, snapshot.masters)
        self.fd_tables.sweep()

    def new_pool_state(self):
        return PoolState(Sockets(self.listeners, self.root), WorkerHistory())

    def run_pool(self, pool, state, now, control_ages):
        """The series of one pool, tagged with its app and, in a container, the container's tags."""
        tags = [f'app:{pool.app}', *(self.config.tags or ())]
        if pool.container is not None:
            tags += self.optional_part(
                'Container tags', container_tags, pool.container, self.cardinality, default=[]
            ) or [f'container_id:{pool.container.id}']
        fds_by_key = self.optional_part('Worker fd metrics', self.read_fds, pool.workers, default={})
        fds_complete = len(fds_by_key) == len(pool.workers)
        connections = self.optional_part(
            'Listener metrics',
            self.submit_sockets,
            state.sockets,
            pool.masters,
            fds_by_key,
            fds_complete,
            tags,
            default={},
        )

        change = state.history.compare(pool.workers, now)
        states = worker_states(pool.workers, fds_by_key, connections, change.cpu_advanced)
        working = sum(1 for state in states.values() if state == metrics.WORKING)
        self.gauge(metrics.WORKERS, working, tags=[*tags, f'state:{metrics.WORKING}'])
        self.gauge(metrics.WORKERS, len(states) - working, tags=[*tags, f'state:{metrics.IDLE}'])
        self.submit_is_running(pool, tags)

        self.optional_part('Worker pool metrics', self.submit_pool, pool, change, tags)
        heartbeat_ages = self.optional_part(
            'Heartbeat metrics', self.heartbeat_ages, pool.workers, fds_by_key, default=[]
        )
        heartbeat_ages = heartbeat_ages or control_ages
        if heartbeat_ages:
            self.gauge(metrics.WORKER_HEARTBEAT_AGE_MAX, max(heartbeat_ages), tags=tags)

    def optional_part(self, part, collect, *args, default=None):
        """`collect(*args)`, or `default` when it raises. Its own expected failures (an unreadable
        file, a socket that answers garbage) a part reports itself; anything else is a bug or
        a case nobody foresaw: it is shown as `PART skipped: ...` at every run while it lasts,
        and logged with its traceback when it starts."""
        try:
            return collect(*args)
        except Exception as e:
            self.report(f'{part} skipped: {type(e).__name__}: {e}', log=self.log.exception)
            return default

    def report(self, problem, log=None):
        """A condition that holds now: shown in the Agent status at every run while it holds, so
        the instance never reads OK over it, but logged only when it starts, by `log`
        (self.log.warning unless given)."""
        if problem not in self.problems:
            (log or self.log.warning)(problem)
        self.warnings.append(problem)
        self.problems_now.add(problem)

    def heartbeat_ages(self, workers, fds_by_key):
        wall_now = time.time()
        ages = (heartbeat_age(fds_by_key[w.key], wall_now) for w in workers if w.key in fds_by_key)
        return [age for age in ages if age is not None]

    def read_fds(self, workers):
        """Proc.key -> WorkerFds for the workers whose fds the Agent may read."""
        fds_by_key = {}
        denied = False
        for worker in workers:
            try:
                fds_by_key[worker.key] = read_worker_fds(worker, self.fd_tables)
            except psutil.AccessDenied:
                denied = True
            except psutil.NoSuchProcess:
                continue
        if denied:
            listeners = '' if self.config.listeners else '; set `listeners` for the backlog metrics'
            self.report(FDS_DENIED.format(listeners=listeners))
        return fds_by_key

    def submit_pool(self, pool, change, tags):
        if change.started is not None:
            self.count(metrics.WORKERS_STARTED, change.started, tags=tags)
        if change.cpu_percent is not None:
            self.gauge(metrics.WORKER_CPU, change.cpu_percent, tags=tags)
        if pool.workers:
            rss = [worker.stat.rss_bytes for worker in pool.workers]
            self.gauge(metrics.WORKER_RSS_SUM, sum(rss), tags=tags)
            self.gauge(metrics.WORKER_RSS_MAX, max(rss), tags=tags)
        newest = max(master.stat.start_ticks for master in pool.masters)
        uptime = time.time() - self.boot_time - newest / procfs.CLOCK_TICKS
        self.gauge(metrics.MASTER_UPTIME, max(0.0, uptime), tags=tags)

    def submit_sockets(self, sockets, masters, fds_by_key, fds_complete, tags):
        """Listener and connection metrics; returns the connections the workers hold, by inode."""
        sample = sockets.sample(masters, fds_by_key, fds_complete)
        for problem in sample.problems:
            self.report(problem)
        for stats in sample.listeners:
            listener_tags = [*tags, f'listener:{stats.listener.address}']
            self.gauge(metrics.LISTENER_QUEUED, stats.queued, tags=listener_tags)
            self.gauge(metrics.LISTENER_ACTIVE, stats.active, tags=listener_tags)
        if sample.listeners:
            self.gauge(metrics.CONNECTIONS_ACTIVE, sum(s.active for s in sample.listeners), tags=tags)
        if sample.listeners and fds_complete:
            in_flight = requests_in_flight(fds_by_key, sample.connections)
            self.gauge(metrics.REQUESTS_IN_FLIGHT, in_flight, tags=tags)
        return sample.connections

    def submit_control(self):
        """The master's own counters; returns its workers' heartbeat ages."""
        path = self.config.control_socket
        try:
            stats = read_stats(path)
        except ControlError as e:
            self.report(f"Cannot read gunicorn's control socket {path}: {e}")
            return []
        tags = self.instance_tags
        self.gauge(metrics.MASTER_WORKERS_TARGET, stats.workers_target, tags=tags)
        self.monotonic_count(metrics.MASTER_WORKERS_SPAWNED, stats.workers_spawned, tags=tags)
        self.monotonic_count(metrics.MASTER_WORKERS_KILLED, stats.workers_killed, tags=tags)
        self.monotonic_count(metrics.MASTER_RELOADS, stats.reloads, tags=tags)
        return stats.heartbeat_ages

    def submit_absent(self):
        """No master in scope: the core signal still says so, under the instance's tags."""
        config = self.config
        scope = f' in pod {config.pod_uid}' if config.pod_uid else ''
        if config.proc_name:
            message = f'No process titled `{MASTER_TITLE.format(config.proc_name)}` is running{scope}.'
            hint = (
                "Without the setproctitle package in the app's environment, gunicorn keeps its command line as "
                'its title and cannot be told apart.'
            )
        else:
            message = f'No gunicorn master is running{scope}.'
            hint = 'gunicorn masters are found by their title `gunicorn: master [NAME]`, which needs setproctitle.'
        self.report(f'{message} {hint}')
        tags = self.instance_tags
        self.gauge(metrics.WORKERS, 0, tags=[*tags, f'state:{metrics.WORKING}'])
        self.gauge(metrics.WORKERS, 0, tags=[*tags, f'state:{metrics.IDLE}'])
        self.service_check(metrics.SERVICE_CHECK_RUNNING, self.CRITICAL, tags=tags, message=message)

    def submit_is_running(self, pool, tags):
        if pool.workers:
            self.service_check(metrics.SERVICE_CHECK_RUNNING, self.OK, tags=tags)
            return
        pids = ', '.join(str(master.pid) for master in pool.masters)
        message = f'The gunicorn master ({pids}) is running but has no workers.'
        self.service_check(metrics.SERVICE_CHECK_RUNNING, self.CRITICAL, tags=tags, message=message)

    def submit_version(self, masters):
        if not self.is_metadata_collection_enabled():
            return
        version, problem = self.versions.newest(masters)
        if problem:
            self.report(problem)
        if version and version != self.submitted_version:
            self.set_metadata('version', version)
            self.submitted_version = version
