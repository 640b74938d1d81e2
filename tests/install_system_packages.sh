#!/usr/bin/env bash
# Debian packages some tests need, installed by `make test` when missing:
#   slurm-wlm, munge  the one-node SLURM cluster test (tests/test_slurm.py)
#   chromium          the report opened in a headless browser (tests/browser.py)
# Where it cannot install (not root, no apt-get), those tests skip and say why.
set -euo pipefail
need=()
if ! command -v slurmctld >/dev/null 2>&1 && [ ! -x /usr/sbin/slurmctld ]; then
    need+=(slurm-wlm munge)
fi
if ! command -v chromium >/dev/null 2>&1; then
    need+=(chromium)
fi
if [ ${#need[@]} = 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_system_packages.sh: cannot install ${need[*]} here (needs root and apt-get); their tests will skip" >&2
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
