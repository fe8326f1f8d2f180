import time

import psutil

from datadog_checks.base import AgentCheck

from . import metrics
from .config_models import ConfigMixin
from .discovery import MASTER_TITLE, Discovery
from .version import Versions
from .workers import CpuActivity


class GunicornCheck(AgentCheck, ConfigMixin):
    """One run: find the app's masters and workers, tell working from idle, submit."""

    def __init__(self, name, init_config, instances):
        super().__init__(name, init_config, instances)
        # Built from the validated configuration before the first run, so that a bad
        # configuration is reported by run() as the Agent shows it, not as a load error.
        self.app_tags = None
        self.discovery = None
        self.activity = None
        self.versions = None
        self.submitted_version = None
        self.check_initializations.append(self.build_state)

    def build_state(self):
        config = self.config
        self.app_tags = [f'app:{config.proc_name}', *(config.tags or ())]
        self.discovery = Discovery(config.proc_name, config.rescan_interval, psutil.PROCFS_PATH)
        self.activity = CpuActivity()
        self.versions = Versions(config.gunicorn, self.log, psutil.PROCFS_PATH)

    def check(self, _):
        snapshot = self.discovery.run(time.monotonic())
        for problem in snapshot.problems:
            self.warning(problem)

        states = self.activity.states(snapshot.workers)
        working = sum(1 for state in states.values() if state == metrics.WORKING)
        self.gauge(metrics.WORKERS, working, tags=[*self.app_tags, f'state:{metrics.WORKING}'])
        self.gauge(metrics.WORKERS, len(states) - working, tags=[*self.app_tags, f'state:{metrics.IDLE}'])

        self.submit_is_running(snapshot)
        self.submit_version(snapshot.masters)

    def submit_is_running(self, snapshot):
        if not snapshot.masters:
            message = f'No process titled `{MASTER_TITLE.format(self.config.proc_name)}` is running.'
            self.warning(
                '%s Without the setproctitle package in the app\'s environment, gunicorn keeps its '
                'command line as its title and cannot be told apart.',
                message,
            )
            self.service_check(metrics.SERVICE_CHECK_RUNNING, self.CRITICAL, tags=self.app_tags, message=message)
        elif not snapshot.workers:
            pids = ', '.join(str(master.pid) for master in snapshot.masters)
            message = f'The gunicorn master ({pids}) is running but has no workers.'
            self.service_check(metrics.SERVICE_CHECK_RUNNING, self.CRITICAL, tags=self.app_tags, message=message)
        else:
            self.service_check(metrics.SERVICE_CHECK_RUNNING, self.OK, tags=self.app_tags)

    def submit_version(self, masters):
        if not self.is_metadata_collection_enabled():
            return
        version, problem = self.versions.newest(masters)
        if problem:
            self.warning(problem)
        if version and version != self.submitted_version:
            self.set_metadata('version', version)
            self.submitted_version = version
