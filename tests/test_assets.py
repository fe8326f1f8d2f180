"""The files the Datadog app reads: manifest, service checks, dashboard, monitors, saved views.

They are only ever checked by the app after release, so a typo in a metric name or a path shows up
as an empty graph or a missing tile. These tests catch that here, against metadata.csv and the
check's own names in metrics.py.
"""

import copy
import csv
import importlib
import json
import re
from datetime import date
from pathlib import Path

import jsonschema
import psutil
import pytest

from datadog_checks.dev.tooling.datastructures import JSONDict
from datadog_checks.dev.tooling.manifest_validator.constants import V2
from datadog_checks.dev.tooling.manifest_validator.v2.validator import (
    DisplayOnPublicValidator,
    TileDescriptionValidator,
)
from datadog_checks.gunicorn import metrics

from .server import title

# The validate package re-exports its click commands under the module names, so `from ... import
# dashboards` gives the command; the modules hold the rules (required fields, valid pages) we reuse.
dd_dashboards = importlib.import_module('datadog_checks.dev.tooling.commands.validate.dashboards')
dd_saved_views = importlib.import_module('datadog_checks.dev.tooling.commands.validate.saved_views')
dd_service_checks = importlib.import_module('datadog_checks.dev.tooling.commands.validate.service_checks')

ROOT = Path(__file__).resolve().parent.parent
MANIFEST_PATH = ROOT / 'manifest.json'
SCHEMA_PATH = Path(__file__).resolve().parent / 'manifest.schema.json'

# A metric in a query is always `aggregator:name{scope}`; anything else mentioning a gunicorn
# metric is a malformed query that the app would reject or graph as nothing.
QUERIED_METRIC = re.compile(r'\b(?:avg|sum|min|max|count):(gunicorn\.[a-z0-9_.]+?)\{([^}]*)\}')
ANY_METRIC = re.compile(r'gunicorn\.[a-z0-9_.]*[a-z0-9_]')
SERVICE_CHECK_QUERY = re.compile(r'^"([^"]+)"\.over\(([^)]*)\)\.by\(([^)]*)\)\.last\((\d+)\)\.count_by_status\(\)$')
THRESHOLD_COMPARATOR = re.compile(r'(>=|<=|>|<)\s*-?[0-9.]+\s*$')


def load_json(path):
    with open(path, encoding='utf-8') as f:
        return json.load(f)


@pytest.fixture(scope='module')
def manifest():
    return load_json(MANIFEST_PATH)


@pytest.fixture(scope='module')
def metadata_names():
    with open(ROOT / 'metadata.csv', encoding='utf-8', newline='') as f:
        return {row['metric_name'] for row in csv.DictReader(f)}


def asset_paths(manifest, kind):
    return list(manifest['assets'].get(kind, {}).values())


def iter_widgets(widgets):
    for widget in widgets:
        yield widget
        yield from iter_widgets(widget['definition'].get('widgets', []))


def metric_queries(definition):
    for request in definition.get('requests', []):
        for query in request.get('queries', []):
            if query.get('data_source') == 'metrics':
                yield request, query


def metrics_in(query, metadata_names):
    """Metric names of one query string, asserting that each mention is a well-formed query."""
    found = QUERIED_METRIC.findall(query)
    assert len(found) == len(ANY_METRIC.findall(query)), f'a metric is not written as `agg:name{{scope}}`: {query}'
    missing = [name for name, _ in found if name not in metadata_names]
    assert not missing, f'not in metadata.csv: {missing} (query: {query})'
    return found


# Manifest


def test_manifest_matches_schema(manifest):
    schema = load_json(SCHEMA_PATH)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(manifest)


