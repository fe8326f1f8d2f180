"""Containers and pods made for real: gunicorn as PID 1 of its own PID and network namespaces,
inside cgroups named the way the kubelet (systemd driver, containerd) and cgroupfs name a pod's
container, seen from the host as an Agent with `hostPID` sees it. The Agent's tagger is
datadog-checks-base's stub, holding the pod tags the real one would have."""

import errno
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import gunicorn
import pytest

from datadog_checks.base import AgentCheck
from datadog_checks.base.stubs import tagger
from datadog_checks.gunicorn import pidfd, sockdiag
from datadog_checks.gunicorn.diagnose import MASTER, NETWORK_NAMESPACES, VISIBILITY

from .server import wait_until
from .test_saturation import close_all, hold_requests, in_network_namespace_of
from .test_serving import kept_alive, last
from .unprivileged import run_as_nobody

PASS, FAIL = 0, 1

CGROUP_V2 = Path('/sys/fs/cgroup/unified')
CGROUP_V1_SYSTEMD = Path('/sys/fs/cgroup/systemd')


def cgroups_writable():
    """Why this machine cannot make containers' cgroups, or None when it can."""
    for root in (CGROUP_V2, CGROUP_V1_SYSTEMD):
        if not (root / 'cgroup.procs').exists():
            return f'no cgroup hierarchy mounted at {root}'
        probe = root / f'gunicorn-check-probe-{os.getpid()}'
        try:
            probe.mkdir()
            probe.rmdir()
        except OSError as e:
            return f'cannot create a cgroup under {root}: {e.strerror}'
    if shutil.which('unshare') is None:
        return 'no unshare command (util-linux)'
    return None


pytestmark = pytest.mark.skipif(cgroups_writable() is not None, reason=f'{cgroups_writable()}')


class Pod(NamedTuple):
    uid: str
    container_id: str
    server: object

    @property
    def entity(self):
        return f'container_id://{self.container_id}'


@pytest.fixture
def pods(gunicorn_server):
    """`pods(name, workers)` starts gunicorn as PID 1 of a new pod: its own PID and network
    namespaces, v2 cgroup as the kubelet's systemd driver names it, v1 name=systemd cgroup as
    its cgroupfs driver does. Servers are stopped by pid, then the cgroups removed."""
    made = []

    def start(name, workers=2, **options):
        uid, container_id = str(uuid.uuid4()), secrets.token_hex(32)
        pod_slice = f'kubepods-burstable-pod{uid.replace("-", "_")}.slice'
        v2 = (
            CGROUP_V2
            / 'kubepods.slice'
            / 'kubepods-burstable.slice'
            / pod_slice
            / f'cri-containerd-{container_id}.scope'
        )
        v1 = CGROUP_V1_SYSTEMD / 'kubepods' / 'burstable' / f'pod{uid}' / container_id
        for path in (v2, v1):
            path.mkdir(parents=True)
        made.append((v2, v1))
        server = gunicorn_server(
            name=name, workers=workers, own_pid_namespace=True, own_network_namespace=True, cgroups=[v2, v1], **options
        )
        made[-1] += (server,)
        return Pod(uid, container_id, server)

    yield start
    for *paths, server in made:
        server.stop()
        for path, root in zip(paths, (CGROUP_V2, CGROUP_V1_SYSTEMD), strict=True):
            while path != root and path.exists():
                try:
                    path.rmdir()
                except OSError:
                    break  # still holds another pod's cgroup
                path = path.parent


@pytest.fixture(autouse=True)
def clean_tagger():
    tagger.reset()
    yield
    tagger.reset()


def series(aggregator, name):
    """{frozenset(tags): value} of the last submission of `name` under each tag set."""
    return {frozenset(m.tags): m.value for m in aggregator.metrics(name)}


def idle_workers(aggregator):
    return {
        tags - {'state:idle'}: value
        for tags, value in series(aggregator, 'gunicorn.workers').items()
        if 'state:idle' in tags
    }


def test_the_master_is_pid_1_of_its_pod(pods):
    pod = pods('pid1', workers=1)
    status = Path(f'/proc/{pod.server.master_pid}/status').read_text()
    assert re.search(r'^NSpid:\s+\d+\s+1$', status, re.M), 'the harness did not make the master PID 1 of its namespace'
    assert f'cri-containerd-{pod.container_id}.scope' in Path(f'/proc/{pod.server.master_pid}/cgroup').read_text()


