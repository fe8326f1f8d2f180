"""Whether each worker is working or idle, from samples taken run after run."""

from .metrics import IDLE, WORKING


class CpuActivity:
    """A worker is working when its CPU time (user + system, all threads) advanced since the
    previous run's sample, idle otherwise. Nothing sleeps: the previous sample is the previous run.

    A worker seen for the first time has no previous sample and counts as idle: the check has
    no evidence yet that it works, and at an Agent restart this avoids reporting every worker
    busy because of the CPU it spent booting.
    """

    def __init__(self):
        self.last_cpu_ticks = {}  # Proc.key -> utime + stime at the previous run

    def states(self, workers):
        """Proc.key -> WORKING or IDLE for each worker, and remember this run's samples."""
        states = {}
        for worker in workers:
            previous = self.last_cpu_ticks.get(worker.key)
            advanced = previous is not None and worker.stat.cpu_ticks > previous
            states[worker.key] = WORKING if advanced else IDLE
        self.last_cpu_ticks = {worker.key: worker.stat.cpu_ticks for worker in workers}
        return states