@pytest.mark.parametrize(
    'mutate',
    [
        pytest.param(lambda m: m.update(manifest_version='1.0.0'), id='v1'),
        pytest.param(lambda m: m['assets'].update(dashboard=m['assets']['dashboards']), id='typo-key'),
        pytest.param(lambda m: m['assets']['integration']['metrics'].pop('check'), id='no-metric-to-check'),
        pytest.param(lambda m: m['assets']['monitors'].update(x='assets/monitors/x.yaml'), id='not-json'),
        pytest.param(lambda m: m['tile'].update(description='x' * 81), id='long-description'),
        pytest.param(lambda m: m.update(app_uuid='not-a-uuid'), id='bad-uuid'),
        pytest.param(lambda m: m['assets']['integration'].update(source_type_id='60'), id='source-type-id-string'),
        pytest.param(lambda m: m['assets']['integration'].update(process_signatures=['']), id='empty-signature'),
    ],
)
def test_schema_rejects_broken_manifests(manifest, mutate):
    # A schema that accepts anything would make the test above pass for nothing.
    broken = copy.deepcopy(manifest)
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(load_json(SCHEMA_PATH)).validate(broken)


def test_manifest_passes_datadog_offline_validators(manifest):
    for validator_class in (TileDescriptionValidator, DisplayOnPublicValidator):
        validator = validator_class(version=V2)
        validator.validate('gunicorn', JSONDict(manifest), False)
        assert not validator.result.failed, validator.result
        assert not validator.result.warning, validator.result


def test_every_path_in_manifest_exists(manifest):
    tile = manifest['tile']
    integration = manifest['assets']['integration']
    paths = [
        *(tile[key].split('#')[0] for key in ('overview', 'configuration', 'support')),
        tile['changelog'],
        integration['configuration']['spec'],
        integration['metrics']['metadata_path'],
        integration['service_checks']['metadata_path'],
        *(asset_paths(manifest, kind) for kind in ('dashboards', 'monitors', 'saved_views')),
    ]
    flat = [p for item in paths for p in ([item] if isinstance(item, str) else item)]
    assert {
        'assets/configuration/spec.yaml',
        'metadata.csv',
        'assets/service_checks.json',
        'assets/dashboards/gunicorn_overview.json',
        'CHANGELOG.md',
    } <= set(flat)
    missing = [p for p in flat if not (ROOT / p).is_file()]
    assert not missing


@pytest.mark.parametrize('kind', ['dashboards', 'monitors', 'saved_views'])
def test_every_asset_file_is_in_manifest(manifest, kind):
    # The app only installs what the manifest names; a file left out is silently never shipped.
    on_disk = {p.relative_to(ROOT).as_posix() for p in (ROOT / 'assets' / kind).glob('*.json')}
    assert on_disk == set(asset_paths(manifest, kind))


def test_manifest_names_this_integration(manifest, metadata_names):
    integration = manifest['assets']['integration']
    assert manifest['app_id'] == 'gunicorn'
    assert integration['metrics']['prefix'] == 'gunicorn.'
    assert integration['metrics']['check'] == metrics.WORKERS
    assert metrics.WORKERS in metadata_names
    assert manifest['assets']['logs'] == {'source': 'gunicorn'}
    # Datadog requires the log category whenever an integration declares a log source.
    assert 'Category::Log Collection' in manifest['tile']['classifier_tags']


# The bundled integration's identity, which ours must keep

# The app knows an installed integration by its app_uuid and source type: with new ones, an org
# that had the bundled integration would see ours as a different integration, beside it.
BUNDLED_APP_UUID = '49687997-bbf2-45db-9b4f-223cf7c492ed'
BUNDLED_SOURCE_TYPE_ID = 60
# Metrics the bundled metadata.csv names that our StatsD family had left out.
BUNDLED_ONLY_STATUS_METRICS = {f'gunicorn.request.status.{code}' for code in (100, 102, 419, 512)}


def test_manifest_keeps_the_bundled_integration_ids(manifest):
    integration = manifest['assets']['integration']
    assert manifest['app_uuid'] == BUNDLED_APP_UUID
    assert integration['source_type_id'] == BUNDLED_SOURCE_TYPE_ID
    assert integration['source_type_name'] == 'Gunicorn'
    assert integration['process_signatures'] == ['gunicorn: master']


