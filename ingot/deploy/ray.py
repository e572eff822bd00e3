"""ingot on Ray Serve: engine replicas behind one HTTP ingress and a prefix-aware request router.

    serve run ingot.deploy.ray:app model=smollm2-135m replicas=2
    ingot serve smollm2-135m --replicas 2        # the same, on a local Ray cluster (or $RAY_ADDRESS's)

Each replica owns one engine and runs the FastAPI app `ingot serve` runs; the ingress hands it each request through
a deployment handle, whose router (router.py) places the request by its prompt's prefix. Replicas load the artifact
from a cache every host sees, or pull an ``oci://`` one into their cache on a miss.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from ingot.artifacts.manifest import Manifest
from ingot.artifacts.registry import check_pullable
from ingot.artifacts.store import ArtifactStore
from ingot.cli.locate import OCI_PREFIX, compile_options, serving_artifact
from ingot.deploy.ingress import IngotIngress
from ingot.deploy.prefixes import DEFAULT_IMBALANCE
from ingot.deploy.replica import API_KEY_ENV, IngotReplica, ReplicaSpec
from ingot.deploy.router import PrefixAwareRouter
from ingot.runtime.kv_sizing import kv_cache_blocks
from ingot.server.settings import DEFAULT_MAX_QUEUE, DEFAULT_MAX_REQUEST_BYTES, ServerSettings

DEFAULT_TARGET_ONGOING_REQUESTS = 16  # per replica, for autoscaling: half a default artifact's largest decode batch
DEFAULT_MAX_ONGOING_REQUESTS = 64  # per replica; beyond it Ray queues at the router, where placement is still open
APP_NAME = "ingot"


class AppOptions(BaseModel):
    """The application's arguments (`serve run ingot.deploy.ray:app NAME=VALUE ...`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = "smollm2-135m"  # as `ingot serve MODEL`: a key, path, model (compiled here on a miss) or oci://REF
    served_model_name: str | None = None  # the name clients use (default: the model's own)
    weight_format: str | None = None  # a model's artifact with these weights (as `ingot serve --weight-format`)
    activation_dtype: str | None = None  # and its linears' inputs (as `ingot serve --activation-dtype`)
    replicas: int | None = Field(None, ge=1)  # a fixed count (default 1), or the initial one when autoscaling
    min_replicas: int | None = Field(None, ge=0)  # either bound set: autoscale on ongoing requests
    max_replicas: int | None = Field(None, ge=1)
    target_ongoing_requests: float = Field(DEFAULT_TARGET_ONGOING_REQUESTS, gt=0)
    # Seconds the load must stay above (below) target before Ray adds (removes) replicas; None: Ray's 30 (600).
    upscale_delay_s: float | None = Field(None, ge=0)
    downscale_delay_s: float | None = Field(None, ge=0)
    max_ongoing_requests: int = Field(DEFAULT_MAX_ONGOING_REQUESTS, ge=1)
    threads: int | None = Field(None, ge=1)  # per replica; default: this host's cores / the most replicas
    router: Literal["prefix", "default"] = "prefix"  # default: Ray's own (power of two choices)
    imbalance: int = Field(DEFAULT_IMBALANCE, ge=0)  # requests: when a prefix's replica is too busy to prefer
    cache_dir: str | None = None
    kv_cache_gb: float | None = Field(None, gt=0)
    max_num_batched_tokens: int | None = Field(None, ge=1)
    max_queue: int = Field(DEFAULT_MAX_QUEUE, ge=1)
    max_request_bytes: int = Field(DEFAULT_MAX_REQUEST_BYTES, ge=1)
    plain_http: bool = False
    no_compile: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> AppOptions:
        low, high = self.min_replicas or 0, self.most_replicas
        if low > high:
            raise ValueError(f"min_replicas..max_replicas is empty ({low}..{high})")
        if not low <= self.initial_replicas <= high:
            raise ValueError(f"replicas must be within min_replicas..max_replicas ({low}..{high}), not {self.replicas}")
        if not self.autoscaling and (self.upscale_delay_s is not None or self.downscale_delay_s is not None):
            raise ValueError("the scaling delays apply when autoscaling: set min_replicas or max_replicas too")
        return self

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None

    @property
    def initial_replicas(self) -> int:
        return self.replicas if self.replicas is not None else max(1, self.min_replicas or 0)

    @property
    def most_replicas(self) -> int:
        if self.max_replicas is not None:
            return self.max_replicas
        return max(self.initial_replicas, self.min_replicas or 0)

    def replica_threads(self) -> int:
        """Threads per replica: the host's cores shared by as many replicas as may run, at least one each."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.most_replicas)


def app(args: dict[str, str]) -> Application:
    """The application builder `serve run` calls with its NAME=VALUE arguments. They are validated here: Ray
    validates them only against a model class it finds in the signature, and postponed annotations hide it."""
    return build_app(AppOptions.model_validate(args))


def build_app(options: AppOptions, settings: ServerSettings | None = None) -> Application:
    """Resolve the artifact here (compiling a model on a miss, once, not in every replica), then bind the engine
    replicas and the ingress. ``settings`` go to every replica's app; its API key comes from $INGOT_API_KEY in the
    replicas' environment, so that it never travels in the application's arguments."""
    settings = replace(
        settings or ServerSettings(max_queue=options.max_queue, max_request_bytes=options.max_request_bytes),
        api_key=None,
    )
    store = ArtifactStore.open(options.cache_dir)
    pull = options.model.startswith(OCI_PREFIX)
    cache_blocks = None
    if pull:  # each replica pulls it where it runs (replica.artifact_path says why); a wrong REF is refused here, once
        artifact = options.model.removeprefix(OCI_PREFIX)
        check_pullable(store, artifact, options.plain_http)
    else:
        chosen = compile_options(options.weight_format, options.activation_dtype)
        path = serving_artifact(store, options.model, chosen, options.plain_http, options.no_compile)
        artifact = str(path.resolve())
        cache_blocks = replica_cache_blocks(Manifest.read(path), options.kv_cache_gb)
    threads = options.replica_threads()
    spec = ReplicaSpec(
        artifact=artifact,
        served_model_name=options.served_model_name,
        cache_dir=str(store.root),
        threads=threads,
        settings=settings,
        kv_cache_gb=options.kv_cache_gb,
        max_num_batched_tokens=options.max_num_batched_tokens,
        plain_http=options.plain_http,
        pull=pull,
    )
    replicas = IngotReplica.options(
        max_ongoing_requests=options.max_ongoing_requests,
        # Ray reserves the threads as CPUs, so it never places more replicas on a host than its cores hold (and sets
        # the replica's OMP_NUM_THREADS to them unless the environment already has one; the replica sets torch's).
        ray_actor_options={"num_cpus": threads},
        **_scaling(options),
        **_routing(options, cache_blocks),
    ).bind(spec)
    ingress = IngotIngress.options(
        max_ongoing_requests=options.most_replicas * options.max_ongoing_requests + 16,
        ray_actor_options={"num_cpus": 0},
    )
    return ingress.bind(replicas, settings.max_request_bytes)


def _scaling(options: AppOptions) -> dict:
    if not options.autoscaling:
        return {"num_replicas": options.initial_replicas}
    return {
        "autoscaling_config": {
            "min_replicas": options.min_replicas if options.min_replicas is not None else 1,
            "initial_replicas": options.initial_replicas,
            "max_replicas": options.most_replicas,
            "target_ongoing_requests": options.target_ongoing_requests,
            **{
                name: getattr(options, name)
                for name in ("upscale_delay_s", "downscale_delay_s")
                if getattr(options, name) is not None
            },
        }
    }


def replica_cache_blocks(manifest: Manifest, kv_cache_gb: float | None) -> int | None:
    """The blocks a replica's prefix cache holds (None for an artifact without one): what the router remembers of
    each replica, so that it counts a prefix held only while the replica can still be holding it."""
    if manifest.kv_cache is None or manifest.buckets is None:
        return None
    return kv_cache_blocks(manifest.kv_cache, manifest.buckets.max_context, kv_cache_gb) - 1  # less the padding block


def _routing(options: AppOptions, cache_blocks: int | None) -> dict:
    """The prefix-aware router's arguments. Its index is bounded by the replicas' cache (an oci:// artifact's is
    not known before a replica pulls it: then by the index's default)."""
    if options.router == "default":
        return {}
    kwargs = {"imbalance": options.imbalance}
    if cache_blocks is not None:
        kwargs["blocks_per_replica"] = cache_blocks
    config = RequestRouterConfig(request_router_class=PrefixAwareRouter, request_router_kwargs=kwargs)
    return {"request_router_config": config}


def run_locally(options: AppOptions, settings: ServerSettings, host: str, port: int) -> None:
    """`ingot serve --replicas N`: the application on the Ray cluster at $RAY_ADDRESS, else on a local one started
    here, its HTTP proxy on ``host``:``port``, until Ctrl-C or SIGTERM. The application is built first, so a model
    that cannot be compiled or a REF that cannot be pulled is one error before Ray starts."""
    application = build_app(options, settings)
    if settings.api_key:
        os.environ[API_KEY_ENV] = settings.api_key  # a local cluster's workers inherit it
    start_cluster(host, port)
    serve.run(application, name=APP_NAME, route_prefix="/", blocking=True)


def start_cluster(host: str, port: int, num_cpus: int | None = None) -> None:
    """Connect to the cluster at $RAY_ADDRESS, else start a local one (of ``num_cpus``, default every core), and
    start Ray Serve's HTTP proxy on ``host``:``port``."""
    import ray

    for name, value in CLUSTER_ENVIRONMENT.items():
        os.environ.setdefault(name, value)  # read by Ray's processes as they start: set before ray.init
    ray.init(include_dashboard=False, num_cpus=num_cpus, **({"_node_ip_address": host} if _is_loopback(host) else {}))
    serve.start(http_options={"host": host, "port": port})


# Ray reports usage to its authors unless told not to. Serve's controller kills a proxy that is not ready within
# 5 s, three times in a row, and serve.start then fails with ActorDiedError: on a busy host (replicas loading their
# engines, a compile) a proxy takes longer than that to start, so it gets a minute.
CLUSTER_ENVIRONMENT = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60"}


def _is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1")
