"""Run the check without an Agent and print what the Agent would collect.

    python -m datadog_checks.gunicorn --conf gunicorn.d/conf.yaml
    python -m datadog_checks.gunicorn --proc-name myapp --check-times 2 --pause 1000

The output follows `datadog-agent check gunicorn`: the series and service checks of
the last run, then the instance's status block (runs, counts, metadata, warnings,
errors) and its diagnoses. The exit status is 1 when any run ended in an error.
"""

import argparse
import hashlib
import json
import socket
import sys
import time
from datetime import UTC, datetime

import yaml

from datadog_checks.base.stubs import aggregator, datadog_agent

from .__about__ import __version__
from .check import GunicornCheck

METRIC_TYPES = {value: name for name, value in aggregator.METRIC_ENUM_MAP.items()}
STATUS_NAMES = {0: 'OK', 1: 'WARNING', 2: 'CRITICAL', 3: 'UNKNOWN'}


class ConfigFileError(Exception):
    pass


def load_config(path):
    """(init_config, instances) of a `gunicorn.d/conf.yaml`."""
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except OSError as e:
        raise ConfigFileError(f'cannot read {path}: {e.strerror}') from None
    except yaml.YAMLError as e:
        raise ConfigFileError(f'{path} is not valid YAML: {e}') from None
    if not isinstance(config, dict) or not isinstance(config.get('instances'), list) or not config['instances']:
        raise ConfigFileError(f'{path} has no `instances:` list')
    init_config = config.get('init_config') or {}
    if not isinstance(init_config, dict):
        raise ConfigFileError(f'{path}: `init_config` must be a mapping')
    return init_config, config['instances']


