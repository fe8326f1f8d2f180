"""CPython 3.13, the Agent's Python since 7.72, from Debian trixie, in a minimal tree made by
debootstrap: this machine runs Debian bookworm, whose only Python 3 is 3.11.

    python3 -m ci.trixie [PYTEST ARGS]    # what `python3 dev.py test-py313` runs

The suite runs there with the datadog-checks-base floor of pyproject.toml (the README's test
command runs it on 3.11 with the newest base): CI's two suites cover both Pythons and both ends
of the base range, which three suites in a row could not do well within CI's 15 minutes.

The tree is cached in ${XDG_CACHE_HOME:-~/.cache}/datadog-gunicorn-tests/trixie-py313-KEY,
the key hashing what goes into it, and the tests' venv is kept inside the tree (/opt/venvs),
keyed by requirements-dev.txt, the floor and pyproject.toml's `deps` extra. The gunicorn releases'
venvs that tests/releases.py builds go to the tree's own ~/.cache: they belong to its
interpreter, and go with the tree when a new one replaces it.

Every command in the tree runs in a mount namespace of its own, so the mounts it needs
(/proc, /sys, /dev, a fresh /tmp, the clone at /project, this machine's resolv.conf, hosts and
CA bundle) vanish with it, even when it is killed. It stays in the host's PID namespace: the
suite has tests of what an Agent with the host's view sees (pods in PID namespaces of their
own, kthreadd as pid 2), which a PID namespace of its own would hide.
Needs root, as debootstrap, mount and pivot_root do.
"""

import os
import shlex
import shutil
import subprocess
import sys

from .common import (
    BASE,
    ROOT,
    StepFailed,
    base_floor,
    build_once,
    cache_dir,
    deps_extra,
    dev_tools,
    digest,
    floor_install_problems,
    run,
    say,
)

SUITE = 'trixie'
PYTHON = 'python3.13'
# util-linux (unshare, for the network-namespace test) is Essential in Debian: minbase has it.
# iproute2 gives `ip`; ca-certificates makes the CA bundle path that this machine's is mounted on;
# ddev runs git on the repository it validates.
PACKAGES = (PYTHON, f'{PYTHON}-venv', 'iproute2', 'ca-certificates', 'git')
# Bump when the steps below change, so that trees made by the old steps are not reused.
RECIPE = 1
PROJECT = '/project'  # where the clone is mounted in the tree
# Mounted over the tree's own: name resolution as on this machine, and pip verifies TLS against
# this machine's CA bundle (which may hold a CA that Debian's does not). Not the bundle while
# apt installs ca-certificates, whose script replaces that file.
NAME_FILES = ('/etc/resolv.conf', '/etc/hosts')
CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt'
HOST_FILES = (*NAME_FILES, CA_BUNDLE)
PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
# Passed into the tree when set here; nothing else is (PIP_FIND_LINKS, for one, names a folder
# of this machine that the tree does not have). No PYTHONPYCACHEPREFIX: with it, Python skips the
# bytecode pip compiled into the venvs, and every gunicorn the tests start compiles its imports.
PASSED_THROUGH = ('CI', 'TERM', 'NO_COLOR', 'FORCE_COLOR', 'PYTEST_ADDOPTS', 'PYTHONDONTWRITEBYTECODE')

# Runs in the new mount namespace, as root: mounts, then the tree becomes the root. Its arguments:
# the tree, then HOST TARGET pairs to bind-mount (a target in the tree is made if missing), then
# `--` and the command for the tree.
# pivot_root rather than chroot: the tree becomes the namespace's root mount, so a mount namespace
# made inside it (the tests' pods) sees the same paths; after a chroot, /proc/PID/maps of a
# process in such a namespace would name its files by their paths on this machine.
ENTER = r"""
set -eu
tree=$1
shift
mount --bind "$tree" "$tree"
mount -t proc proc "$tree/proc"
mount --rbind /sys "$tree/sys"
mount --rbind /dev "$tree/dev"
mount -t tmpfs -o mode=1777 tmpfs "$tree/tmp"
while [ "$1" != -- ]; do
    if [ -d "$1" ]; then mkdir -p "$tree$2"; elif [ ! -e "$tree$2" ]; then touch "$tree$2"; fi
    mount --bind "$1" "$tree$2"
    shift 2
done
shift
mkdir -p "$tree/.host"
cd "$tree"
pivot_root . .host
umount -l /.host
cd /
exec "$@"
"""


