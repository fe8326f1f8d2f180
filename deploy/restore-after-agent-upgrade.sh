#!/bin/sh
# Put this gunicorn check back into the Datadog Agent (Linux package) when the Agent has another
# datadog-gunicorn, as it does after every Agent upgrade: the upgrade lays down a new embedded
# Python environment with the bundled check in it, and the Agent's restore of third-party
# integrations skips datadog-gunicorn, which the Agent's own release lists.
#
#   restore-after-agent-upgrade.sh /path/to/datadog_gunicorn-X.Y.Z-py3-none-any.whl
#
# Run it as root after whatever installs or upgrades the Agent, at every configuration-management
# run: it changes nothing while our version is installed. The wheel must be readable by dd-agent.
# Exit status: 0 when our version is installed (a line starting with "installed" says this run
# installed it and restarted the Agent), 1 when the wheel cannot work with this Agent and nothing
# was changed, 2 for a usage error.
set -eu

if [ $# -ne 1 ] || [ ! -r "$1" ]; then
    echo "usage: $0 /path/to/datadog_gunicorn-X.Y.Z-py3-none-any.whl (a readable file)" >&2
    exit 2
fi
wheel=$(readlink -f "$1")  # absolute: the commands below run from /
# A wheel is named NAME-VERSION-TAGS.whl; `integration show -q` prints a release version x.y.z
# the same way.
want=$(basename "$wheel" | cut -d- -f2)
# The interpreter the Agent runs its checks with: the Linux package's embedded Python.
python=${DD_AGENT_PYTHON:-/opt/datadog-agent/embedded/bin/python3}

# dd-agent may not be allowed into the caller's working directory (root's home, say).
cd /

# As Datadog documents for `datadog-agent integration` on Linux: as the user the Agent runs as.
as_agent() {
    sudo -u dd-agent "$@"
}

# Empty when no datadog-gunicorn is installed, else its version.
have=$(as_agent datadog-agent integration show -q datadog-gunicorn 2>/dev/null | tail -n 1)
if [ "$have" = "$want" ]; then
    exit 0
fi

# `integration install -w` checks that the wheel requires datadog-checks-base, not which version:
# pip would install it over an older base, and the check would fail once the Agent loads it. pip
# asked to resolve the wheel from the packages already installed (no index, nothing changed) says
# whether the Agent's base meets the wheel's floor.
if ! as_agent "$python" -m pip install --dry-run --no-index --no-cache-dir --disable-pip-version-check \
    --quiet "$wheel"; then
    echo "$wheel NOT installed: pip cannot meet its requirements with the Agent's packages (see above)." >&2
    echo "Compare 'datadog-agent integration show datadog-checks-base' with the wheel's" \
        "'Requires-Dist: datadog-checks-base' floor." >&2
    exit 1
fi

as_agent datadog-agent integration install -w "$wheel"
systemctl restart datadog-agent
echo "installed datadog-gunicorn $want in place of ${have:-none}; restarted the Agent"
