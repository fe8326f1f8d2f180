"""The wheel the Agent installs (`datadog-agent integration install -w`) replaces the bundled one."""

import zipfile
from email.parser import Parser
from pathlib import Path

from .venvs import build_wheel

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_has_the_bundled_names_and_everything_the_check_loads(tmp_path):
    wheel = build_wheel(ROOT, tmp_path)
    assert wheel.name.startswith('datadog_gunicorn-')

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata_name = next(n for n in names if n.endswith('.dist-info/METADATA'))
        metadata = Parser().parsestr(archive.read(metadata_name).decode())

    package = {n for n in names if not n.startswith('datadog_gunicorn-')}
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / 'datadog_checks' / 'gunicorn').rglob('*.py')}
    assert package == modules | {'datadog_checks/gunicorn/data/conf.yaml.example'}
    # The namespace package belongs to datadog-checks-base; shipping it would break the Agent's.
    assert 'datadog_checks/__init__.py' not in names
    assert metadata['Name'] == 'datadog-gunicorn'
    requires = metadata.get_all('Requires-Dist')
    assert any(r.startswith('datadog-checks-base') for r in requires)
    assert any(r.startswith('psutil') and "extra == 'deps'" in r for r in requires)
