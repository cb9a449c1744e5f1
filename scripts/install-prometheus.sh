#!/usr/bin/env bash
# Provides Prometheus and promtool for the monitoring tests (tests/e2e/test_prometheus.py): reuses
# them when both are on PATH, else installs Debian's `prometheus` package (Debian 12: 2.42) with
# apt-get. Reproducible: the distribution's package, no recommended extras (node-exporter), and
# the package's own service is neither started nor left enabled; the tests run their own
# Prometheus on loopback with a generated configuration.
#
# How the service is kept down: a policy-rc.d that answers 101 ("action forbidden") is in place
# for the duration of the install, so the postinst's invoke-rc.d / deb-systemd-invoke never start
# it; the original policy-rc.d (if any) is restored afterwards. Then the unit and the SysV script
# are disabled, and stopped if systemd runs them anyway.
#
# Needs root (or password-less sudo) and apt-get. Prints the prometheus path, then the promtool
# path, as the last two lines on stdout; everything else goes to stderr.
set -euo pipefail
TAG=install-prometheus
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

found() { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; }

report() {
  local prometheus promtool
  prometheus=$(command -v prometheus)
  promtool=$(command -v promtool)
  log "prometheus: $("$prometheus" --version 2>&1 | head -n 1)"
  echo "$prometheus"
  echo "$promtool"
}

if found; then
  log "reusing prometheus and promtool from PATH"
  report
  exit 0
fi

command -v apt-get >/dev/null 2>&1 \
  || die "prometheus/promtool are not on PATH and apt-get is unavailable: install Prometheus >= 2.42 (its 'prometheus' and 'promtool' binaries) by other means and put them on PATH"

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    die "installing the 'prometheus' package with apt-get needs root (or password-less sudo); run this script as root, or put prometheus and promtool on PATH"
  fi
fi

POLICY=/usr/sbin/policy-rc.d
backup=""
restore_policy() {
  if [[ -n "$backup" ]]; then
    "${SUDO[@]}" mv -f "$backup" "$POLICY"
  else
    "${SUDO[@]}" rm -f "$POLICY"
  fi
}
if [[ -e "$POLICY" ]]; then
  backup=$("${SUDO[@]}" mktemp /usr/sbin/.policy-rc.d.aio.XXXXXX)
  "${SUDO[@]}" cp -p "$POLICY" "$backup"
fi
trap restore_policy EXIT
printf '#!/bin/sh\n# install-prometheus.sh: no service starts during this install\nexit 101\n' \
  | "${SUDO[@]}" tee "$POLICY" >/dev/null
"${SUDO[@]}" chmod 0755 "$POLICY"

start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
log "apt-get update"
"${SUDO[@]}" apt-get update -q >&2 || die "apt-get update failed (check the Debian package sources and the network)"
log "apt-get install -y --no-install-recommends prometheus"
"${SUDO[@]}" apt-get install -y -q --no-install-recommends prometheus >&2 \
  || die "apt-get install prometheus failed (see apt's output above)"

# The package enables its unit (and SysV script): disable both, stop it if systemd started it.
if command -v systemctl >/dev/null 2>&1; then
  "${SUDO[@]}" systemctl disable prometheus.service >&2 2>/dev/null || true
  if [[ -d /run/systemd/system ]]; then
    "${SUDO[@]}" systemctl stop prometheus.service >&2 2>/dev/null || true
  fi
fi
if command -v update-rc.d >/dev/null 2>&1 && [[ -e /etc/init.d/prometheus ]]; then
  "${SUDO[@]}" update-rc.d prometheus disable >&2 2>/dev/null || true
fi

found || die "the 'prometheus' package installed, but prometheus and promtool are still not on PATH ($PATH)"
log "installed in $(( $(date +%s) - start ))s; the package's prometheus service is disabled and not running"
report
