#!/usr/bin/env bash
# Debian's slurm-wlm and munge, for the one-node SLURM cluster test (tests/test_slurm.py).
# Run by `make test`; where it cannot install (not root, no apt-get), the test skips and says why.
set -euo pipefail
if command -v slurmctld >/dev/null 2>&1 || [ -x /usr/sbin/slurmctld ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_slurm.sh: cannot install slurm-wlm here (needs root and apt-get); tests/test_slurm.py will skip" >&2
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
