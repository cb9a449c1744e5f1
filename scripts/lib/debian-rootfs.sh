# shellcheck shell=bash
# Shared by scripts/kind/node-image.sh and scripts/kind/python-base-image.sh (source it; it defines
# functions only). A minimal Debian root filesystem made by debootstrap, with apt working inside:
# what both the kind node image and the Python base image start from.
#
# The caller sets SUITE (e.g. bookworm) and defines log() and die(). DEBIAN_MIRROR overrides the
# mirror; by default it is the host's own when the host runs the same suite (else debootstrap's).

# debian_host_mirror: the host's Debian mirror (its first "deb"/URIs entry that is not a security
# archive) when the host runs $SUITE; empty means debootstrap's default.
debian_host_mirror() {
  [[ -n "${DEBIAN_MIRROR:-}" ]] && { echo "$DEBIAN_MIRROR"; return; }
  grep -qs "VERSION_CODENAME=$SUITE" /etc/os-release || return 0
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } \
    | sed -nE 's/^(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?([a-z]+:[^[:space:]]+).*/\3/p' \
    | { grep -v -- '-security' || true; } | head -n 1
}

# debian_chroot ROOT COMMAND...: COMMAND inside ROOT with a clean, non-interactive environment.
debian_chroot() {
  local root=$1; shift
  chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"
}

# debian_rootfs ROOT LOGFILE PACKAGE...: debootstrap --variant=minbase $SUITE into ROOT with
# PACKAGES; then the host's apt sources (updates and security too, when the host runs $SUITE) and
# DNS, no service allowed to start (policy-rc.d), /proc mounted, and apt-get update && upgrade.
# The caller installs what else it needs, then unmounts ROOT/proc and removes policy-rc.d.
debian_rootfs() {
  local root=$1 logfile=$2 mirror
  shift 2
  mirror=$(debian_host_mirror)
  log "debootstrap --variant=minbase $SUITE + $* (mirror: ${mirror:-debootstrap default}); log: $logfile"
  debootstrap --variant=minbase --include="$(IFS=,; echo "$*")" "$SUITE" "$root" ${mirror:+"$mirror"} \
      > "$logfile" 2>&1 || { tail -n 30 "$logfile" >&2; die "debootstrap failed"; }
  if grep -qs "VERSION_CODENAME=$SUITE" /etc/os-release && [[ -z "${DEBIAN_MIRROR:-}" ]]; then
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
      cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
      : > "$root/etc/apt/sources.list"
    fi
    if grep -qs '^deb ' /etc/apt/sources.list; then cp /etc/apt/sources.list "$root/etc/apt/sources.list"; fi
  fi
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"; chmod +x "$root/usr/sbin/policy-rc.d"
  mount -t proc proc "$root/proc"
  log "apt-get update && upgrade in the chroot"
  debian_chroot "$root" apt-get update -qq >&2 || die "apt-get update in the chroot failed"
  debian_chroot "$root" apt-get upgrade -y -qq >&2 || die "apt-get upgrade in the chroot failed"
}
