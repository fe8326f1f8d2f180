"""Run a Datadog log pipeline definition (assets/logs/<name>.yaml) on one log message.

Processors (only those the gunicorn pipeline uses):
    grok-parser         see grok.py; `source: message` parses the message, any other
                        source an attribute, when it is a string
    url-parser          `http.url_details`: scheme, host, port, path, queryString
                        (values not decoded: Datadog keeps `%20` as is)
    user-agent-parser   see useragent.py
    date-remapper       the first source attribute holding epoch milliseconds becomes
                        the log's timestamp
    category-processor  the first category whose query matches sets the target; queries
                        are `*`, `@attr:value` or `@attr:[low TO high]`
    status-remapper     the first source attribute present sets the status, with Datadog's
                        mapping (see `status_of`)

The result has the shape of Datadog's `<name>_tests.yaml` results: `custom` (the
attributes), `message`, `status`, `tags` and, when a date was remapped, `timestamp`.
"""

import copy
import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from . import useragent
from .grok import GrokParser, get_path, set_path

TAGS = ['source:LOGS_SOURCE']  # what Datadog's test results show for the source tag


class PipelineError(ValueError):
    """A pipeline definition this evaluator cannot run, or a value a processor cannot take."""


class Pipeline:
    def __init__(self, definition):
        if definition.get('type') != 'pipeline':
            raise PipelineError(f'expected a definition of type "pipeline", got {definition.get("type")!r}')
        self.name = definition.get('name')
        self.filter_query = (definition.get('filter') or {}).get('query')
        self.processors = [
            _make_processor(processor, index)
            for index, processor in enumerate(definition.get('processors') or [])
            if processor.get('enabled', True)
        ]

    @classmethod
    def from_file(cls, path):
        document = yaml.safe_load(Path(path).read_text())
        return cls(document['pipeline'])

    @property
    def grok_parsers(self):
        return [p for p in self.processors if isinstance(p, GrokProcessor)]

    def process(self, message):
        log = {'custom': {}, 'message': message, 'status': 'info', 'tags': list(TAGS)}
        for processor in self.processors:
            processor.run(log)
        return log


class GrokProcessor:
    def __init__(self, spec):
        self.name = spec.get('name')
        self.source = spec['source']
        self.samples = spec.get('samples') or []
        grok = spec.get('grok') or {}
        self.parser = GrokParser(grok.get('supportRules', ''), grok.get('matchRules', ''))

    def run(self, log):
        text = log['message'] if self.source == 'message' else get_path(log['custom'], self.source)
        if not isinstance(text, str):
            return
        match = self.parser.parse(text)
        if match:
            _merge(log['custom'], match.attributes)


class UrlParser:
    def __init__(self, spec):
        self.sources = spec['sources']
        self.target = spec['target']

    def run(self, log):
        url = _first(log['custom'], self.sources)
        if not isinstance(url, str):
            return
        parts = urlsplit(url)
        details = {}
        if parts.scheme:
            details['scheme'] = parts.scheme
        if parts.hostname:
            details['host'] = parts.hostname
        if parts.port is not None:
            details['port'] = parts.port
        if parts.path:
            details['path'] = parts.path
        if parts.query:
            details['queryString'] = _query(parts.query)
        set_path(log['custom'], self.target, details)


class UserAgentParser:
    def __init__(self, spec):
        self.sources = spec['sources']
        self.target = spec['target']
        if spec.get('encoded'):
            raise PipelineError('user-agent-parser: encoded user agents are not supported')

    def run(self, log):
        value = _first(log['custom'], self.sources)
        if isinstance(value, str):
            set_path(log['custom'], self.target, useragent.parse(value))


class DateRemapper:
    def __init__(self, spec):
        self.sources = spec['sources']

    def run(self, log):
        for source in self.sources:
            value = get_path(log['custom'], source)
            if value is None:
                continue
            if not isinstance(value, int):
                raise PipelineError(f'date-remapper: {source}={value!r} is not epoch milliseconds')
            log['timestamp'] = value
            return


class CategoryProcessor:
    def __init__(self, spec):
        self.target = spec['target']
        self.categories = [(_compile_query(c['filter']['query']), c['name']) for c in spec['categories']]

    def run(self, log):
        for matches, name in self.categories:
            if matches(log['custom']):
                set_path(log['custom'], self.target, name)
                return


class StatusRemapper:
    def __init__(self, spec):
        self.sources = spec['sources']

    def run(self, log):
        value = _first(log['custom'], self.sources)
        if value is not None:
            log['status'] = status_of(value)


PROCESSORS = {
    'grok-parser': GrokProcessor,
    'url-parser': UrlParser,
    'user-agent-parser': UserAgentParser,
    'date-remapper': DateRemapper,
    'category-processor': CategoryProcessor,
    'status-remapper': StatusRemapper,
}


def _make_processor(spec, index):
    kind = spec.get('type')
    if kind not in PROCESSORS:
        raise PipelineError(
            f'processor #{index} ({spec.get("name")!r}): unsupported type {kind!r} '
            f'(supported: {", ".join(sorted(PROCESSORS))})'
        )
    try:
        return PROCESSORS[kind](spec)
    except KeyError as e:
        raise PipelineError(f'processor #{index} ({kind}): missing field {e}') from e


SEVERITIES = ('emerg', 'alert', 'critical', 'error', 'warn', 'notice', 'info', 'debug')


def status_of(value):
    """Datadog's status remapper: syslog severities 0-7, else by the start of the (case-insensitive) string."""
    if isinstance(value, int):
        return SEVERITIES[value] if 0 <= value <= 7 else 'info'
    text = str(value).lower()
    for prefixes, status in (
        (('emerg', 'f'), 'emerg'),
        (('a',), 'alert'),
        (('c',), 'critical'),
        (('err',), 'error'),
        (('w',), 'warn'),
        (('n',), 'notice'),
        (('i',), 'info'),
        (('d', 'trace', 'verbose'), 'debug'),
        (('o', 's'), 'ok'),
    ):
        if text.startswith(prefixes):
            return status
    return 'info'


def _compile_query(query):
    if query.strip() == '*':
        return lambda attributes: True
    match = re.fullmatch(r'@([\w.]+):(?:\[(\S+) TO (\S+)\]|(\S+))', query.strip())
    if not match:
        raise PipelineError(
            f'category query {query!r}: only "*", "@attr:value" and "@attr:[low TO high]" are supported'
        )
    path, low, high, value = match.groups()
    if value is not None:
        return lambda attributes: str(get_path(attributes, path)) == value

    def in_range(attributes):
        found = get_path(attributes, path)
        return isinstance(found, int | float) and float(low) <= found <= float(high)

    return in_range


def _first(attributes, sources):
    for source in sources:
        value = get_path(attributes, source)
        if value is not None:
            return value
    return None


def _query(query):
    values = {}
    for pair in query.split('&'):
        if pair:
            key, _, value = pair.partition('=')
            values[key] = value
    return values


def _merge(attributes, new):
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(attributes.get(key), dict):
            _merge(attributes[key], value)
        else:
            attributes[key] = copy.deepcopy(value)
