from .__about__ import __version__
from .check import GunicornCheck
from .gunicorn import GUnicornCheck

__all__ = ['__version__', 'GunicornCheck', 'GUnicornCheck']
