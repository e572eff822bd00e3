"""The prefix-aware router's choice, without Ray: which replica a prompt goes to, and what it keys a request by."""

from __future__ import annotations

import json
import random
from collections import defaultdict, deque

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.parser import text_string_to_metric_families

from ingot.deploy.forwarding import ForwardedRequest, routing_text
from ingot.deploy.metrics import render_merged, with_replica_label
from ingot.deploy.prefixes import BLOCK_CHARS, PrefixIndex, block_keys, rank_replicas

SYSTEM = "You are a careful assistant who answers questions about lighthouses. " * 4  # 4+ blocks


def test_block_keys_chain_the_whole_prefix():
    keys = block_keys(SYSTEM + "Where?")
    assert len(keys) == len(SYSTEM + "Where?") // BLOCK_CHARS
    assert keys[:3] == block_keys(SYSTEM)[:3]  # a shared start: the same leading keys
    # A block's key stands for everything before it too: the same second block after a different first is not it.
    other = "x" * BLOCK_CHARS + SYSTEM[BLOCK_CHARS : 2 * BLOCK_CHARS]
    assert block_keys(other)[1] != keys[1]
    assert block_keys("short") == []


def test_a_prompt_goes_to_the_replica_holding_its_prefix():
    index = PrefixIndex()
    index.record(block_keys(SYSTEM + "first question"), "a")
    index.record(block_keys("An unrelated system prompt about cooking pasta. " * 4), "b")
    keys = block_keys(SYSTEM + "second question, a different one")
    matched = index.matched_blocks(keys, ["a", "b"])
    assert matched["a"] == len(block_keys(SYSTEM)) and matched["b"] == 0
    # Equally busy, or "a" a little busier: "a", which holds the prefix.
    assert rank_replicas(matched, {"a": 0, "b": 0})[0] == ["a"]
    assert rank_replicas(matched, {"a": 5, "b": 1}, imbalance=8)[0] == ["a"]


def test_a_busy_prefix_holder_falls_back_to_the_least_busy_replica():
    index = PrefixIndex()
    index.record(block_keys(SYSTEM), "a")
    matched = index.matched_blocks(block_keys(SYSTEM + "more"), ["a", "b", "c"])
    tiers = rank_replicas(matched, {"a": 20, "b": 3, "c": 1}, imbalance=8)
    assert tiers == [["c"], ["b", "a"]]


def test_a_new_prefix_goes_to_the_emptiest_replica_within_the_imbalance():
    matched = {"a": 0, "b": 0}
    assert rank_replicas(matched, {"a": 2, "b": 0})[0] == ["b"]
    # Idle replicas: distinct prefixes arriving one at a time spread out instead of piling onto the first.
    index = PrefixIndex()
    for n in range(4):
        keys = block_keys(f"system prompt number {n}: " * 8)
        tiers = rank_replicas(index.matched_blocks(keys, ["a", "b"]), {"a": 0, "b": 0}, index.held())
        index.record(keys, tiers[0][0])
    assert index.held()["a"] == index.held()["b"]


def route(index: PrefixIndex, text: str, loads: dict[str, int], imbalance: int = 8) -> str:
    """The replica PrefixAwareRouter.choose_replicas puts first for ``text``."""
    return index.route(block_keys(text), loads, imbalance)[0][0]


def system_prompt(n: int) -> str:
    return f"System prompt {n}: you answer questions about topic number {n} and nothing else. " * 6


def test_interleaved_prompts_each_keep_to_one_replica_and_split_evenly():
    """Eight system prompts, their questions shuffled together, on two replicas with loads drifting by up to the
    imbalance: each prompt is served by one replica, four prompts each."""
    requests = [(n, q) for n in range(8) for q in range(32)]
    random.Random(0).shuffle(requests)
    index, served = PrefixIndex(), {"a": defaultdict(int), "b": defaultdict(int)}
    for i, (n, q) in enumerate(requests):
        drift = i % 17 - 8  # -8..8: never more than the imbalance apart
        loads = {"a": 8 + max(drift, 0), "b": 8 - min(drift, 0)}
        served[route(index, f"{system_prompt(n)}Question {q}?", loads)][n] += 1
    assert not set(served["a"]) & set(served["b"])  # no prompt on both
    assert len(served["a"]) == len(served["b"]) == 4


