#!/usr/bin/env bash
# Makes sure a Docker engine answers on this machine, starting one if needed. Idempotent: when
# `docker info` already answers, it does nothing.
#
# Why: the CI machines have a docker client but no engine, and no image registry. We install
# Debian's docker.io (dockerd, containerd, runc), debootstrap (for building base images from Debian
# packages, see node-image.sh and python-base-image.sh) and iptables, then start dockerd in the
# background.
#
# Why a runtime wrapper: these machines drop some capabilities (CAP_SYS_RESOURCE) from the bounding
# set, so runc cannot grant them and every privileged container (kind's nodes are privileged) fails
# with "unable to apply caps: operation not permitted". /usr/local/bin/runc-capfilter, written here
# and made Docker's default runtime, removes from the OCI spec's capability sets (bounding,
# effective, inheritable, permitted, ambient) every capability that the host's bounding set lacks,
# then execs the real runc. When the host has the full set it execs runc without touching anything.
#
#   bash scripts/kind/docker-engine.sh        # prints "docker" (the engine is ready) as last line
#
# Env: DOCKERD_LOG (default /var/log/dockerd.log).
set -euo pipefail
TAG=docker-engine
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
WRAPPER=/usr/local/bin/runc-capfilter
RUNTIME_NAME=runc-capfilter

if docker info >/dev/null 2>&1; then
  log "a Docker engine already answers; nothing to do"
  if [[ "$(docker info --format '{{.DefaultRuntime}}' 2>/dev/null)" != "$RUNTIME_NAME" ]] \
     && [[ "$(awk '/^CapBnd:/{print $2}' /proc/self/status)" != "$(printf '%016x' $(( (1 << ($(cat /proc/sys/kernel/cap_last_cap) + 1)) - 1 )))" ]]; then
    log "warning: this host lacks capabilities in its bounding set and the running engine's default runtime is not $RUNTIME_NAME; privileged containers may fail"
  fi
  echo docker
  exit 0
fi

[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages and starts dockerd)"
start=$(date +%s)

# --- packages -------------------------------------------------------------------------------------
missing=()
for pkg in docker.io debootstrap iptables jq; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || log "apt-get update failed; trying the install with the current lists"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
fi
# The Debian package puts dockerd in /usr/sbin and runc in /usr/sbin; PATH of a login shell may lack them.
export PATH="$PATH:/usr/sbin:/sbin"
REAL_RUNC=$(command -v runc) || die "runc not found after installing docker.io"
command -v dockerd >/dev/null || die "dockerd not found after installing docker.io"

# --- the capability-filtering runtime wrapper -----------------------------------------------------
# Written every time (cheap) so that a changed runc path is picked up.
log "writing $WRAPPER (real runc: $REAL_RUNC)"
cat > "$WRAPPER.tmp" <<WRAPPER_EOF
#!/bin/bash
# Written by scripts/kind/docker-engine.sh. Docker's default runtime: drops from the OCI spec the
# capabilities that this host's bounding set lacks (runc cannot grant them), then execs runc.
REAL_RUNC=$REAL_RUNC
WRAPPER_EOF
cat >> "$WRAPPER.tmp" <<'WRAPPER_EOF'
set -u
capbnd=$(awk '/^CapBnd:/{print $2}' /proc/self/status)
last=$(cat /proc/sys/kernel/cap_last_cap 2>/dev/null || echo 40)
full=$(printf '%016x' $(( (1 << (last + 1)) - 1 )))
# Fast path: full bounding set, nothing to filter, change nothing.
if [[ "$capbnd" == "$full" ]]; then exec "$REAL_RUNC" "$@"; fi

# Find the runc subcommand (skipping global flags and their values), then the spec file.
cmd="" ; file="" ; i=0 ; args=("$@")
while (( i < ${#args[@]} )); do
  a=${args[$i]}
  if [[ -z "$cmd" ]]; then
    case "$a" in
      --root|--log|--log-format|--criu|--rootless) i=$((i + 2)); continue ;;
      -*) ;;
      *) cmd=$a ;;
    esac
  else
    case "$cmd:$a" in
      create:--bundle|create:-b|run:--bundle|run:-b) file="${args[$((i + 1))]:-}/config.json"; i=$((i + 1)) ;;
      create:--bundle=*|run:--bundle=*) file="${a#--bundle=}/config.json" ;;
      exec:--process|exec:-p) file="${args[$((i + 1))]:-}"; i=$((i + 1)) ;;
      exec:--process=*) file="${a#--process=}" ;;
    esac
  fi
  i=$((i + 1))
done
case "$cmd" in
  create|run) [[ -n "$file" ]] || file="$PWD/config.json" ;;
  exec) ;;
  *) exec "$REAL_RUNC" "$@" ;;
esac

if [[ -n "$file" && -f "$file" ]]; then
  names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
         NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO
         SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME
         SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG
         WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE)
  mask=$((16#$capbnd))
  drop=()
  for n in "${!names[@]}"; do
    (( (mask >> n) & 1 )) || drop+=("\"CAP_${names[$n]}\"")
  done
  if ((${#drop[@]})); then
    drop_json="[$(IFS=,; echo "${drop[*]}")]"
    # exec's process.json is the process object itself; create/run's config.json has it under .process
    if [[ "$cmd" == exec ]]; then path='.capabilities'; else path='.process.capabilities'; fi
    tmp="$file.capfilter.$$"
    if jq --argjson drop "$drop_json" \
        "if ($path) then $path |= with_entries(if (.value|type) == \"array\" then .value -= \$drop else . end) else . end" \
        "$file" > "$tmp"; then
      chmod --reference="$file" "$tmp" 2>/dev/null || true
      mv -f "$tmp" "$file"
    else
      rm -f "$tmp"
      echo "runc-capfilter: could not filter $file; running runc on it unchanged" >&2
    fi
  fi
fi
exec "$REAL_RUNC" "$@"
WRAPPER_EOF
chmod 0755 "$WRAPPER.tmp"
mv -f "$WRAPPER.tmp" "$WRAPPER"

# --- daemon.json: the wrapper as default runtime (merged into any existing config) ----------------
mkdir -p /etc/docker
current='{}'
[[ -s /etc/docker/daemon.json ]] && current=$(cat /etc/docker/daemon.json)
echo "$current" | jq --arg name "$RUNTIME_NAME" --arg path "$WRAPPER" \
  '.runtimes[$name] = {path: $path} | .["default-runtime"] = $name' > /etc/docker/daemon.json.tmp \
  || die "/etc/docker/daemon.json is not valid JSON"
mv -f /etc/docker/daemon.json.tmp /etc/docker/daemon.json
log "/etc/docker/daemon.json: default runtime $RUNTIME_NAME"

# --- start dockerd ---------------------------------------------------------------------------------
log "starting dockerd (log: $DOCKERD_LOG)"
mkdir -p "$(dirname "$DOCKERD_LOG")"
setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 < /dev/null &
dockerd_pid=$!
for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then
    log "dockerd (pid $dockerd_pid) answers after $(( $(date +%s) - start ))s; default runtime: $(docker info --format '{{.DefaultRuntime}}')"
    echo docker
    exit 0
  fi
  kill -0 "$dockerd_pid" 2>/dev/null || { tail -n 30 "$DOCKERD_LOG" >&2; die "dockerd exited; see $DOCKERD_LOG"; }
  sleep 0.5
done
tail -n 30 "$DOCKERD_LOG" >&2
die "dockerd did not answer within 60s; see $DOCKERD_LOG"
