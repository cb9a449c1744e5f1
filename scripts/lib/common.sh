# shellcheck shell=bash
# Sourced by every script here, after it sets TAG: log and die print "[TAG] ..." on stderr, and
# CACHE_ROOT is where builds and tools are cached between runs (AIO_CACHE_DIR overrides it).
# shellcheck disable=SC2034  # read by the scripts that source this
CACHE_ROOT="${AIO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-identity-operator}"
log() { printf '[%s] %s\n' "$TAG" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }

# given_executable VAR: when the user points VAR at a tool of their own, use it: print its path
# and end the script (it must be executable).
given_executable() {
  local var=$1
  local value=${!var:-}
  [[ -n "$value" ]] || return 0
  [[ -x "$value" ]] || die "$var=$value is not an executable file"
  log "using $var=$value"
  echo "$value"
  exit 0
}
