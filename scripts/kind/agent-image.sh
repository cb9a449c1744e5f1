#!/usr/bin/env bash
# A tiny agent image for pod tests on kind, built offline (no registry, --network none) on the
# local Debian Python base of python-base-image.sh. Prints the image name as its last stdout line:
#
#   image=$(bash scripts/kind/agent-image.sh | tail -n 1)
#   kind load docker-image "$image" --name agent-identity
#
# The agent (python3 /agent.py, user 65532, standard library only) reads the pod's token from
# /var/run/secrets/kubernetes.io/serviceaccount/token afresh every AGENT_INTERVAL_S seconds (so a
# kubelet-rotated token is picked up), GETs AGENT_IN_SCOPE and AGENT_OUT_OF_SCOPE on the API server
# (https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, the mounted ca.crt) and prints one JSON
# line per round, e.g.
#   {"t": "2026-11-30T18:20:01Z", "in_scope": 200, "out_of_scope": 403, "token": "sha256:1f2e3d4c"}
# ("token" is a short hash, never the token: it changes when the kubelet rotates it; 0 is a failed
# connection, -1 no token file). Defaults: the pod's namespace's configmaps (in scope) and secrets
# (out of scope), every 1 s.
set -euo pipefail
TAG=agent-image
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

docker info >/dev/null 2>&1 || die "no Docker engine answers: run scripts/kind/docker-engine.sh first"
wheelhouse=$(bash "$HERE/python-base-image.sh" | tail -n 1) || die "python-base-image.sh failed"
base=$(docker image inspect -f '{{ index .Config.Labels "agentidentity.dev/python-base" }}' "$wheelhouse")
[[ -n "$base" ]] || die "$wheelhouse names no clean base"

work=$(mktemp -d "${TMPDIR:-/tmp}/aio-agent-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
cat > "$work/agent.py" <<'PY'
"""A test agent: calls the API server with its pod's projected token, in and out of scope."""

import datetime
import hashlib
import json
import os
import ssl
import time
import urllib.error
import urllib.request

ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"

def namespace() -> str:
    try:
        with open(f"{ACCOUNT}/namespace") as f:
            return f.read().strip()
    except OSError:
        return "default"

def status(server: str, path: str, token: str, context: ssl.SSLContext) -> int:
    request = urllib.request.Request(server + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return 0

def main() -> None:
    ns = namespace()
    server = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
    in_scope = os.environ.get("AGENT_IN_SCOPE", f"/api/v1/namespaces/{ns}/configmaps")
    out_of_scope = os.environ.get("AGENT_OUT_OF_SCOPE", f"/api/v1/namespaces/{ns}/secrets")
    interval = float(os.environ.get("AGENT_INTERVAL_S", "1"))
    context = ssl.create_default_context(cafile=f"{ACCOUNT}/ca.crt")
    while True:
        line = {"t": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        try:
            with open(f"{ACCOUNT}/token") as f:
                token = f.read().strip()
        except OSError:
            line.update(in_scope=-1, out_of_scope=-1, token="missing")
        else:
            line.update(
                in_scope=status(server, in_scope, token, context),
                out_of_scope=status(server, out_of_scope, token, context),
                token="sha256:" + hashlib.sha256(token.encode()).hexdigest()[:8],
            )
        print(json.dumps(line), flush=True)
        time.sleep(interval)

if __name__ == "__main__":
    main()
PY
printf 'FROM %s\nCOPY agent.py /agent.py\nUSER 65532:65532\nENTRYPOINT ["python3", "-u", "/agent.py"]\n' "$base" > "$work/Dockerfile"

image="agent-identity/agent:$( { echo "$base"; cat "$work/agent.py" "$work/Dockerfile"; } | sha256sum | cut -c1-12)"
if docker image inspect "$image" >/dev/null 2>&1; then
  log "reusing $image"
else
  docker build -q --network none -t "$image" "$work" >/dev/null || die "docker build of $image failed"
  log "built $image"
fi
echo "$image"
