#!/usr/bin/env bash
# Install a local Slurm (Debian's slurmctld + slurmd + slurm-client, 22.05 on bookworm) and the
# shell linter (Debian package "shellcheck"), for the launch tests (tests/launch/). Idempotent:
# does nothing when everything is already installed. Nothing starts by itself: the tests start
# their own daemons on a private slurm.conf (tests/launch/slurm_cluster.py). Needs root (CI runs
# as root).
#   bash .ci/install-slurm.sh
set -euo pipefail

packages=(slurmctld slurmd slurm-client shellcheck)

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-slurm: already installed: ${packages[*]}"
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-slurm: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
# The postinst scripts' "policy-rc.d denied execution" lines are harmless: no daemon is started.
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-slurm: done ($(slurmctld -V 2>/dev/null || echo 'slurmctld ?'))"
