"""Datadog's grok dialect, as far as the gunicorn pipeline uses it.

A rule is `name pattern`, one per line. A pattern is a regular expression in which
`%{MATCHER:EXTRACT:FILTER}` stands for a matcher, optionally captured into the
attribute EXTRACT (dotted path, nested on output) and transformed by FILTER. A matcher
is either one of the built-ins below or the name of a support rule (or of a match rule
defined above), which is inlined. A match rule must match the whole text; the first
match rule that matches wins. Values that end up null or empty are dropped, as Datadog
does not display them.

Built-in matchers (regular expression used here):
    data            [\\s\\S]*   any text, newlines included (greedy, as the docs' `.*`)
    notSpace        \\S+
    word            \\b\\w+\\b
    integer         [+-]?\\d+, value parsed as an integer
    number          decimal number, value parsed as a float
    ip, ipOrHost    IPv4 or IPv6 address; ipOrHost also accepts a host name
    regex("re")     the given regular expression
    date("pattern"[, "timezone"])   see dates.py; value in milliseconds since the epoch

Filters: nullIf("value"), integer, number, scale(factor), json (an object, merged at the
extract path, or at the root when EXTRACT is empty).

String arguments are double-quoted; inside them only \\\\ and \\" are escapes, as in
Datadog's own pipelines (`regex("\\\\d+")` is the regular expression `\\d+`).

Differences with Datadog, on purpose: the regular expressions are Python's, not Java's
(the pipeline only uses syntax common to both, atomic groups included), and `scale`
computes in decimal, so that 0.001645 s scaled by 1e9 is exactly 1645000 ns.
"""

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from .dates import DatePattern, DatePatternError

RULE_NAME = re.compile(r'[A-Za-z0-9_][\w.]*')  # Datadog's own support rules start with _
IDENTIFIER = re.compile(r'[A-Za-z_][\w.]*')
EXTRACT = re.compile(r'[\w.]*')

_OCTET = r'(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)'
IPV4 = rf'{_OCTET}(?:\.{_OCTET}){{3}}'
IPV6 = rf'(?:[0-9A-Fa-f]{{0,4}}:){{2,7}}(?:{IPV4}|[0-9A-Fa-f]{{0,4}})'
HOST = r'[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*'

# name -> (regular expression, converter of the matched text)
SIMPLE_MATCHERS = {
    'data': (r'[\s\S]*', str),
    'notSpace': (r'\S+', str),
    'word': (r'\b\w+\b', str),
    'integer': (r'[+-]?\d+', int),
    'number': (r'[+-]?(?:\d+(?:\.\d*)?|\.\d+)', float),
    'ip': (rf'(?:{IPV4}|{IPV6})', str),
    'ipOrHost': (rf'(?:{IPV4}|{IPV6}|{HOST})', str),
}
FILTER_ARITY = {'nullIf': 1, 'integer': 0, 'number': 0, 'scale': 1, 'json': 0}


class GrokError(ValueError):
    """A rule that cannot be compiled, or a value that a filter cannot transform."""


@dataclass
class Call:
    name: str
    args: list = field(default_factory=list)


@dataclass
class Capture:
    group: str
    extract: str
    convert: object
    filter: Call | None


@dataclass
class CompiledRule:
    name: str
    regex: re.Pattern
    captures: list


@dataclass
class GrokMatch:
    rule: str
    attributes: dict


