"""A minimal stand-in for Datadog's user-agent parser (which is based on uap-core).

It knows only the user agents the tests use, and returns the same shape Datadog does:
    browser: family, major, minor, patch, patch_minor (the version parts present)
    os:      family, and major/minor/patch for Mac OS X, major for Windows 95/98
    device:  family ("Other", or "Spider" for bots) and category
             ("Bot", "Mobile" or "Desktop")
Browsers: Edge, Chrome, Firefox, Safari, curl, python-requests; anything else is family
"Other", as Datadog gives for `Mozilla/4.08 [en] (Win95)` (the bundled integration's sample:
Other browser, Windows 95, Desktop device of family Other). A user agent of `-` gets the same
Other/Other/Desktop here; that Datadog agrees is assumed, not seen.

It is not a general parser: add a case here before using a new kind of user agent in a
sample, and check the expected result against Datadog.
"""

import re

BROWSERS = (  # order matters: Edge and Chrome also say "Safari", Edge also says "Chrome"
    ('Edge', re.compile(r'Edg/(\d+)\.(\d+)\.(\d+)\.(\d+)')),
    ('Chrome', re.compile(r'Chrome/(\d+)\.(\d+)\.(\d+)\.(\d+)')),
    ('Firefox', re.compile(r'Firefox/(\d+)\.(\d+)')),
    ('Safari', re.compile(r'Version/(\d+)\.(\d+)(?:\.(\d+))? (?:Mobile/\S+ )?Safari/')),
    ('curl', re.compile(r'^curl/(\d+)\.(\d+)\.(\d+)')),
    ('Python Requests', re.compile(r'^python-requests/(\d+)\.(\d+)(?:\.(\d+))?')),
)
VERSION_PARTS = ('major', 'minor', 'patch', 'patch_minor')
BOT = re.compile(r'bot|crawl|spider|^curl/|^python-requests/', re.IGNORECASE)


def parse(useragent):
    return {'browser': _browser(useragent), 'device': _device(useragent), 'os': _os(useragent)}


def _browser(useragent):
    for family, regex in BROWSERS:
        match = regex.search(useragent)
        if match:
            parts = {key: value for key, value in zip(VERSION_PARTS, match.groups(), strict=False) if value}
            return {'family': family, **parts}
    return {'family': 'Other'}


def _os(useragent):
    mac = re.search(r'Mac OS X (\d+)_(\d+)(?:_(\d+))?', useragent)
    if mac and 'iPhone' not in useragent:
        parts = {key: value for key, value in zip(VERSION_PARTS, mac.groups(), strict=False) if value}
        return {'family': 'Mac OS X', **parts}
    old_windows = re.search(r'Win(?:dows )?(95|98)\b', useragent)
    if old_windows:
        return {'family': 'Windows', 'major': old_windows.group(1)}
    for marker, family in (('Android', 'Android'), ('iPhone', 'iOS'), ('Windows', 'Windows'), ('Linux', 'Linux')):
        if marker in useragent:
            return {'family': family}
    return {'family': 'Other'}


def _device(useragent):
    if BOT.search(useragent):
        return {'category': 'Bot', 'family': 'Spider'}
    if 'Mobile' in useragent:
        return {'category': 'Mobile', 'family': 'Other'}
    return {'category': 'Desktop', 'family': 'Other'}