class InstanceRun:
    """One configured instance, its check object and what its runs produced."""

    def __init__(self, init_config, instance, source):
        self.source = source
        digest = hashlib.sha256(json.dumps(instance, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.check = GunicornCheck('gunicorn', init_config, [instance])
        self.check.check_id = f'gunicorn:{digest}'
        self.runs = 0
        self.errors = []
        self.warnings = []
        self.durations = []
        self.last_date = None
        self.metric_samples = []  # per run
        self.service_check_counts = []  # per run
        self.series = []
        self.service_checks = []
        self.monotonic_last = {}  # (name, tags) -> last raw value, to send differences as the Agent does

    def run_once(self):
        aggregator.reset()
        start = time.perf_counter()
        error = self.check.run()
        self.durations.append(time.perf_counter() - start)
        self.runs += 1
        self.last_date = datetime.now(UTC)
        self.errors = json.loads(error) if error else []
        self.warnings = self.check.get_warnings()
        self.series = self._series()
        self.service_checks = self._service_checks()
        self.metric_samples.append(len(self.series))
        self.service_check_counts.append(len(self.service_checks))
        return not self.errors

    def _series(self):
        series = []
        timestamp = int(time.time())
        for name in sorted(aggregator.metric_names):
            for stub in aggregator.metrics(name):
                kind = METRIC_TYPES[stub.type]
                value = stub.value
                if kind == 'monotonic_count':
                    key = (name, tuple(stub.tags))
                    previous = self.monotonic_last.get(key)
                    self.monotonic_last[key] = value
                    if previous is None or value < previous:
                        continue  # the Agent sends nothing for a first sample or a counter reset
                    value, kind = value - previous, 'count'
                series.append(
                    {
                        'metric': name,
                        'points': [[timestamp, value]],
                        'tags': sorted(stub.tags),
                        'host': stub.hostname or socket.gethostname(),
                        'type': kind,
                        'interval': 0,
                        'source_type_name': 'System',
                    }
                )
        return series

    def _service_checks(self):
        return [
            {
                'check': stub.name,
                'host_name': stub.hostname or socket.gethostname(),
                'timestamp': int(time.time()),
                'status': stub.status,
                'message': stub.message or '',
                'tags': sorted(stub.tags),
            }
            for name in sorted(aggregator.service_check_names)
            for stub in aggregator.service_checks(name)
        ]

    def metadata(self):
        return {
            name: value
            for (check_id, name), value in sorted(datadog_agent._metadata.items())  # the stub keeps no public getter
            if check_id == self.check.check_id
        }

    def diagnoses(self):
        return json.loads(self.check.get_diagnoses())


def print_report(runs, out):
    series = [s for r in runs for s in r.series]
    service_checks = [s for r in runs for s in r.service_checks]
    out.write('=== Series ===\n')
    out.write(json.dumps(series, indent=2) + '\n')
    out.write('=== Service Checks ===\n')
    out.write(json.dumps(service_checks, indent=2) + '\n')
    out.write('=========\nCollector\n=========\n\n  Running Checks\n  ==============\n\n')
    heading = f'gunicorn ({__version__})'
    out.write(f'    {heading}\n    {"-" * len(heading)}\n')
    for r in runs:
        state = 'ERROR' if r.errors else 'WARNING' if r.warnings else 'OK'
        average_ms = 1000 * sum(r.durations) / len(r.durations)
        out.write(f'      Instance ID: {r.check.check_id} [{state}]\n')
        out.write(f'      Configuration Source: {r.source}\n')
        out.write(f'      Total Runs: {r.runs}\n')
        out.write(f'      Metric Samples: Last Run: {r.metric_samples[-1]}, Total: {sum(r.metric_samples)}\n')
        out.write(
            f'      Service Checks: Last Run: {r.service_check_counts[-1]}, Total: {sum(r.service_check_counts)}\n'
        )
        out.write(f'      Average Execution Time : {average_ms:.2f}ms\n')
        out.write(f'      Last Execution Date : {r.last_date:%Y-%m-%d %H:%M:%S %Z}\n')
        metadata = r.metadata()
        if metadata:
            out.write('      metadata:\n')
            for name, value in metadata.items():
                out.write(f'        {name}: {value}\n')
        for warning in r.warnings:
            out.write(f'      Warning: {warning}\n')
        for error in r.errors:
            out.write(f'      Error: {error["message"]}\n')
            out.write('      ' + error['traceback'].rstrip().replace('\n', '\n      ') + '\n')
        out.write('\n')
    diagnoses = [d for r in runs for d in r.diagnoses()]
    if diagnoses:
        out.write('=== Diagnoses ===\n')
        for d in diagnoses:
            result = {0: 'PASS', 1: 'FAIL', 2: 'WARNING', 3: 'UNEXPECTED'}.get(d['result'], d['result'])
            out.write(f'  [{result}] {d["name"]}: {d["diagnosis"]}\n')
            if d.get('remediation'):
                out.write(f'      remediation: {d["remediation"]}\n')
        out.write('\n')


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='python -m datadog_checks.gunicorn', description='Run the Gunicorn check once or more, without an Agent.'
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('-c', '--conf', metavar='CONF_YAML', help='a gunicorn.d/conf.yaml; every instance runs')
    source.add_argument('--proc-name', metavar='NAME', help='the app name in `gunicorn: master [NAME]`')
    parser.add_argument('--tag', action='append', default=[], help='with --proc-name: a tag, repeatable')
    parser.add_argument('-t', '--check-times', type=int, default=1, metavar='N', help='number of runs (default 1)')
    parser.add_argument('--pause', type=int, default=1000, metavar='MS', help='pause between runs (default 1000)')
    args = parser.parse_args(argv)
    if args.check_times < 1:
        parser.error('--check-times must be at least 1')
    if args.pause < 0:
        parser.error('--pause cannot be negative')
    return args


def main(argv=None, out=None):
    out = out or sys.stdout
    args = parse_args(argv)
    if args.conf:
        try:
            init_config, instances = load_config(args.conf)
        except ConfigFileError as e:
            sys.stderr.write(f'error: {e}\n')
            return 2
        source = f'file:{args.conf}'
    else:
        init_config, instances = {}, [{'proc_name': args.proc_name, 'tags': args.tag}]
        source = 'command line'

    runs = [InstanceRun(init_config, instance, source) for instance in instances]
    ok = True
    for number in range(args.check_times):
        if number:
            time.sleep(args.pause / 1000)
        for r in runs:
            ok = r.run_once() and ok
    print_report(runs, out)
    return 0 if ok else 1