def require_root():
    if os.geteuid() != 0:
        raise StepFailed('the CPython 3.13 tree needs root (debootstrap, mount and pivot_root): run this as root')


def tree_path():
    return cache_dir() / f'trixie-py313-{digest(SUITE, PACKAGES, RECIPE)}'


def environment(**extra):
    """The tree's whole environment, as `env -i` arguments."""
    env = {
        'PATH': PATH,
        'HOME': '/root',
        'LANG': 'C.UTF-8',
        'PIP_CERT': '/etc/ssl/certs/ca-certificates.crt',
        'PIP_DISABLE_PIP_VERSION_CHECK': '1',
        'PYTHONUNBUFFERED': '1',
        'DEBIAN_FRONTEND': 'noninteractive',
    }
    env.update({name: os.environ[name] for name in PASSED_THROUGH if name in os.environ})
    env.update(extra)
    return [f'{name}={value}' for name, value in env.items()]


def in_tree(tree, command, cwd='/', host_files=HOST_FILES, binds=(), stdout=None, check=True, **env):
    """Run COMMAND (a list) in TREE, in namespaces of its own, with the clone at /project, HOST_FILES
    over the tree's own and BINDS, (host path, path in the tree) pairs, mounted."""
    namespaces = ['unshare', '--mount', '--propagation', 'private']
    mounts = [(ROOT, PROJECT), *((file, file) for file in host_files), *binds]
    entering = ['sh', '-c', ENTER, 'sh', tree, *(str(path) for pair in mounts for path in pair), '--']
    chrooted = ['env', '-i', f'--chdir={cwd}', *environment(**env), *command]
    shown = f'$ [{SUITE} tree, in {cwd}] {shlex.join(map(str, command))}'
    return run([*namespaces, *entering, *chrooted], shown=shown, stdout=stdout, check=check)


def ensure_debootstrap():
    found = shutil.which('debootstrap') or shutil.which('debootstrap', path='/usr/sbin:/sbin')
    if found:
        return found
    if not shutil.which('apt-get'):
        raise StepFailed('debootstrap is missing and there is no apt-get to install it with')
    say('installing debootstrap from Debian')
    apt = {**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}
    run(['apt-get', 'update', '-qq'], env=apt)
    run(['apt-get', 'install', '-y', '-qq', 'debootstrap'], env=apt, stdout=subprocess.DEVNULL)
    return shutil.which('debootstrap', path='/usr/sbin:/usr/bin:/sbin:/bin')


def _build_tree(tree):
    debootstrap = ensure_debootstrap()
    say(f'making a minimal Debian {SUITE} tree in {tree}')
    # In a mount namespace of its own: debootstrap mounts /proc and /sys in the tree, and a
    # failure halfway would otherwise leave them mounted on this machine.
    # Its progress goes to its log, tree/debootstrap/debootstrap.log, kept when it fails.
    run(
        ['unshare', '--mount', '--propagation', 'private', debootstrap, '--variant=minbase', SUITE, tree],
        stdout=subprocess.DEVNULL,
    )
    tree.chmod(0o755)  # the tests fork as `nobody`, who must be able to walk down from /
    for file in NAME_FILES:
        target = tree / file.lstrip('/')
        if target.is_symlink():  # a bind mount needs a real file to cover, not a link
            target.unlink()
    say(f'installing {", ".join(PACKAGES)} in the tree')
    # Errors go to stderr; dpkg's progress, to the tree's /var/log/apt/term.log.
    apt = ['apt-get', '-qq', '-o', 'Dpkg::Use-Pty=0']
    packages = [*apt, 'install', '-y', '--no-install-recommends', *PACKAGES]
    in_tree(tree, packages, host_files=NAME_FILES, stdout=subprocess.DEVNULL)
    in_tree(tree, [*apt, 'clean'], host_files=NAME_FILES)
    # What the tests need from the tree, checked once here rather than found missing in a test.
    in_tree(tree, [PYTHON, '-c', 'import ensurepip, ssl, sqlite3, venv, sys; print(sys.version)'])
    in_tree(tree, ['sh', '-c', 'unshare --version && ip -V && getent passwd nobody'])


