"""Which replica holds which prompt prefixes, as the router sees them: the bookkeeping behind prefix-aware routing.

A replica's prefix cache keeps the KV blocks of the prompts it computed, keyed by every token up to a block's end.
The router has text, not tokens, so it keys prompts the same way in characters: a prompt is a chain of blocks of
``BLOCK_CHARS`` characters, each block's key a hash of the whole text up to its end. A replica that was sent a
prompt holds the blocks of its prefix; a new prompt goes where the longest chain of its blocks already is, unless
that replica is much busier than the least busy one. No Ray here, so the choice is tested on its own.

Each prefix has a home: the first replica that was sent it. Requests sharing it go there, not to whichever of its
holders is least busy, so that each replica's cache keeps to its share of the prefixes: a request sent elsewhere
while the home was busy leaves a copy there, and were such copies load-balanced like homes, every prefix would soon
be spread over every replica and each cache would hold (and evict) them all. Measured offline with the routing
benchmark's workload (bench/routing_simulation.py): balancing between holders kept none of eight prompts to one of
two replicas, homes keep each to one apart from the requests sent off while its home was busy.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping, Sequence

BLOCK_CHARS = 64  # about 16 tokens of English: one KV-cache block at the default block size
MAX_ROUTED_CHARS = 32_768  # a longer prompt is keyed by its start only: its first blocks decide anyway
# Remembered per replica, least recently routed forgotten first: ~13 MB of text, unless the replica's cache size is
# known (ray.replica_cache_blocks). A block of text stands for a KV block of 16 tokens at ~4 characters a token.
DEFAULT_BLOCKS_PER_REPLICA = 200_000
DEFAULT_IMBALANCE = 8  # requests: a prefix's home is skipped once more than this busier than the least busy replica

Replica = Hashable


def block_keys(text: str) -> list[bytes]:
    """The chained keys of ``text``'s full blocks: key i stands for ``text[:(i + 1) * BLOCK_CHARS]``."""
    text = text[:MAX_ROUTED_CHARS]
    keys: list[bytes] = []
    previous = b""
    for end in range(BLOCK_CHARS, len(text) + 1, BLOCK_CHARS):
        previous = hashlib.blake2b(previous + text[end - BLOCK_CHARS : end].encode(), digest_size=16).digest()
        keys.append(previous)
    return keys