class GrokParser:
    def __init__(self, support_rules='', match_rules=''):
        self._support = _read_rules(support_rules, 'supportRules')
        self._match_sources = _read_rules(match_rules, 'matchRules')
        if not self._match_sources:
            raise GrokError('matchRules defines no rule')
        for name in self._support.keys() & self._match_sources.keys():
            raise GrokError(f'rule {name!r} is defined both in supportRules and matchRules')
        self._group_count = 0
        self.rules = [self._compile(name, pattern) for name, pattern in self._match_sources.items()]

    def parse(self, text):
        """The first match rule that matches all of `text`, with its attributes; None when none matches."""
        for rule in self.rules:
            match = rule.regex.fullmatch(text)
            if match:
                return GrokMatch(rule.name, _attributes(rule, match))
        return None

    # Compilation

    def _compile(self, name, pattern):
        captures = []
        regex = self._expand(pattern, name, captures, stack=(name,))
        try:
            compiled = re.compile(regex)
        except re.error as e:
            raise GrokError(f'rule {name!r}: invalid regular expression ({e}) in {pattern!r}') from e
        return CompiledRule(name, compiled, captures)

    def _visible_rules(self, rule):
        """Support rules, and the match rules defined above `rule` when it is a match rule."""
        visible = dict(self._support)
        for name, pattern in self._match_sources.items():
            if name == rule:
                break
            visible[name] = pattern
        return visible

    def _expand(self, pattern, rule, captures, stack):
        if re.search(r'\(\?P?<[A-Za-z_]', pattern):
            raise GrokError(f'rule {rule!r}: named groups are not supported, use %{{matcher:attribute}}')
        out = []
        i = 0
        while True:
            start = pattern.find('%{', i)
            if start < 0:
                out.append(pattern[i:])
                return ''.join(out)
            out.append(pattern[i:start])
            matcher, extract, filter_, i = _read_reference(pattern, start, rule)
            out.append(self._matcher_regex(matcher, extract, filter_, rule, captures, stack))

    def _matcher_regex(self, matcher, extract, filter_, rule, captures, stack):
        visible = self._visible_rules(stack[0])
        if matcher.name in visible and not matcher.args:
            if extract or filter_:
                raise GrokError(f'rule {rule!r}: a rule reference (%{{{matcher.name}}}) takes no extract or filter')
            if matcher.name in stack:
                raise GrokError(f'rule {rule!r}: rules reference each other in a cycle: {" -> ".join(stack)}')
            inner = self._expand(visible[matcher.name], matcher.name, captures, stack + (matcher.name,))
            return f'(?:{inner})'
        regex, convert = _builtin(matcher, rule)
        if filter_ is not None:
            _check_filter(filter_, rule)
        if not extract and (filter_ is None or filter_.name != 'json'):
            return f'(?:{regex})'
        self._group_count += 1
        group = f'g{self._group_count}'
        captures.append(Capture(group, extract, convert, filter_))
        return f'(?P<{group}>{regex})'


def _read_rules(text, where):
    rules = {}
    for number, line in enumerate((text or '').splitlines(), 1):
        if not line.strip():
            continue
        name, _, pattern = line.strip().partition(' ')
        if not RULE_NAME.fullmatch(name):
            raise GrokError(f'{where} line {number}: invalid rule name {name!r}')
        if not pattern.strip():
            raise GrokError(f'{where} line {number}: rule {name!r} has no pattern')
        if name in rules:
            raise GrokError(f'{where} line {number}: rule {name!r} is defined twice')
        rules[name] = pattern.strip()
    return rules


def _read_reference(pattern, start, rule):
    """Parse `%{matcher(args):extract:filter(args)}` at `start`; return its parts and the index after `}`."""
    i = start + 2
    matcher, i = _read_call(pattern, i, rule)
    extract, filter_ = '', None
    if i < len(pattern) and pattern[i] == ':':
        extract = EXTRACT.match(pattern, i + 1).group()
        i += 1 + len(extract)
        if i < len(pattern) and pattern[i] == ':':
            filter_, i = _read_call(pattern, i + 1, rule)
    if i >= len(pattern) or pattern[i] != '}':
        raise GrokError(f'rule {rule!r}: expected "}}" at offset {i} of {pattern!r}')
    return matcher, extract, filter_, i + 1


def _read_call(pattern, i, rule):
    name = IDENTIFIER.match(pattern, i)
    if not name:
        raise GrokError(f'rule {rule!r}: expected a matcher or filter name at offset {i} of {pattern!r}')
    i = name.end()
    args = []
    if i < len(pattern) and pattern[i] == '(':
        i += 1
        while True:
            while i < len(pattern) and pattern[i] == ' ':
                i += 1
            if i < len(pattern) and pattern[i] == ')' and not args:
                return Call(name.group(), args), i + 1
            arg, i = _read_argument(pattern, i, rule)
            args.append(arg)
            while i < len(pattern) and pattern[i] == ' ':
                i += 1
            if i < len(pattern) and pattern[i] == ',':
                i += 1
            elif i < len(pattern) and pattern[i] == ')':
                return Call(name.group(), args), i + 1
            else:
                raise GrokError(f'rule {rule!r}: expected "," or ")" at offset {i} of {pattern!r}')
    return Call(name.group(), args), i


