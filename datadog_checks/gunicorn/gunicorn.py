"""The import path of the Agent's bundled gunicorn check, kept so that code written against it
(`from datadog_checks.gunicorn.gunicorn import GUnicornCheck`) keeps working."""

from .check import GunicornCheck

GUnicornCheck = GunicornCheck


class GUnicornCheckError(Exception):
    """Raised by the bundled check for an instance without `proc_name`. This check reports a bad
    configuration through the Agent instead, so nothing raises it; `except` clauses naming it stay valid."""
