"""The `date("pattern"[, "timezoneId"])` matcher: Java DateTimeFormatter patterns, the few letters we need.

Supported pattern letters: yyyy, MM, MMM (English month abbreviations), dd, d, HH, mm, ss,
S... (fraction of second, any width), Z (+0000), XXX (+00:00 or Z), and 'quoted' literals.
Other characters are literals. A date without an offset is read in the timezone argument,
UTC by default, as Datadog does. The value is milliseconds since the epoch.
"""

import re
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MONTHS = ('Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec')

# Pattern letter run -> (field, regex). Longest runs first so that MMM wins over MM.
FIELDS = {
    'yyyy': ('year', r'\d{4}'),
    'MMM': ('month_name', '|'.join(MONTHS)),
    'MM': ('month', r'\d{2}'),
    'dd': ('day', r'\d{2}'),
    'd': ('day', r'\d{1,2}'),
    'HH': ('hour', r'\d{2}'),
    'mm': ('minute', r'\d{2}'),
    'ss': ('second', r'\d{2}'),
    'Z': ('offset', r'[+-]\d{4}'),
    'XXX': ('offset', r'Z|[+-]\d{2}:\d{2}'),
}


class DatePatternError(ValueError):
    pass


class DatePattern:
    def __init__(self, pattern, tz='UTC'):
        self.pattern = pattern
        try:
            self.tz = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise DatePatternError(f'unknown timezone {tz!r} in date pattern {pattern!r}') from e
        self.fields = []
        self.regex = self._translate(pattern)
        self._compiled = re.compile(self.regex)

    def _translate(self, pattern):
        parts = []
        i = 0
        while i < len(pattern):
            char = pattern[i]
            if char == "'":
                end = pattern.find("'", i + 1)
                if end < 0:
                    raise DatePatternError(f'unclosed quote in date pattern {pattern!r}')
                parts.append(re.escape(pattern[i + 1 : end]))
                i = end + 1
                continue
            if char.isalpha():
                run = len(pattern) - i - len(pattern[i:].lstrip(char))
                letters = pattern[i : i + run]
                if char == 'S':
                    field, regex = 'fraction', rf'\d{{{run}}}'
                elif letters in FIELDS:
                    field, regex = FIELDS[letters]
                else:
                    raise DatePatternError(f'unsupported letters {letters!r} in date pattern {pattern!r}')
                self.fields.append(field)
                parts.append(f'({regex})')
                i += run
                continue
            parts.append(re.escape(char))
            i += 1
        return ''.join(parts)

    def to_millis(self, text):
        match = self._compiled.fullmatch(text)
        if not match:
            raise DatePatternError(f'{text!r} does not match date pattern {self.pattern!r}')
        values = dict(zip(self.fields, match.groups(), strict=True))
        month = MONTHS.index(values['month_name']) + 1 if 'month_name' in values else int(values['month'])
        fraction = values.get('fraction', '0')
        micros = int((fraction + '000000')[:6])
        tz = self.tz
        if 'offset' in values:
            tz = _offset(values['offset'])
        moment = datetime(
            int(values['year']),
            month,
            int(values['day']),
            int(values.get('hour', 0)),
            int(values.get('minute', 0)),
            int(values.get('second', 0)),
            micros,
            tzinfo=tz,
        )
        return (moment - EPOCH) // timedelta(milliseconds=1)


def _offset(text):
    if text == 'Z':
        return UTC
    sign = -1 if text[0] == '-' else 1
    digits = text[1:].replace(':', '')
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