def test_process_signature_names_the_master_and_not_its_workers(manifest, gunicorn_server):
    # The signature is how the app spots gunicorn on a host; held against a real master's title.
    (signature,) = manifest['assets']['integration']['process_signatures']
    server = gunicorn_server(name='signature', workers=1)
    assert title(psutil.Process(server.master_pid)).startswith(signature)
    workers = [title(worker) for worker in server.workers()]
    assert workers and not any(worker.startswith(signature) for worker in workers)


def test_metadata_names_the_bundled_status_metrics(metadata_names):
    with open(ROOT / 'metadata.csv', encoding='utf-8', newline='') as f:
        rows = {row['metric_name']: row for row in csv.DictReader(f)}
    assert BUNDLED_ONLY_STATUS_METRICS <= metadata_names
    family = {
        (row['metric_type'], row['interval'], row['unit_name'], row['per_unit_name'])
        for name, row in rows.items()
        if name.startswith('gunicorn.request.status.')
    }
    assert family == {('rate', '10', 'response', 'second')}


# Service checks


@pytest.fixture(scope='module')
def service_checks():
    return load_json(ROOT / 'assets' / 'service_checks.json')


def test_service_checks_file_is_valid(manifest, service_checks):
    assert len({sc['check'] for sc in service_checks}) == len(service_checks)
    for sc in service_checks:
        assert set(sc) == dd_service_checks.REQUIRED_ATTRIBUTES
        assert re.fullmatch(r'\d+\.\d+\.\d+', sc['agent_version'])
        assert not dd_service_checks.INVALID_CHAR_RE.findall(sc['check'])
        assert not dd_service_checks.INVALID_SEQ_RE.findall(sc['check'])
        assert set(sc['statuses']) <= set(dd_service_checks.SERVICE_CHECK_NAMES)
        assert sc['integration'] == manifest['assets']['integration']['source_type_name']
        assert sc['name'] and sc['description']


def test_service_checks_match_metrics_py(service_checks):
    (running,) = service_checks
    assert running['check'] == metrics.SERVICE_CHECK_RUNNING
    assert running['statuses'] == ['ok', 'critical']
    assert running['groups'] == ['host', 'app']


def test_service_check_file_matches_what_the_check_sends(
    service_checks, gunicorn_server, make_check, dd_run_check, aggregator
):
    # Statuses and tag keys come from running the check against a real gunicorn and against an
    # app that does not exist, rather than from reading check.py.
    declared = {sc['check']: sc for sc in service_checks}
    gunicorn_server(name='assets', workers=1)
    for proc_name in ('assets', 'assets-not-running'):
        dd_run_check(make_check(proc_name, tags=['team:web']))

    sent = [sc for name in aggregator.service_check_names for sc in aggregator.service_checks(name)]
    assert {sc.name for sc in sent} <= set(declared)
    # OK for the running app, CRITICAL for the missing one: both must be declared.
    assert {dd_service_checks.SERVICE_CHECK_NAMES[sc.status] for sc in sent} == {'ok', 'critical'}
    for sc in sent:
        assert dd_service_checks.SERVICE_CHECK_NAMES[sc.status] in declared[sc.name]['statuses']
        # The host group comes from the hostname, not a tag; user tags (team:) are not groups.
        tag_keys = {tag.split(':', 1)[0] for tag in sc.tags} - {'team'}
        assert tag_keys == set(declared[sc.name]['groups']) - {'host'}


# Dashboard


@pytest.fixture(scope='module')
def dashboard():
    return load_json(ROOT / 'assets' / 'dashboards' / 'gunicorn_overview.json')


