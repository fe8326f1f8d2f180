from .__about__ import __version__
from .check import GunicornCheck

# The name the Agent's bundled integration exported; kept so existing imports work unchanged.
GUnicornCheck = GunicornCheck

__all__ = ['__version__', 'GunicornCheck', 'GUnicornCheck']
