"""Which container, and which Kubernetes pod, a process runs in, from its /proc/PID/cgroup.

Container runtimes name the cgroup of each container after its 64-hex id, and Kubernetes
names the cgroup of each pod after its uid, whatever the cgroup version and driver:

    Docker, cgroupfs driver        /docker/<id>
    Docker, systemd driver         /system.slice/docker-<id>.scope
    Kubernetes, cgroupfs driver    /kubepods/<qos>/pod<uid>/<id>          (no <qos> for Guaranteed)
    Kubernetes, systemd driver     /kubepods.slice/kubepods-<qos>.slice/
                                     kubepods-<qos>-pod<uid, _ for ->.slice/cri-containerd-<id>.scope
                                   (crio-<id>.scope under CRI-O, docker-<id>.scope under dockershim)

cgroup v1 lists one line per hierarchy, v2 one line `0::PATH`; every line of a containerized
process names its container, so the first that does is taken. An Agent in a cgroup namespace
of its own sees paths relative to its own cgroup (`/../../kubepods/...`): only the path's last
components matter. A process on the host has no container.
"""

import re
from typing import NamedTuple

from datadog_checks.base.utils.tagging import tagger

from . import procfs

CONTAINER_ID = re.compile(r'(?:^|[/-])([0-9a-f]{64})(?:\.scope)?$')
POD_UID = re.compile(r'pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$')
POD_UID_FORMAT = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}')
# CRI-O's conmon, the monitor of a container, lives in a cgroup named after the container.
NOT_A_CONTAINER = ('crio-conmon-',)


class Container(NamedTuple):
    id: str  # 64 hex digits
    pod_uid: str  # as Kubernetes spells it (with -), '' outside a pod

    @property
    def entity(self):
        """The Agent tagger's name for this container."""
        return f'container_id://{self.id}'


def container_of(pid, root='/proc'):
    """The Container PID runs in, None on the host. Raises what procfs readers raise."""
    return parse_cgroup(procfs.read_cgroup(pid, root))


def parse_cgroup(text):
    """The Container named by the paths of a /proc/PID/cgroup text, or None."""
    for line in text.splitlines():
        path = line.split(':', 2)[-1]
        container = parse_cgroup_path(path)
        if container is not None:
            return container
    return None


def parse_cgroup_path(path):
    components = [part for part in path.split('/') if part]
    if not components or components[-1].startswith(NOT_A_CONTAINER):
        return None
    match = CONTAINER_ID.search(components[-1])
    if match is None:
        return None
    pod_uid = ''
    if len(components) > 1:
        pod = POD_UID.search(components[-2])
        if pod is not None:
            pod_uid = pod.group(1).replace('_', '-')
    return Container(match.group(1), pod_uid)


def tag_cardinality(setting):
    """The tagger's cardinality for the Agent's `checks_tag_cardinality` (low by default)."""
    return {'orchestrator': tagger.ORCHESTRATOR, 'high': tagger.HIGH}.get(str(setting or '').lower(), tagger.LOW)


def container_tags(container, cardinality):
    """`container_id:<id>` and the tags the Agent's tagger has for the container: pod name,
    namespace, deployment... at `cardinality`."""
    return list(dict.fromkeys([f'container_id:{container.id}', *tagger.tag(container.entity, cardinality)]))
