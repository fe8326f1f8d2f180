# Validators the generated models call by name (`instance_<option>`); hand-written, kept on regeneration.

from ..containers import POD_UID_FORMAT
from ..sockets import parse_listener
from ..version import command_words
from . import defaults


def initialize_instance(values, **kwargs):
    return empty_options_take_defaults(values, 'instance')


def initialize_shared(values, **kwargs):
    return empty_options_take_defaults(values, 'shared')


def empty_options_take_defaults(values, model_id):
    # `rescan_interval:` with nothing after it is None in YAML, and the generated models give an
    # option its default only when it is absent: an empty one would run as None. Options
    # without a default already treat None as unset.
    filled = dict(values)
    for option, value in values.items():
        default = getattr(defaults, f'{model_id}_{option}', None)
        if value is None and default is not None:
            filled[option] = default()
    return filled


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


def instance_gunicorn(value, **kwargs):
    # Split here so that an unbalanced quote fails the configuration, naming the option.
    if isinstance(value, str):
        command_words(value)
    return value


shared_gunicorn = instance_gunicorn


def instance_pod_uid(value, **kwargs):
    # An unfilled template variable would scope the instance to no pod at all, silently.
    if isinstance(value, str) and not POD_UID_FORMAT.fullmatch(value):
        raise ValueError(
            f'{value!r} is not a Kubernetes pod uid (8-4-4-4-12 hex digits); in an Autodiscovery '
            'template, `%%kube_pod_uid%%` is filled only for a pod'
        )
    return value