def test_two_pods_of_one_app_and_one_on_the_host_are_three_series(
    pods, gunicorn_server, make_check, dd_run_check, aggregator
):
    first, second = pods('shop', workers=2), pods('shop', workers=3)
    gunicorn_server(name='shop', workers=1)
    tagger.set_tags(
        {
            first.entity: ['kube_namespace:prod', 'pod_name:shop-7c9f-a', 'kube_deployment:shop'],
            second.entity: ['kube_namespace:prod', 'pod_name:shop-7c9f-b', 'kube_deployment:shop'],
        }
    )
    check = make_check('shop', tags=['team:web'])

    dd_run_check(check)

    common = {'app:shop', 'team:web'}
    assert idle_workers(aggregator) == {
        frozenset(
            common
            | {
                f'container_id:{first.container_id}',
                'kube_namespace:prod',
                'pod_name:shop-7c9f-a',
                'kube_deployment:shop',
            }
        ): 2,
        frozenset(
            common
            | {
                f'container_id:{second.container_id}',
                'kube_namespace:prod',
                'pod_name:shop-7c9f-b',
                'kube_deployment:shop',
            }
        ): 3,
        frozenset(common): 1,  # the host's master reports exactly as it always did
    }
    running = aggregator.service_checks('gunicorn.is_running')
    assert sorted(sc.status for sc in running) == [AgentCheck.OK] * 3
    tagger.assert_called(first.entity, tagger.LOW)  # the Agent's default checks_tag_cardinality


def test_pod_uid_keeps_only_that_pods_masters(pods, gunicorn_server, make_check, dd_run_check, aggregator):
    first, second = pods('cart', workers=2), pods('cart', workers=3)
    gunicorn_server(name='cart', workers=1)

    dd_run_check(make_check('cart', pod_uid=second.uid))

    assert idle_workers(aggregator) == {frozenset({'app:cart', f'container_id:{second.container_id}'}): 3}
    aggregator.reset()

    absent = str(uuid.uuid4())
    check = make_check('cart', pod_uid=absent)
    dd_run_check(check)
    aggregator.assert_service_check(
        'gunicorn.is_running', AgentCheck.CRITICAL, tags=['app:cart'], message=re.escape(f'in pod {absent}.'), count=1
    )
    assert f'in pod {absent}' in check.warnings[0]
    assert first.uid != second.uid


def test_without_proc_name_every_master_in_scope_is_its_own_app(
    pods, gunicorn_server, make_check, dd_run_check, aggregator
):
    pod = pods('orders', workers=2)
    gunicorn_server(name='blog', workers=1)
    gunicorn_server(name='wiki', workers=3)

    dd_run_check(make_check(None))
    everywhere = idle_workers(aggregator)
    aggregator.reset()
    dd_run_check(make_check(None, pod_uid=pod.uid))
    in_pod = idle_workers(aggregator)
    aggregator.reset()
    dd_run_check(make_check(None, pod_uid=str(uuid.uuid4())))

    assert everywhere[frozenset({'app:orders', f'container_id:{pod.container_id}'})] == 2
    assert everywhere[frozenset({'app:blog'})] == 1
    assert everywhere[frozenset({'app:wiki'})] == 3
    assert in_pod == {frozenset({'app:orders', f'container_id:{pod.container_id}'}): 2}
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.CRITICAL, tags=[], count=1)


def test_a_pid_1_master_in_its_own_network_namespace_is_read_whole(
    pods, make_check, dd_run_check, aggregator, datadog_agent
):
    pod = pods('api', workers=2)
    tagger.set_tags({pod.entity: ['pod_name:api-0']})
    busy = in_network_namespace_of(pod.server.master_pid, lambda: hold_requests(pod.server, '/sleep?s=8', 1))
    try:
        check = make_check('api')
        check.check_id = 'test:pod'
        wait_until(lambda: dd_run_check(check) or working(aggregator) == 1, what='the request being served')
    finally:
        close_all(busy)

    tags = {'app:api', f'container_id:{pod.container_id}', 'pod_name:api-0'}
    assert series(aggregator, 'gunicorn.workers')[frozenset(tags | {'state:idle'})] == 1
    listener = series(aggregator, 'gunicorn.listener.active')
    assert listener == {frozenset(tags | {f'listener:127.0.0.1:{pod.server.port}'}): 1}
    (heartbeat,) = series(aggregator, 'gunicorn.worker.heartbeat.age.max').items()
    assert heartbeat[0] == frozenset(tags) and 0 <= heartbeat[1] < 20
    datadog_agent.assert_metadata('test:pod', {'version.raw': gunicorn.__version__})


def working(aggregator):
    values = [m.value for m in aggregator.metrics('gunicorn.workers') if 'state:working' in m.tags]
    return values[-1] if values else None


def test_checks_tag_cardinality_is_the_agents(pods, make_check, dd_run_check, datadog_agent):
    pod = pods('card', workers=1)
    datadog_agent._config['checks_tag_cardinality'] = 'orchestrator'  # the stub's only way to set datadog.yaml

    dd_run_check(make_check('card'))

    tagger.assert_called(pod.entity, tagger.ORCHESTRATOR)