def test_dashboard_is_valid_dashboard_json(manifest, dashboard):
    assert dd_dashboards.REQUIRED_ATTRIBUTES <= set(dashboard)
    assert dd_dashboards._is_dashboard_format(dashboard)
    queue = []
    _, failed = dd_dashboards.check_widgets(
        dashboard, 'gunicorn_overview.json', manifest['app_uuid'], False, False, False, queue
    )
    assert not failed, queue
    assert dashboard['title'] and dashboard['layout_type'] == 'ordered'
    assert {(v['name'], v['prefix']) for v in dashboard['template_variables']} == {('app', 'app'), ('host', 'host')}
    widgets = list(iter_widgets(dashboard['widgets']))
    ids = [w['id'] for w in widgets]
    assert len(ids) == len(set(ids))
    known = {'group', 'note', 'check_status', 'query_value', 'timeseries', 'toplist', 'log_stream'}
    assert {w['definition']['type'] for w in widgets} <= known


def test_dashboard_formulas_and_queries_agree(dashboard):
    # A formula naming an unknown query renders an error; a query no formula uses is never drawn.
    for widget in iter_widgets(dashboard['widgets']):
        for request in widget['definition'].get('requests', []):
            names = [q['name'] for q in request.get('queries', [])]
            assert len(names) == len(set(names))
            used = set()
            for formula in request.get('formulas', []):
                identifiers = set(re.findall(r'\b[a-z_][a-z0-9_]*\b', formula['formula']))
                assert identifiers <= set(names), formula
                used |= identifiers
            assert used == set(names), widget['definition']['title']


def test_dashboard_queries_only_known_metrics(dashboard, metadata_names):
    queried = set()
    for widget in iter_widgets(dashboard['widgets']):
        for _, query in metric_queries(widget['definition']):
            for name, scope in metrics_in(query['query'], metadata_names):
                queried.add(name)
                # Without both variables in every scope, picking an app or host leaves some graphs unfiltered.
                assert {'$app', '$host'} <= set(scope.split(',')), query['query']
                if name == metrics.WORKERS:
                    # gunicorn's StatsD also sends gunicorn.workers, untagged; only `state:` keeps it out.
                    assert 'state:' in scope, query['query']
    check_metrics = {
        metrics.WORKERS,
        metrics.WORKERS_STARTED,
        metrics.WORKER_RSS_SUM,
        metrics.WORKER_RSS_MAX,
        metrics.WORKER_CPU,
        metrics.CONNECTIONS_ACTIVE,
        metrics.LISTENER_QUEUED,
    }
    statsd_metrics = {
        'gunicorn.requests',
        'gunicorn.request.duration.avg',
        'gunicorn.request.duration.95percentile',
        'gunicorn.request.duration.max',
        'gunicorn.log.critical',
        'gunicorn.log.error',
        'gunicorn.log.warning',
        'gunicorn.log.exception',
    }
    assert check_metrics | statsd_metrics <= queried
    classes = {name.rsplit('.', 1)[1][0] for name in queried if name.startswith('gunicorn.request.status.')}
    assert classes == {'2', '3', '4', '5'}


def test_dashboard_shows_running_state_and_logs(dashboard, manifest):
    definitions = [w['definition'] for w in iter_widgets(dashboard['widgets'])]
    assert any(d['type'] == 'check_status' and d['check'] == metrics.SERVICE_CHECK_RUNNING for d in definitions)
    source = manifest['assets']['logs']['source']
    assert any(d['type'] == 'log_stream' and f'source:{source}' in d['query'].split() for d in definitions)


# Monitors


def monitor_files(manifest):
    return sorted(asset_paths(manifest, 'monitors'))


@pytest.fixture(scope='module')
def monitors(manifest):
    return {path: load_json(ROOT / path) for path in monitor_files(manifest)}