def _read_argument(pattern, i, rule):
    if i < len(pattern) and pattern[i] == '"':
        out = []
        i += 1
        while i < len(pattern):
            char = pattern[i]
            if char == '"':
                return ''.join(out), i + 1
            if char == '\\':
                escaped = pattern[i + 1 : i + 2]
                if escaped not in ('\\', '"'):
                    raise GrokError(
                        f'rule {rule!r}: unsupported escape "\\{escaped}" at offset {i} of {pattern!r}'
                        ' (write \\\\ for a backslash)'
                    )
                out.append(escaped)
                i += 2
                continue
            out.append(char)
            i += 1
        raise GrokError(f'rule {rule!r}: unterminated string in {pattern!r}')
    number = re.compile(r'[+-]?\d+(?:\.\d+)?').match(pattern, i)
    if not number:
        raise GrokError(f'rule {rule!r}: expected a quoted string or a number at offset {i} of {pattern!r}')
    return number.group(), number.end()


def _builtin(matcher, rule):
    name, args = matcher.name, matcher.args
    if name in SIMPLE_MATCHERS:
        if args:
            raise GrokError(f'rule {rule!r}: matcher {name!r} takes no argument')
        return SIMPLE_MATCHERS[name]
    if name == 'regex':
        if len(args) != 1:
            raise GrokError(f'rule {rule!r}: regex() takes one string argument')
        try:
            re.compile(args[0])
        except re.error as e:
            raise GrokError(f'rule {rule!r}: invalid regex({args[0]!r}): {e}') from e
        return args[0], str
    if name == 'date':
        if len(args) not in (1, 2):
            raise GrokError(f'rule {rule!r}: date() takes a pattern and an optional timezone')
        try:
            date = DatePattern(*args)
        except DatePatternError as e:
            raise GrokError(f'rule {rule!r}: {e}') from e
        return f'(?:{date.regex})', date.to_millis
    raise GrokError(
        f'rule {rule!r}: unknown matcher or rule {name!r} (built-in matchers: '
        f'{", ".join(sorted([*SIMPLE_MATCHERS, "regex", "date"]))})'
    )


def _check_filter(filter_, rule):
    if filter_.name not in FILTER_ARITY:
        raise GrokError(f'rule {rule!r}: unknown filter {filter_.name!r} (known: {", ".join(sorted(FILTER_ARITY))})')
    if len(filter_.args) != FILTER_ARITY[filter_.name]:
        raise GrokError(f'rule {rule!r}: filter {filter_.name!r} takes {FILTER_ARITY[filter_.name]} argument(s)')
    if filter_.name == 'scale':
        try:
            Decimal(filter_.args[0])
        except InvalidOperation as e:
            raise GrokError(f'rule {rule!r}: scale() needs a number, got {filter_.args[0]!r}') from e


def _attributes(rule, match):
    attributes = {}
    for capture in rule.captures:
        text = match.group(capture.group)
        if text is None:
            continue  # in an alternative that did not match
        value = capture.convert(text)
        if capture.filter is not None:
            value = _apply_filter(capture.filter, value, rule.name)
        if value is None or value == '':
            continue
        if capture.extract:
            set_path(attributes, capture.extract, value)
        else:
            attributes.update(value)  # json at the root
    return attributes


def _apply_filter(filter_, value, rule):
    name = filter_.name
    if name == 'nullIf':
        return None if str(value) == filter_.args[0] else value
    try:
        if name == 'integer':
            return int(value)
        if name == 'number':
            return float(value)
        if name == 'scale':
            scaled = Decimal(str(value)) * Decimal(filter_.args[0])
            return int(scaled) if scaled == scaled.to_integral_value() else float(scaled)
    except (ValueError, InvalidOperation) as e:
        raise GrokError(f'rule {rule!r}: filter {name} cannot convert {value!r}') from e
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise GrokError(f'rule {rule!r}: filter json: invalid JSON ({e})') from e
    if not isinstance(parsed, dict):
        raise GrokError(f'rule {rule!r}: filter json needs an object, got {type(parsed).__name__}')
    return parsed


def set_path(attributes, path, value):
    """Set a dotted attribute path in nested dictionaries."""
    *parents, leaf = path.split('.')
    node = attributes
    for i, key in enumerate(parents):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise GrokError(f'cannot set {path!r}: {".".join(parents[: i + 1])!r} is not an object')
    node[leaf] = value


def get_path(attributes, path):
    node = attributes
    for key in path.split('.'):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node
