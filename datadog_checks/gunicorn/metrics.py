"""Every name the check submits, so that a name on a dashboard leads here in one hop.

None of these may collide with what gunicorn's own StatsD sends (gunicorn.requests,
gunicorn.request.*, gunicorn.log.*, gunicorn.backlog); gunicorn.workers is shared on
purpose, as the bundled check did: StatsD sends it untagged, the check with `state:`.
"""

SERVICE_CHECK_RUNNING = 'gunicorn.is_running'

# Worker pool, from the process table (workers.py, discovery.py)
WORKERS = 'gunicorn.workers'  # gauge, tagged state:working|idle
WORKERS_STARTED = 'gunicorn.worker.started'  # count: worker pids not seen at the previous run
WORKER_RSS_SUM = 'gunicorn.worker.memory.rss.sum'  # gauge, bytes
WORKER_RSS_MAX = 'gunicorn.worker.memory.rss.max'  # gauge, bytes
WORKER_CPU = 'gunicorn.worker.cpu.utilization'  # gauge, percent of one core, all workers together
WORKER_HEARTBEAT_AGE_MAX = 'gunicorn.worker.heartbeat.age.max'  # gauge, seconds since the stalest heartbeat
MASTER_UPTIME = 'gunicorn.master.uptime'  # gauge, seconds, of the most recently started master

# Sockets, from the kernel's socket tables (sockets.py, sockdiag.py) and the workers' fds
CONNECTIONS_ACTIVE = 'gunicorn.connections.active'  # gauge: client connections held by workers
REQUESTS_IN_FLIGHT = 'gunicorn.requests.in_flight'  # gauge: requests being served, keep-alive waits excluded
LISTENER_QUEUED = 'gunicorn.listener.queued'  # gauge, tagged listener:ADDRESS: accept queue
LISTENER_ACTIVE = 'gunicorn.listener.active'  # gauge, tagged listener:ADDRESS: accepted, not closed

# Master's own counters, from the control socket (control.py), gunicorn >= 25.1
MASTER_WORKERS_TARGET = 'gunicorn.master.workers.target'  # gauge
MASTER_WORKERS_SPAWNED = 'gunicorn.master.workers.spawned'  # monotonic count
MASTER_WORKERS_KILLED = 'gunicorn.master.workers.killed'  # monotonic count
MASTER_RELOADS = 'gunicorn.master.reloads'  # monotonic count

WORKING = 'working'
IDLE = 'idle'
