"""Container and pod of a process, from /proc/PID/cgroup texts as each runtime and driver writes them."""

import os

import pytest

from datadog_checks.gunicorn import containers
from datadog_checks.gunicorn.containers import Container

ID = 'f3c1d2e4a5b60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90'
UID = '6f1d3b2a-9c8e-4d7f-a1b2-c3d4e5f60718'
UID_ = UID.replace('-', '_')


@pytest.mark.parametrize(
    'text, expected',
    [
        # cgroup v2, Docker: cgroupfs driver, then systemd driver
        (f'0::/docker/{ID}\n', Container(ID, '')),
        (f'0::/system.slice/docker-{ID}.scope\n', Container(ID, '')),
        # cgroup v2, Kubernetes, systemd driver: containerd, CRI-O, dockershim; Guaranteed has no QoS level
        (
            f'0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope\n',
            Container(ID, UID),
        ),
        (
            f'0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope\n',
            Container(ID, UID),
        ),
        (f'0::/kubepods.slice/kubepods-pod{UID_}.slice/docker-{ID}.scope\n', Container(ID, UID)),
        # cgroupfs driver
        (f'0::/kubepods/burstable/pod{UID}/{ID}\n', Container(ID, UID)),
        (f'0::/kubepods/pod{UID}/{ID}\n', Container(ID, UID)),
        # cgroup v1: one line per hierarchy, any of which names the container
        (
            f'12:pids:/kubepods/besteffort/pod{UID}/{ID}\n11:memory:/kubepods/besteffort/pod{UID}/{ID}\n'
            f'1:name=systemd:/kubepods/besteffort/pod{UID}/{ID}\n0::/\n',
            Container(ID, UID),
        ),
        (f'4:memory:/process_api/abc\n1:name=systemd:/docker/{ID}\n0::/\n', Container(ID, '')),
        # seen from an Agent in a cgroup namespace of its own
        (f'0::/../../kubepods/burstable/pod{UID}/{ID}\n', Container(ID, UID)),
        # on the host
        ('0::/\n', None),
        ('0::/user.slice/user-1000.slice/session-3.scope\n', None),
        ('9:name=systemd:/\n4:memory:/process_api/0b1bdbb860183dbabf86008fa9695814\n0::/\n', None),
        # CRI-O's monitor of a container is not the container
        (f'0::/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope\n', None),
        # not an id: 63 hex digits, or more than 64
        (f'0::/docker/{ID[:-1]}\n', None),
        (f'0::/docker/a{ID}\n', None),
        ('', None),
        ('garbage without colons\n', None),
    ],
    ids=[
        'v2-docker',
        'v2-docker-systemd',
        'v2-k8s-containerd-burstable',
        'v2-k8s-crio-besteffort',
        'v2-k8s-guaranteed-dockershim',
        'k8s-cgroupfs-burstable',
        'k8s-cgroupfs-guaranteed',
        'v1-k8s',
        'v1-docker-among-others',
        'cgroup-namespace',
        'host-root',
        'host-session',
        'host-v1',
        'crio-conmon',
        'short-id',
        'long-id',
        'empty',
        'garbage',
    ],
)
def test_parse_cgroup(text, expected):
    assert containers.parse_cgroup(text) == expected


def test_this_process_is_on_the_host_or_in_a_container_it_can_name():
    found = containers.container_of(os.getpid())
    assert found is None or len(found.id) == 64
    assert Container(ID, UID).entity == f'container_id://{ID}'
