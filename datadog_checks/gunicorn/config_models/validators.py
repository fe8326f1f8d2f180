# Validators the generated models call by name (`instance_<option>`); hand-written, kept on regeneration.

from ..sockets import parse_listener


def instance_proc_name(value, **kwargs):
    # A blank name would match `gunicorn: master [ ]`, never a real app: refuse it with the option's name.
    if isinstance(value, str) and not value.strip():
        raise ValueError('must name the gunicorn app as in `gunicorn: master [NAME]`, got a blank string')
    return value


def instance_listeners(value, **kwargs):
    # Parsed here so that a bad address fails the configuration, not every run.
    if isinstance(value, (list, tuple)):
        for address in value:
            parse_listener(address)
    return value
