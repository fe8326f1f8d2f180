"""Generate `conf.yaml.example` and `config_models/` from `assets/configuration/spec.yaml`.

    python scripts/sync_config.py          # write the generated files
    python scripts/sync_config.py --check  # exit 1 and show a diff when a file drifted

This drives datadog-checks-dev's configuration tooling (the library behind
`ddev validate config --sync` and `ddev validate models --sync`) directly,
because ddev expects a repository holding many integrations in sub-folders,
while this repository is one integration.
"""

import argparse
import difflib
import sys
from pathlib import Path

from datadog_checks.dev.tooling.configuration import ConfigSpec
from datadog_checks.dev.tooling.configuration.consumers import ExampleConsumer, ModelConsumer
from datadog_checks.dev.tooling.constants import set_root
from datadog_checks.dev.tooling.utils import CUSTOM_FILES

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / 'assets' / 'configuration' / 'spec.yaml'
PACKAGE = ROOT / 'datadog_checks' / 'gunicorn'
SOURCE = 'gunicorn'
MODEL_HEADER = (
    '# This file is generated from assets/configuration/spec.yaml by datadog-checks-dev\'s\n'
    '# configuration tooling. Do not edit it: change the spec, then run\n'
    '#     python scripts/sync_config.py\n\n\n'
)


def _version():
    about = {}
    exec((PACKAGE / '__about__.py').read_text(), about)
    return about['__version__']


def generated_files():
    """Map each generated path to the contents the tooling renders for it now.

    Custom files (validators.py) are rendered only when missing: they are ours to edit.
    """
    set_root(str(ROOT))  # so the model formatter picks up this repository's ruff settings
    spec = ConfigSpec(SPEC.read_text(), source=SOURCE, version=_version())
    spec.load()
    if spec.errors:
        raise SystemExit('\n'.join(spec.errors))

    files = {}
    for name, (contents, errors) in ExampleConsumer(spec.data).render().items():
        if errors:
            raise SystemExit('\n'.join(errors))
        files[PACKAGE / 'data' / name] = contents

    for name, (contents, errors) in ModelConsumer(spec.data).render()[f'{SOURCE}.yaml'].items():
        if errors:
            raise SystemExit('\n'.join(errors))
        path = PACKAGE / 'config_models' / name
        if name in CUSTOM_FILES:
            if not path.exists():
                files[path] = contents
            continue
        files[path] = MODEL_HEADER + contents if contents else contents
    return files


def drifted_files():
    """(path, unified diff) for every generated file that differs from what is on disk."""
    drifted = []
    for path, expected in generated_files().items():
        current = path.read_text() if path.exists() else ''
        if current != expected:
            diff = ''.join(
                difflib.unified_diff(
                    current.splitlines(True), expected.splitlines(True), f'{path} (on disk)', f'{path} (from spec)'
                )
            )
            drifted.append((path, diff))
    return drifted


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help='only report files that drifted from the spec')
    args = parser.parse_args(argv)

    if args.check:
        drifted = drifted_files()
        for path, diff in drifted:
            print(f'{path.relative_to(ROOT)} is out of sync with the spec:\n{diff}')
        return 1 if drifted else 0

    for path, contents in generated_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != contents:
            path.write_text(contents)
            print(f'wrote {path.relative_to(ROOT)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