class PrefixIndex:
    """The prompt blocks each replica was sent, most recent last; each replica remembers at most
    ``blocks_per_replica`` of them, as its prefix cache evicts the least recently used blocks first. A block's
    holders are kept in the order they were first sent it: the first is its home.

    Bounded by the replica's real cache, the index forgets a prefix a replica was sent once (a request sent off its
    home) about when the replica's cache does; unbounded, it would go on counting that replica a holder, to which
    requests may be sent more readily (``rank_replicas``), and each such request recomputed the prefix: in the
    routing benchmark offline at 0.16 GiB a replica, that took the hits from 91% of prompt tokens down to 80%."""

    def __init__(self, blocks_per_replica: int = DEFAULT_BLOCKS_PER_REPLICA) -> None:
        self.blocks_per_replica = blocks_per_replica
        self._holders: dict[bytes, dict[Replica, None]] = {}  # an ordered set: the longest holder first
        self._blocks: dict[Replica, OrderedDict[bytes, None]] = {}
        self._last_chosen: dict[Replica, int] = {}  # replica -> the number of the choice that last put it first
        self._choices = 0

    def matched_blocks(self, keys: Sequence[bytes], candidates: Iterable[Replica]) -> dict[Replica, int]:
        """For each candidate, how many of ``keys``' leading blocks it holds (0 for none)."""
        matched = {replica: 0 for replica in candidates}
        still = set(matched)
        for depth, key in enumerate(keys, start=1):
            still.intersection_update(self._holders.get(key, ()))
            if not still:
                break
            for replica in still:
                matched[replica] = depth
        return matched

    def home(self, keys: Sequence[bytes], matched: Mapping[Replica, int]) -> Replica | None:
        """Of the replicas holding the longest prefix in ``matched`` (``matched_blocks``' answer), the one that has
        held it longest; None when none holds any of it."""
        longest = max(matched.values(), default=0)
        if longest == 0:
            return None
        return next(replica for replica in self._holders[keys[longest - 1]] if matched.get(replica) == longest)

    def route(self, keys: Sequence[bytes], loads: Mapping[Replica, int], imbalance: int) -> list[list[Replica]]:
        """The candidates (``loads``' keys, their requests in flight) for a prompt of ``keys`` in order of preference
        (``rank_replicas``), the first recorded as holding it at once: requests of a new prompt arriving together
        then find its home, rather than each finding no holder. A prompt with nothing to cache (shorter than a block)
        goes by load alone and is not recorded.

        Equals (as loaded, holding as much) are taken in turn, the least recently chosen first: the loads are as the
        router last heard, and requests arriving together are all routed before any answer updates them, so eight
        short streams at once all went to the first of two idle replicas."""
        least_recently_chosen = sorted(loads, key=lambda r: self._last_chosen.get(r, -1))
        matched = self.matched_blocks(keys, least_recently_chosen)
        held = self.held() if keys else {}
        tiers = rank_replicas(matched, loads, held, imbalance, self.home(keys, matched))
        if tiers:
            self._choices += 1
            self._last_chosen[tiers[0][0]] = self._choices
            if keys:
                self.record(keys, tiers[0][0])
        return tiers

    def record(self, keys: Sequence[bytes], replica: Replica) -> None:
        """``replica`` was sent a prompt of these blocks: it holds them now."""
        blocks = self._blocks.setdefault(replica, OrderedDict())
        for key in reversed(keys):  # its first blocks the most recent: forgotten last, as a cache evicts tails first
            blocks[key] = None
            blocks.move_to_end(key)
            self._holders.setdefault(key, {})[replica] = None  # a holder keeps its place: a home stays the home
        while len(blocks) > self.blocks_per_replica:
            self._drop(blocks.popitem(last=False)[0], replica)

    def forget(self, replica: Replica) -> None:
        """``replica`` is gone (or restarted: its cache is empty)."""
        for key in self._blocks.pop(replica, {}):
            self._drop(key, replica)
        self._last_chosen.pop(replica, None)

    def held(self) -> dict[Replica, int]:
        """How many blocks each replica holds."""
        return {replica: len(blocks) for replica, blocks in self._blocks.items()}

    def _drop(self, key: bytes, replica: Replica) -> None:
        holders = self._holders.get(key)
        if holders is not None:
            holders.pop(replica, None)
            if not holders:
                del self._holders[key]


def rank_replicas(
    matched: Mapping[Replica, int],
    loads: Mapping[Replica, int],
    held: Mapping[Replica, int] = {},
    imbalance: int = DEFAULT_IMBALANCE,
    home: Replica | None = None,
) -> list[list[Replica]]:
    """Candidates (``matched``'s keys) in order of preference, as tiers: the preferred one alone first, unless it is
    too busy, when the least busy candidate comes first instead; then the rest, least busy first.

    ``loads`` are requests in flight; ``held``, the blocks each replica holds. The preferred replica is the prefix's
    ``home`` (``PrefixIndex.home``), else the least busy of those holding the longest prefix. A prefix no one holds
    prefers the replica holding the fewest blocks, the least busy among equals: distinct prefixes arriving together
    then split evenly, where placing them by the loads of the moment (which differ by chance) left five of eight
    prompts on one of two replicas, and that one busier for good.

    The preferred replica is too busy once it is more than ``imbalance`` requests busier than the least busy, which
    keeps a hot prefix from piling onto its home. Where the least busy lacks the prefix, the gap must be at least
    twice that: sent there, the request recomputes the whole prefix, which holds up that replica's other requests,
    and evicts another prefix to make room; with requests in flight drifting between two replicas by chance,
    escaping at once set off chains of such misses (the routing benchmark offline at 0.2 GiB a replica: 83% of
    prompt tokens hit instead of 94%)."""
    candidates = list(matched)
    if not candidates:
        return []
    least_busy = sorted(candidates, key=lambda r: (loads.get(r, 0), held.get(r, 0)))
    if max(matched.values()) == 0:
        preferred = min(candidates, key=lambda r: (held.get(r, 0), loads.get(r, 0)))
    elif home is not None:
        preferred = home
    else:
        preferred = max(candidates, key=lambda r: (matched[r], -loads.get(r, 0)))
    other = least_busy[0]
    gap = loads.get(preferred, 0) - loads.get(other, 0)
    too_busy = gap > imbalance and (matched[other] >= matched[preferred] or gap >= 2 * imbalance)
    first = other if too_busy else preferred
    return [[first], [r for r in least_busy if r != first]]
