raise ImportError('setproctitle is hidden from this gunicorn by the tests (tests/server.py)')