def ensure_tree():
    """The cached trixie tree with CPython 3.13, made first if needed."""
    require_root()
    tree = tree_path()
    if not build_once(tree, _build_tree):
        say(f'reusing the Debian {SUITE} tree {tree}')
    return tree


def tree_venv(tree, kind, installs, key, what, files=None, problems=None):
    """A venv named KIND in TREE (/opt/venvs/KIND-HASH, HASH of KEY: what decides its contents),
    made with `pip install ARGS` for each ARGS of INSTALLS, one after the other ({venv} in them
    stands for its path); FILES (name: text) are written into it first, for those to name.
    PROBLEMS(pip check's output) tells which of its complaints count (all, by default).
    Returns its path as seen inside the tree."""
    venv = f'/opt/venvs/{kind}-{digest(*key)}'

    def build(path):
        say(f'making the {PYTHON} venv {venv} in the tree for {what}')
        in_tree(tree, [PYTHON, '-m', 'venv', venv])
        for name, text in (files or {}).items():
            (path / name).write_text(text)
        for install in installs:
            arguments = [argument.replace('{venv}', venv) for argument in install]
            in_tree(tree, [f'{venv}/bin/python', '-m', 'pip', 'install', '--quiet', *arguments])
        check = in_tree(tree, [f'{venv}/bin/python', '-m', 'pip', 'check'], check=False, stdout=subprocess.PIPE)
        output = check.stdout.decode()
        found = (problems or str.splitlines)(output) if check.returncode else []
        if found:
            raise StepFailed(f'pip check in {venv}:\n' + '\n'.join(found))

    if not build_once(tree / venv.lstrip('/'), build):
        say(f'reusing the {PYTHON} venv {venv} in the tree for {what}')
    return venv


def ensure_venv(tree):
    """The tests' venv inside TREE, on the datadog-checks-base floor: the test tools of
    requirements-dev.txt, then the floor with its own pins (as ci/floor.py does on 3.11). The check
    itself is not installed: /project is on PYTHONPATH, as an editable install would put it."""
    floor = base_floor()
    return tree_venv(
        tree,
        'floor',
        [['-r', '{venv}/tools.txt'], [f'{BASE}[deps]=={floor}', *deps_extra()]],
        [(ROOT / 'requirements-dev.txt').read_bytes(), floor, *deps_extra()],
        f'the tests, with {BASE} {floor}',
        files={'tools.txt': '\n'.join(dev_tools()) + '\n'},
        problems=floor_install_problems,
    )


def build_release_venvs(tree, venv):
    """tests/releases.py's venvs of other gunicorn releases, for 3.13, before the suite needs them."""
    if (ROOT / 'tests' / 'releases.py').is_file():
        in_tree(tree, [f'{venv}/bin/python', '-m', 'tests.releases'], cwd=PROJECT, PYTHONPATH=PROJECT)


def prepare():
    tree = ensure_tree()
    venv = ensure_venv(tree)
    build_release_venvs(tree, venv)
    return tree, venv


def test(pytest_args=()):
    tree, venv = prepare()
    say(f'the test suite on {PYTHON} from Debian {SUITE}, with {BASE} {base_floor()}')
    in_tree(tree, [f'{venv}/bin/python', '-m', 'pytest', *pytest_args], cwd=PROJECT, PYTHONPATH=PROJECT)


if __name__ == '__main__':
    try:
        test(sys.argv[1:])
    except StepFailed as e:
        sys.exit(f'error: {e}')