def test_keep_alive_in_a_pods_own_network_namespace_is_told_from_work(pods, make_check, dd_run_check, aggregator):
    pod = pods('ka', workers=2, worker_class='gthread', args=['--keep-alive', '30'])
    connections = in_network_namespace_of(pod.server.master_pid, lambda: kept_alive(pod.server, 2))
    try:
        check = make_check('ka')
        dd_run_check(check)
        idle = working(aggregator), last(aggregator, 'gunicorn.connections.active')
        connections[0].request('GET', '/sleep?s=6')
        started, runs = time.monotonic(), []

        def one_run():
            aggregator.reset()
            dd_run_check(check)
            runs.append(
                (
                    round(time.monotonic() - started, 3),
                    working(aggregator),
                    last(aggregator, 'gunicorn.requests.in_flight'),
                    last(aggregator, 'gunicorn.connections.active'),
                )
            )
            return working(aggregator) == 1

        wait_until(
            one_run,
            what=lambda: f'1 working; of {len(runs)} runs (s after the request, working, in flight, active), '
            f'the first: {runs[:10]}, the last: {runs[-3:]}',
        )
        in_flight = last(aggregator, 'gunicorn.requests.in_flight')
    finally:
        for connection in connections:
            connection.close()

    assert idle == (0, 2)  # two kept-alive connections, no request: tcp_info read inside the pod's namespace
    assert in_flight == 1
    (pool,) = check.pools.values()
    assert all(sock is not None for sock in pool.sockets.diag_sockets.values())


def diagnoses(check):
    return {d['name']: d for d in json.loads(check.get_diagnoses())}


def test_an_agent_in_a_pid_namespace_of_its_own_is_told_it_sees_only_its_container(pods):
    pods('hidden', workers=1)
    script = (
        'import json; from datadog_checks.gunicorn import GunicornCheck; '
        "check = GunicornCheck('gunicorn', {}, [{'proc_name': 'hidden'}]); print(check.get_diagnoses())"
    )
    # As an Agent container without hostPID: its own PID namespace, its own /proc.
    result = subprocess.run(
        ['unshare', '--pid', '--fork', '--mount-proc', sys.executable, '-c', script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    found = {d['name']: d for d in json.loads(result.stdout)}

    assert found[VISIBILITY]['result'] == FAIL
    assert 'PID namespace of its own' in found[VISIBILITY]['diagnosis']
    assert 'hostPID: true' in found[VISIBILITY]['remediation']
    assert found[MASTER]['result'] == FAIL


def test_diagnoses_from_the_host_see_every_pod_and_may_join_its_network_namespace(pods, make_check):
    pod = pods('seen', workers=1)

    found = diagnoses(make_check(None, pod_uid=pod.uid))

    assert found[VISIBILITY]['result'] == PASS
    assert found[MASTER]['result'] == PASS and '`seen`' in found[MASTER]['diagnosis']
    assert NETWORK_NAMESPACES not in found  # root may open sock_diag in the pod's namespace


def test_an_agent_that_may_not_join_a_pods_network_namespace_is_told_what_it_costs(pods, make_check):
    pod = pods('guarded', workers=1)
    make_check('warm-up').get_diagnoses()  # imports done while the interpreter is readable

    found = run_as_nobody(lambda: diagnoses(make_check('guarded')))

    assert found[NETWORK_NAMESPACES]['result'] == FAIL
    assert str(pod.server.master_pid) in found[NETWORK_NAMESPACES]['diagnosis']
    assert 'kept-alive connection' in found[NETWORK_NAMESPACES]['diagnosis']


def test_an_agent_that_may_ask_the_workers_sockets_needs_no_pods_network_namespace(pods, make_check, monkeypatch):
    # CAP_SYS_PTRACE without CAP_SYS_ADMIN: setns refused, pidfd_getfd allowed. Only the refusal
    # can be injected; the sockets are asked for real.
    pod = pods('ptraced', workers=1)

    def refused(netns=None):
        raise sockdiag.SockDiagUnavailable(f'sock_diag netlink in {netns}: Operation not permitted')

    monkeypatch.setattr(sockdiag, 'open_socket', refused)
    found = diagnoses(make_check(None, pod_uid=pod.uid))

    assert found[MASTER]['result'] == PASS
    assert NETWORK_NAMESPACES not in found

    def ptrace_refused(pidfd_, fd):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(pidfd, 'getfd', ptrace_refused)  # and neither way open: said so
    found = diagnoses(make_check(None, pod_uid=pod.uid))

    assert found[NETWORK_NAMESPACES]['result'] == FAIL
    assert 'CAP_SYS_PTRACE' in found[NETWORK_NAMESPACES]['remediation']


def test_a_pool_that_goes_away_closes_the_sockets_it_kept(pods, make_check, dd_run_check):
    pod = pods('gone', workers=1)
    check = make_check('gone')
    dd_run_check(check)
    (state,) = check.pools.values()
    (kept,) = [sock for sock in state.sockets.diag_sockets.values() if sock is not None]

    pod.server.stop()
    dd_run_check(check)

    assert check.pools == {}
    assert kept.fileno() == -1  # closed at once, not left to the garbage collector
