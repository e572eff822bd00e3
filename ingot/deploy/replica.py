"""One engine replica: an ingot engine and the FastAPI app `ingot serve` runs over it, in a Ray Serve replica."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

from prometheus_client.core import Metric
from ray import serve
from starlette.types import Message

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.registry import pull_artifact
from ingot.artifacts.store import ArtifactStore
from ingot.deploy.forwarding import ForwardedRequest, run_through
from ingot.deploy.metrics import with_replica_label
from ingot.errors import IngotError
from ingot.runtime.engine import Engine
from ingot.runtime.servable import unservable_reason
from ingot.server.app import create_app, warm_up
from ingot.server.settings import ServerSettings

log = logging.getLogger("ingot.deploy")

API_KEY_ENV = "INGOT_API_KEY"
REPLICA_HEADER = b"x-ingot-replica"  # as `ingot serve`: read from each replica's environment, never passed as an argument


@dataclass(frozen=True)
class ReplicaSpec:
    """What every replica loads and how: the same for all, so any replica can take any request."""

    artifact: str  # a path every replica's host sees (a shared cache), or a registry's REF when ``pull``
    cache_dir: str | None  # where a pulled artifact goes
    threads: int  # torch intra-op threads: cores / replicas on one host, so replicas do not oversubscribe cores
    settings: ServerSettings
    pull: bool = False
    served_model_name: str | None = None  # the name clients use; None: the model's own
    kv_cache_gb: float | None = None
    max_num_batched_tokens: int | None = None
    plain_http: bool = False


def artifact_path(spec: ReplicaSpec) -> Path:
    """The replica's artifact, pulled first when it is a registry's.

    Every replica pulls where it runs rather than the driver once for all: a replica starts on whichever node has
    room, now or when Ray replaces a dead one or scales up, and only a pull on that node puts the files on its disk
    (a driver's pull reaches other nodes only through a shared filesystem, which a registry is there to replace).
    It costs one download per host, not per replica: a pull is ``pull_artifact``, the one ``ingot pull`` runs, so a
    tag the cache holds means no network, and replicas sharing a cache pull under the key's file lock, one
    downloading while the others wait and then find it published. Every file is checked against the manifest before the cache entry is
    renamed into place, so a replica killed mid-pull leaves nothing another could load. The replica is not ready
    (Ray sends it nothing, /health counts it out) until its pull and warm-up are done."""
    if spec.pull:
        return pull_artifact(ArtifactStore.open(spec.cache_dir), spec.artifact, plain_http=spec.plain_http).path
    return Path(spec.artifact)


@serve.deployment
class IngotReplica:
    async def __init__(self, spec: ReplicaSpec) -> None:
        import torch

        torch.set_num_threads(spec.threads)
        path = artifact_path(spec)
        manifest = check_artifact(path)
        refusal = unservable_reason(manifest)
        if refusal:
            raise IngotError(refusal)
        if manifest.kind == "detector":
            raise IngotError(f"{manifest.model.name} is a detector: replicas serve language models")
        self.engine = Engine(
            path, manifest, kv_cache_gb=spec.kv_cache_gb, max_num_batched_tokens=spec.max_num_batched_tokens
        )
        settings = replace(spec.settings, api_key=os.environ.get(API_KEY_ENV) or None)
        self.app = create_app({spec.served_model_name or manifest.model.name: self.engine}, settings)
        self.state = self.app.state.ingot
        self.name = serve.get_replica_context().replica_id.unique_id
        await warm_up(self.state)  # Ray routes nothing here until the constructor returns: a replica is warm or absent
        log.info("replica %s: %s on %d threads", self.name, manifest.model.name, torch.get_num_threads())

    async def forward(self, request: ForwardedRequest) -> AsyncIterator[Message]:
        """``request`` through ingot's app; its ASGI messages, streamed back to the ingress."""
        async for message in run_through(self.app, request):
            if message["type"] == "http.response.start":  # which replica answered: for logs, clients and tests
                message = {**message, "headers": [*message.get("headers", []), (REPLICA_HEADER, self.name.encode())]}
            yield message

    def ready(self) -> bool:
        return self.state.ready

    def metrics(self) -> list[Metric]:
        """This replica's metrics under vLLM's names, labelled with the replica's id."""
        return with_replica_label(self.state.metrics.registry.collect(), self.name)

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()