def test_a_request_sent_off_its_home_does_not_make_a_second_home():
    """The home too busy once: that request goes elsewhere, and the prompt's next requests go home again, not to
    whichever holder is less busy (which would spread every prompt over every replica and thrash both caches)."""
    index = PrefixIndex()
    assert route(index, system_prompt(1) + "first", {"a": 0, "b": 0}) == "a"
    assert route(index, system_prompt(1) + "busy", {"a": 20, "b": 0}) == "b"  # spilled
    keys = block_keys(system_prompt(1))
    assert index.matched_blocks(keys, ["a", "b"]) == {"a": len(keys), "b": len(keys)}  # b holds it too
    assert route(index, system_prompt(1) + "after", {"a": 5, "b": 1}) == "a"  # but a is its home
    assert route(index, system_prompt(1) + "again", {"a": 5, "b": 1}) == "a"


def test_a_replica_lacking_the_prefix_takes_its_requests_only_at_twice_the_imbalance():
    index = PrefixIndex()
    route(index, system_prompt(1) + "first", {"a": 0, "b": 0})
    assert route(index, system_prompt(1) + "?", {"a": 12, "b": 0}, imbalance=8) == "a"  # recomputing it costs more
    assert route(index, system_prompt(1) + "!", {"a": 16, "b": 0}, imbalance=8) == "b"
    # Once b holds it, b takes it as soon as a is more than the imbalance busier.
    assert route(index, system_prompt(1) + ".", {"a": 10, "b": 1}, imbalance=8) == "b"


def test_a_hot_prompt_spreads_over_the_replicas():
    """Every request the same system prompt, 24 in flight: its home takes them until it is too busy, then the other
    replica takes its share, and from then on the two stay within the imbalance of each other."""
    index, in_flight, served, gaps = PrefixIndex(), deque(), defaultdict(int), []
    for q in range(300):
        if len(in_flight) == 24:
            in_flight.popleft()  # the oldest finishes
        loads = {"a": in_flight.count("a"), "b": in_flight.count("b")}
        gaps.append(abs(loads["a"] - loads["b"]))
        replica = route(index, f"{system_prompt(7)}Question {q}?", loads, imbalance=8)
        in_flight.append(replica)
        served[replica] += 1
    assert min(served.values()) > 300 / 4
    assert max(gaps[50:]) <= 8 + 1


def test_the_index_forgets_what_a_replica_no_longer_has_room_for_tails_first():
    index = PrefixIndex(blocks_per_replica=10)
    assert route(index, system_prompt(1) + "first", {"a": 0, "b": 0}) == "a"  # 7 blocks
    assert route(index, system_prompt(2) + "first", {"a": 0, "b": 0}) == "b"
    assert route(index, system_prompt(2) + "spilled", {"a": 0, "b": 20}) == "a"  # 14 blocks: past a's room
    keys = block_keys(system_prompt(1))
    assert index.matched_blocks(keys, ["a", "b"]) == {"a": 10 - len(keys), "b": 0}  # prompt 1's start is left
    # A prompt longer than a replica's room is remembered by its start, which is what a later prompt matches.
    index = PrefixIndex(blocks_per_replica=4)
    index.record(block_keys(SYSTEM * 3), "r")
    assert index.matched_blocks(block_keys(SYSTEM * 3 + "?"), ["r"]) == {"r": 4}


def test_the_longest_match_wins_and_forgotten_replicas_hold_nothing():
    index = PrefixIndex()
    index.record(block_keys(SYSTEM[: 2 * BLOCK_CHARS]), "short")
    index.record(block_keys(SYSTEM), "long")
    keys = block_keys(SYSTEM + "?")
    assert rank_replicas(index.matched_blocks(keys, ["short", "long"]), {})[0] == ["long"]
    index.forget("long")
    assert index.matched_blocks(keys, ["short", "long"]) == {"short": 2, "long": 0}


