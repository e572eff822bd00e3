"""Every replica's metrics in one exposition: vLLM's names and labels as `ingot serve` exports them, plus ``replica``.

Dashboards and the Gateway API Inference Extension's endpoint picker read `vllm:num_requests_waiting` and
`vllm:kv_cache_usage_perc` per engine; with a replica label the application's /metrics says it per replica.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

REPLICA_LABEL = "replica"


def with_replica_label(families: Iterable[Metric], replica: str) -> list[Metric]:
    """``families`` (a registry's ``collect()``) with every sample labelled ``replica``."""
    labelled = []
    for family in families:
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        copy.samples = [s._replace(labels={**s.labels, REPLICA_LABEL: replica}) for s in family.samples]
        labelled.append(copy)
    return labelled


class _Merged(Collector):
    def __init__(self, per_replica: Iterable[list[Metric]]) -> None:
        self.families: dict[str, Metric] = {}
        for families in per_replica:
            for family in families:
                merged = self.families.get(family.name)
                if merged is None:
                    merged = self.families[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                merged.samples.extend(family.samples)

    def collect(self) -> Iterator[Metric]:
        yield from self.families.values()


def render_merged(per_replica: Iterable[list[Metric]]) -> bytes:
    """One Prometheus text exposition of every replica's families, each family once with all replicas' samples."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(per_replica))
    return generate_latest(registry)
