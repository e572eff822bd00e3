"""Prefix-aware routing as a Ray Serve request router: a request goes to the replica already holding the longest
prefix of its prompt in its prefix cache, unless that replica is much busier than the least busy one, which then
takes it (see prefixes.py for the bookkeeping and the choice).

Ray calls the router in the ingress's process for every request the ingress sends to the engine replicas; the
prompt's block keys travel on the request (``ForwardedRequest.prefix_keys``). Ray then sends the request to the
first tier's replica unless it is at ``max_ongoing_requests``, else to the least busy of the next tier.

The choice is recorded in the index as it is made, not only once Ray reports the request routed: Ray reports it
after the replica has accepted it, a round trip later, and requests of the same new prompt that arrive together
(the first of a benchmark's, or of a burst) would otherwise each find no holder and be spread over the replicas,
giving that prompt two homes from the start.
"""

from __future__ import annotations

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from ingot.deploy.prefixes import DEFAULT_BLOCKS_PER_REPLICA, DEFAULT_IMBALANCE, PrefixIndex


def prefix_keys(pending_request: PendingRequest | None) -> list[bytes]:
    """The block keys the ingress put on the request; none for other calls (health, metrics)."""
    if pending_request is None:
        return []
    for arg in pending_request.args:
        keys = getattr(arg, "prefix_keys", None)
        if keys is not None:
            return keys
    return []


class PrefixAwareRouter(RequestRouter):
    def initialize_state(
        self, imbalance: int = DEFAULT_IMBALANCE, blocks_per_replica: int = DEFAULT_BLOCKS_PER_REPLICA
    ) -> None:
        """Ray passes the deployment's ``request_router_kwargs`` here."""
        self.imbalance = imbalance
        self.index = PrefixIndex(blocks_per_replica)

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        by_id = {replica.replica_id: replica for replica in candidate_replicas}
        loads = {replica_id: self.load(replica_id) for replica_id in by_id}
        tiers = self.index.route(prefix_keys(pending_request), loads, self.imbalance)
        return [[by_id[replica_id] for replica_id in tier] for tier in tiers if tier]

    def load(self, replica_id: ReplicaID) -> int:
        """Requests in flight on the replica as this router last heard (Ray's queue-length cache, which every sent
        request and every replica's answer updates); 0 when unknown."""
        return self.replica_queue_len_cache.get(replica_id) or 0

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: object) -> None:
        """Where Ray did send it: the first tier's replica, unless that one was full."""
        keys = prefix_keys(pending_request)
        if keys:
            self.index.record(keys, replica_id)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self.index.forget(replica_id)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        current = {replica.replica_id for replica in replicas}
        for replica_id in set(self.index.held()) - current:
            self.index.forget(replica_id)
