"""`make bench-listing`: what a full listing of the identities costs, by page size.

BENCH_LISTING_COUNT identities (default 100,000) are created in one namespace on the local control
plane (no operator: bare AgentIdentities, as the webhook would have stamped them), then listed whole
through the operator's own request layer (``Kube.identity_pages``) in pages of each size in
BENCH_LISTING_PAGES (default 500,1000,2000,5000), BENCH_LISTING_ROUNDS times (default 2). Prints,
for each listing, its wall time, this process's CPU and the CPU each control-plane component used
(from /proc): the API server's is what a page size changes. Figures only, no assertions.

BENCH_LISTING_STREAMS (default 1; for example 1,2,4) also lists them as that many label-partitioned
listings at once (each identity then carries a ``bench-shard`` label; the last stream's selector is
``notin`` the others, so the streams cover every identity whatever its label), to show what
parallel listing would buy: the API server encodes each stream on its own goroutine.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from bench import cpu_seconds, identity  # scripts/bench.py
from kubernetes import client, config

from agent_identity import GROUP
from agent_identity.kube import client as kube_client
from agent_identity.kube.client import Kube, load_client_configuration
from agent_identity.local.controlplane import running

REPO = Path(__file__).resolve().parents[1]
COUNT = int(os.environ.get("BENCH_LISTING_COUNT", "100000"))
PAGES = [int(size) for size in os.environ.get("BENCH_LISTING_PAGES", "500,1000,2000,5000").split(",")]
STREAMS = [int(streams) for streams in os.environ.get("BENCH_LISTING_STREAMS", "1").split(",")]
SHARD = "bench-shard"
ROUNDS = int(os.environ.get("BENCH_LISTING_ROUNDS", "2"))
NAMESPACE = "bench-listing"
CREATOR = json.dumps({"username": "system:admin", "groups": ["system:masters", "system:authenticated"]})


def stamped(number: int) -> dict[str, Any]:
    """The bench's identity, with the creator the mutating webhook would have stamped."""
    body = identity(f"agent-{number:06d}", NAMESPACE, "1h")
    body["metadata"]["annotations"] = {f"{GROUP}/creator": CREATOR}
    if max(STREAMS) > 1:
        body["metadata"]["labels"] = {SHARD: str(number % max(STREAMS))}
    return body


def selectors(streams: int) -> list[str | None]:
    """One label selector per stream, together covering every identity exactly once."""
    if streams == 1:
        return [None]
    shards = [str(shard) for shard in range(streams - 1)]
    return [f"{SHARD} in ({shard})" for shard in shards] + [f"{SHARD} notin ({','.join(shards)})"]


def main() -> None:
    with running() as plane:
        api = config.new_client_from_config(config_file=str(plane.kubeconfig_path))
        for path in sorted((REPO / "crds").glob("*.yaml")):
            client.ApiextensionsV1Api(api).create_custom_resource_definition(yaml.safe_load(path.read_text()))
        time.sleep(2)  # the CRDs served
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
        kube = Kube(load_client_configuration(str(plane.kubeconfig_path)), pool_size=20)
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            for _ in pool.map(lambda n: kube.create_identity(stamped(n)), range(COUNT)):
                pass
        print(f"agent-identity-operator listing bench: {COUNT} identities created in {time.monotonic() - started:.0f}s")
        components = {name: process.pid for name, process in plane.processes.items()}

        def stream(selector: str | None) -> int:
            return sum(len(page) for page, _ in kube.identity_pages(NAMESPACE, label_selector=selector))

        for _ in range(ROUNDS):
            for size in PAGES:
                kube_client.LIST_PAGE = size
                for streams in STREAMS:
                    before = {name: cpu_seconds(pid) for name, pid in components.items()}
                    cpu, wall = time.process_time(), time.monotonic()
                    with ThreadPoolExecutor(streams) as pool:
                        listed = sum(pool.map(stream, selectors(streams)))
                    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
                    used = ", ".join(f"{name} {cpu_seconds(pid) - before[name]:.1f}s" for name, pid in components.items())
                    print(
                        f"pages of {size:>5}, {streams} stream(s): {listed} listed in {wall:.1f}s; "
                        f"CPU: this client {cpu:.1f}s, {used}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
