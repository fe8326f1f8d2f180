"""Every name the check submits, so that a name on a dashboard leads here in one hop."""

WORKERS = 'gunicorn.workers'  # gauge, tagged state:working|idle
SERVICE_CHECK_RUNNING = 'gunicorn.is_running'

WORKING = 'working'
IDLE = 'idle'