def test_monitors_have_required_fields(monitors):
    for path, monitor in monitors.items():
        assert set(monitor) == {
            'version',
            'created_at',
            'last_updated_at',
            'title',
            'description',
            'definition',
            'tags',
        }, path
        assert monitor['version'] == 2
        assert date.fromisoformat(monitor['created_at']) <= date.fromisoformat(monitor['last_updated_at'])
        assert monitor['title'] and monitor['description']
        assert 'integration:gunicorn' in monitor['tags']
        definition = monitor['definition']
        assert {'name', 'type', 'query', 'message', 'options', 'tags'} <= set(definition), path
        assert definition['type'] in {'query alert', 'service check'}
        assert 'integration:gunicorn' in definition['tags']
        assert 'critical' in definition['options']['thresholds']
        # Monitors are evaluated outside any dashboard, where a template variable means nothing.
        assert '$' not in definition['query']
    assert len({m['definition']['name'] for m in monitors.values()}) == len(monitors)


def test_monitor_thresholds_point_the_right_way(monitors):
    # The app refuses a warning threshold on the wrong side of the critical one.
    for path, monitor in monitors.items():
        definition = monitor['definition']
        if definition['type'] != 'query alert':
            continue
        thresholds = definition['options']['thresholds']
        comparator = THRESHOLD_COMPARATOR.search(definition['query']).group(1)
        assert float(definition['query'].rsplit(comparator, 1)[1]) == thresholds['critical'], path
        if 'warning' in thresholds:
            if comparator.startswith('>'):
                assert thresholds['warning'] < thresholds['critical'], path
            else:
                assert thresholds['warning'] > thresholds['critical'], path


def test_monitors_query_known_metrics_and_service_checks(monitors, metadata_names, service_checks):
    declared = {sc['check']: sc for sc in service_checks}
    watched = set()
    for path, monitor in monitors.items():
        definition = monitor['definition']
        if definition['type'] == 'service check':
            match = SERVICE_CHECK_QUERY.match(definition['query'])
            assert match, path
            name, _, by, last = match.groups()
            assert name in declared, path
            group_keys = {key.strip().strip('"') for key in by.split(',')}
            assert group_keys <= set(declared[name]['groups']), path
            assert definition['options']['thresholds']['critical'] <= int(last), path
            watched.add(name)
        else:
            watched |= {name for name, _ in metrics_in(definition['query'], metadata_names)}
    assert metrics.SERVICE_CHECK_RUNNING in watched
    assert {metrics.WORKERS, metrics.LISTENER_QUEUED, metrics.WORKERS_STARTED, 'gunicorn.requests'} <= watched
    assert any(name.startswith('gunicorn.request.status.5') for name in watched)


def test_busy_workers_monitor_ignores_statsd_worker_count(monitors):
    for monitor in monitors.values():
        query = monitor['definition']['query']
        for name, scope in QUERIED_METRIC.findall(query):
            if name == metrics.WORKERS:
                assert 'state:' in scope, query


# Saved views


@pytest.fixture(scope='module')
def saved_views(manifest):
    return {path: load_json(ROOT / path) for path in asset_paths(manifest, 'saved_views')}


def test_saved_views_are_valid(saved_views, manifest):
    source = manifest['assets']['logs']['source']
    for path, view in saved_views.items():
        keys = set(view)
        assert dd_saved_views.REQUIRED_HEADERS <= keys <= dd_saved_views.ALL_HEADERS, path
        assert view['type'] in dd_saved_views.VALID_TYPES
        assert view['page'] in dd_saved_views.VALID_PAGES
        if view['page'] == 'stream':
            assert set(view.get('options', {})) <= dd_saved_views.STREAM_OPTIONS, path
        assert isinstance(view['timerange']['interval_ms'], int)
        assert isinstance(view.get('visible_facets', []), list)
        assert f'source:{source}' in view['query'].split(), path
    assert len({v['name'] for v in saved_views.values()}) == len(saved_views)


def test_saved_views_cover_errors_and_worker_deaths(saved_views):
    queries = [v['query'] for v in saved_views.values()]
    assert any('@http.status_code:[500 TO 599]' in q for q in queries)
    assert any('@http.status_code:[400 TO 499]' in q for q in queries)
    # The exact wording gunicorn's arbiter logs, so the view works whatever the pipeline names attributes.
    assert any('"WORKER TIMEOUT"' in q and '"was sent SIGKILL"' in q for q in queries)