def test_each_replica_remembers_a_bounded_number_of_blocks():
    index = PrefixIndex(blocks_per_replica=4)
    old, new = block_keys("a" * 4 * BLOCK_CHARS), block_keys("b" * 4 * BLOCK_CHARS)
    index.record(old, "r")
    index.record(new, "r")
    assert index.held() == {"r": 4}
    assert index.matched_blocks(old, ["r"]) == {"r": 0}  # the least recently routed went first
    assert index.matched_blocks(new, ["r"]) == {"r": 4}


def test_routing_text_reads_completions_and_chats():
    completion = json.dumps({"model": "m", "prompt": SYSTEM + "Q"}).encode()
    assert routing_text("/v1/completions", completion) == SYSTEM + "Q"
    assert routing_text("/v1/completions", json.dumps({"prompt": [SYSTEM, "other"]}).encode()) == SYSTEM
    chat = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": [{"type": "text", "text": "Q"}]}]}
    text = routing_text("/v1/chat/completions", json.dumps(chat).encode())
    assert text.startswith(f"<system>{SYSTEM}") and text.endswith("<user>Q\n")
    assert routing_text("/v1/models", b"") is None
    assert routing_text("/v1/completions", b"{not json") is None  # the replica answers it with its 400
    request = ForwardedRequest.of("POST", "/v1/completions", b"", [], completion)
    assert request.prefix_keys == block_keys(SYSTEM + "Q")


def test_replica_metrics_merge_into_one_exposition_with_a_replica_label():
    per_replica = []
    for replica, waiting in (("r1", 2), ("r2", 5)):
        registry = CollectorRegistry()
        Gauge("vllm:num_requests_waiting", "Waiting.", ["model_name"], registry=registry).labels("m").set(waiting)
        Counter("vllm:request_success", "Finished.", ["model_name"], registry=registry).labels("m").inc(waiting)
        per_replica.append(with_replica_label(registry.collect(), replica))
    text = render_merged(per_replica).decode()
    assert text.count("# TYPE vllm:num_requests_waiting gauge") == 1  # one family, both replicas' samples
    families = {f.name: f for f in text_string_to_metric_families(text)}
    waiting = {s.labels["replica"]: s.value for s in families["vllm:num_requests_waiting"].samples}
    assert waiting == {"r1": 2, "r2": 5}
    finished = [s for s in families["vllm:request_success"].samples if s.name.endswith("_total")]
    assert {s.labels["replica"]: s.value for s in finished} == {"r1": 2, "r2": 5}


def test_a_prompt_with_nothing_to_cache_goes_by_load_and_is_not_recorded():
    """Short prompts (no full block) must not all go to the replica holding least: eight short streams at once once
    went all to one replica that way."""
    index = PrefixIndex()
    index.record(block_keys(system_prompt(1)), "a")  # a holds more than b
    assert index.route(block_keys("Hi"), {"a": 0, "b": 3}, imbalance=8)[0] == ["a"]
    assert index.held() == {"a": len(block_keys(system_prompt(1)))}


def test_equally_loaded_replicas_take_prompts_in_turn():
    """Requests arriving together are routed before any answer updates the loads the router heard: eight short
    streams at once, all seeing two idle replicas, once went all to the first."""
    index = PrefixIndex()
    chosen = [index.route(block_keys(f"Long story {n}:"), {"a": 0, "b": 0}, imbalance=8)[0][0] for n in range(8)]
    assert chosen == ["a", "b"] * 4
    assert index.route(block_keys("Hi"), {"a": 0, "b": 1}, imbalance=8)[0] == ["a"]  # a load still decides
    assert index.route(block_keys("Hi"), {"a": 0, "b": 1}, imbalance=8)[0] == ["a"]
