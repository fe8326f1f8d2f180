"""`python -m datadog_checks.gunicorn`: what the Agent would collect, without an Agent."""

import io
import json
import subprocess
import sys

from datadog_checks.gunicorn import runner


def run_main(*argv):
    out = io.StringIO()
    code = runner.main(list(argv), out=out)
    return code, out.getvalue()


def json_block(output, title):
    start = output.index(f'=== {title} ===\n') + len(f'=== {title} ===\n')
    end = output.index('\n=', start)
    return json.loads(output[start:end])


def test_prints_series_service_checks_and_metadata(gunicorn_server):
    gunicorn_server(name='printed', workers=2)

    code, output = run_main('--proc-name', 'printed', '--tag', 'team:web', '--check-times', '2', '--pause', '10')

    assert code == 0
    series = json_block(output, 'Series')
    workers = [s for s in series if s['metric'] == 'gunicorn.workers']
    assert {(s['metric'], s['points'][0][1], tuple(s['tags'])) for s in workers} == {
        ('gunicorn.workers', 0.0, ('app:printed', 'state:working', 'team:web')),
        ('gunicorn.workers', 2.0, ('app:printed', 'state:idle', 'team:web')),
    }
    (service_check,) = json_block(output, 'Service Checks')
    assert (service_check['check'], service_check['status']) == ('gunicorn.is_running', 0)
    assert 'gunicorn.worker.started' in {s['metric'] for s in series}, 'a second run compares with the first'
    assert 'Total Runs: 2' in output
    assert '[OK]' in output
    assert 'version.raw: ' in output


def test_reads_a_conf_yaml_and_runs_every_instance(gunicorn_server, tmp_path):
    gunicorn_server(name='from-file', workers=1)
    conf = tmp_path / 'conf.yaml'
    conf.write_text('init_config:\ninstances:\n  - proc_name: from-file\n  - proc_name: not-running\n')

    code, output = run_main('--conf', str(conf))

    assert code == 0
    statuses = {tuple(s['tags']): s['status'] for s in json_block(output, 'Service Checks')}
    assert statuses == {('app:from-file',): 0, ('app:not-running',): 2}
    assert 'Warning: No process titled `gunicorn: master [not-running]` is running.' in output


def test_check_error_exits_non_zero_and_prints_it(tmp_path):
    conf = tmp_path / 'conf.yaml'
    conf.write_text('instances:\n  - proc_name: 5\n')

    code, output = run_main('-c', str(conf))

    assert code == 1
    assert '[ERROR]' in output
    assert 'Error: Detected 1 error while loading configuration model `InstanceConfig`:' in output
    assert json_block(output, 'Series') == []


def test_unreadable_or_invalid_conf_is_a_usage_error(tmp_path, capsys):
    broken = tmp_path / 'broken.yaml'
    broken.write_text('instances: [\n')
    empty = tmp_path / 'empty.yaml'
    empty.write_text('init_config:\n')

    assert run_main('-c', str(broken))[0] == 2
    assert 'is not valid YAML' in capsys.readouterr().err
    assert run_main('-c', str(empty))[0] == 2
    assert 'has no `instances:` list' in capsys.readouterr().err
    assert run_main('-c', str(tmp_path / 'missing.yaml'))[0] == 2
    assert 'cannot read' in capsys.readouterr().err


def test_module_entry_point(gunicorn_server):
    gunicorn_server(name='entry', workers=1)

    result = subprocess.run(
        [sys.executable, '-m', 'datadog_checks.gunicorn', '--proc-name', 'entry'],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert '"check": "gunicorn.is_running"' in result.stdout
