"""The prefix-routing benchmark's workload, simulated offline: no Ray, no model, no torch, about a second.

    python bench/routing_simulation.py [--system-tokens 768] [--kv-cache-blocks 291] [--record-delay-ms 5]

Drives the prefix-aware router's choice (ingot.deploy.prefixes) and, for comparison, a least-loaded router like
Ray's default (power of two choices: with two replicas, the less busy one) with bench/prefix_routing.py's arrival
pattern: the same shuffled system prompts and questions, the same number in flight. Each replica is ingot's own
scheduler and prefix cache (ingot.runtime.scheduler/block_manager) on made-up token ids, its steps timed by a
simple cost model (prefill time per token computed, a fixed cost per step). Ray's router counts a request it sent
at once (``--load-delay-ms``) but reports it routed (``on_request_routed``) only once the replica has accepted it
(``--record-delay-ms``). Reported for each router: which replica served how many requests of each prompt, and the
prefix-cache hits. The point is to see why a router does or does not keep each replica to its share of the prompts,
and what a change to the policy does to that, not to predict timings.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ingot.deploy.prefixes import DEFAULT_IMBALANCE, PrefixIndex, block_keys
from ingot.runtime.block_manager import BlockManager
from ingot.runtime.sampling_params import SamplingParams
from ingot.runtime.scheduler import ScheduledStep, Scheduler
from ingot.runtime.sequence import Sequence

BLOCK_SIZE = 16  # tokens: the demo model's artifact
REPLICAS = ("A", "B")


@dataclass
class Request:
    number: int
    prompt: int  # which system prompt
    text: str  # what the router keys
    tokens: list[int]  # what the replica caches


@dataclass
class Replica:
    name: str
    blocks: BlockManager
    scheduler: Scheduler
    busy: bool = False
    served: Counter = field(default_factory=Counter)  # system prompt -> requests
    ttfts: list[float] = field(default_factory=list)  # ms


def workload(args: argparse.Namespace) -> list[Request]:
    """bench/prefix_routing.py's routing_prompts: each system prompt's questions, shuffled with the same seed."""
    requests = []
    for s in range(args.system_prompts):
        system_tokens = [1_000_000 * (s + 1) + i for i in range(args.system_tokens)]
        system_text = "".join(token_text(s, i, args.chars_per_token) for i in range(args.system_tokens))
        for q in range(args.requests_per_prompt):
            n = s * args.requests_per_prompt + q
            question = [10_000_000 + n * 1000 + i for i in range(args.question_tokens)]
            question_text = "".join(token_text(n, i, args.chars_per_token) for i in range(args.question_tokens))
            requests.append(Request(n, s, f"{system_text}\n\nQuestion: {question_text}", system_tokens + question))
    random.Random(args.shuffle_seed).shuffle(requests)
    return requests


def token_text(prompt: int, i: int, chars_per_token: float) -> str:
    """The ``i``-th token of system prompt ``prompt`` as text, ``chars_per_token`` characters long on average."""
    width = int((i + 1) * chars_per_token) - int(i * chars_per_token)
    return f"{prompt}.{i}".rjust(width, "_")[-width:]


Choose = Callable[[Request, dict[str, int]], str]


def prefix_aware(imbalance: int, blocks_per_replica: int) -> tuple[Choose, Callable[[Request, str], None]]:
    index = PrefixIndex(blocks_per_replica)

    def choose(request: Request, loads: dict[str, int]) -> str:
        """As PrefixAwareRouter.choose_replicas does."""
        return index.route(block_keys(request.text), loads, imbalance)[0][0]

    def routed(request: Request, replica: str) -> None:
        index.record(block_keys(request.text), replica)

    return choose, routed


def least_loaded(seed: int = 0) -> tuple[Choose, Callable[[Request, str], None]]:
    rng = random.Random(seed)

    def choose(request: Request, loads: dict[str, int]) -> str:
        return min(rng.sample(REPLICAS, len(REPLICAS)), key=lambda r: loads[r])

    return choose, lambda request, replica: None


def simulate(
    args: argparse.Namespace, choose: Choose, routed: Callable[[Request, str], None]
) -> tuple[dict[str, Replica], float]:
    """One run of the whole workload: the client keeps ``args.concurrency`` requests in flight."""
    replicas = {}
    for name in REPLICAS:
        blocks = BlockManager(args.kv_cache_blocks, BLOCK_SIZE)
        scheduler = Scheduler(blocks, 32, list(range(16, 513)), 512, 32)  # the demo artifact's program shapes
        replicas[name] = Replica(name, blocks, scheduler)
    pending = iter(workload(args))
    events: list = []
    order = itertools.count()
    seen_loads = {name: 0 for name in REPLICAS}  # in flight, as the router last heard
    sent_at: dict[str, float] = {}

    def at(time: float, action: Callable[[float], None]) -> None:
        heapq.heappush(events, (time, next(order), action))

    def send(now: float) -> None:
        request = next(pending, None)
        if request is None:
            return
        name = choose(request, dict(seen_loads))
        replica = replicas[name]
        at(now + args.load_delay_ms, lambda now: seen_loads.update({name: seen_loads[name] + 1}))
        at(now + args.record_delay_ms, lambda now: routed(request, name))
        seq = Sequence(str(request.number), request.tokens, SamplingParams(max_tokens=args.output_tokens))
        replica.served[request.prompt] += 1
        sent_at[seq.request_id] = now
        replica.scheduler.add(seq)
        run(replica, now)

    def run(replica: Replica, now: float) -> None:
        if replica.busy or not replica.scheduler.has_work():
            return
        step = replica.scheduler.schedule()
        if step is None:
            return
        replica.busy = True
        if step.kind == "prefill":
            cost = args.step_ms + args.prefill_ms_per_token * sum(step.num_tokens)
        else:
            cost = args.step_ms + args.decode_ms_per_sequence * len(step.seqs)
        at(now + cost, lambda now: finish_step(replica, step, now))

    def finish_step(replica: Replica, step: ScheduledStep, now: float) -> None:
        for seq, n in zip(step.seqs, step.num_tokens):
            seq.num_computed_tokens += n
            replica.blocks.seal(seq)
            if seq.num_uncomputed == 0:
                seq.append_token(0)
                if len(seq.output_token_ids) == 1:
                    replica.ttfts.append(now - sent_at[seq.request_id])
                if len(seq.output_token_ids) == args.output_tokens:
                    replica.scheduler.finish(seq)
                    at(now + args.load_delay_ms, lambda now, name=replica.name: done(name))
                    send(now)
        replica.busy = False
        run(replica, now)

    def done(name: str) -> None:
        seen_loads[name] -= 1

    for n in range(args.concurrency):
        at(n * args.arrival_gap_ms, send)
    time = 0.0
    while events:
        time, _, action = heapq.heappop(events)
        action(time)
    return replicas, time


def report(name: str, replicas: dict[str, Replica], duration: float) -> float:
    hits = sum(r.blocks.prefix_hit_tokens for r in replicas.values())
    queries = sum(r.blocks.prefix_query_tokens for r in replicas.values())
    ttfts = [t for r in replicas.values() for t in r.ttfts]
    print(
        f"{name}: prefix-cache hits {hits} of {queries} prompt tokens ({hits / queries:.0%}), "
        f"mean TTFT {sum(ttfts) / len(ttfts):.0f} ms, all done in {duration / 1000:.0f} s"
    )
    for replica in replicas.values():
        share = " ".join(f"{replica.served[p]:2d}" for p in sorted(set().union(*(r.served for r in replicas.values()))))
        print(
            f"  replica {replica.name}: requests of each prompt [{share}], "
            f"hits {replica.blocks.prefix_hit_tokens / max(1, replica.blocks.prefix_query_tokens):.0%}, "
            f"preemptions {replica.scheduler.num_preemptions}"
        )
    return hits


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system-prompts", type=int, default=8)
    parser.add_argument("--requests-per-prompt", type=int, default=64)
    parser.add_argument("--system-tokens", type=int, default=768)
    parser.add_argument("--question-tokens", type=int, default=36, help="the question and the text before it")
    parser.add_argument("--chars-per-token", type=float, default=4.7, help="the benchmark's system prompts' text")
    parser.add_argument("--output-tokens", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--shuffle-seed", type=int, default=0, help="the benchmark's is 0")
    parser.add_argument("--kv-cache-blocks", type=int, default=291, help="per replica: 0.2 GiB of the demo model's")
    # The costs of one thread running the demo model in fp32, fitted to the fourth benchmark run (hits, mean TTFT and
    # duration within ~10% of both routers' measured ones with the router as it was then).
    parser.add_argument("--prefill-ms-per-token", type=float, default=2.0)
    parser.add_argument("--step-ms", type=float, default=80.0, help="a step's cost beyond its tokens (the weights)")
    parser.add_argument("--decode-ms-per-sequence", type=float, default=2.0)
    parser.add_argument("--arrival-gap-ms", type=float, default=1.0, help="between the first requests")
    parser.add_argument("--load-delay-ms", type=float, default=0.0, help="until the router counts a request sent")
    parser.add_argument("--record-delay-ms", type=float, default=5.0, help="until the replica accepts a request")
    parser.add_argument("--imbalance", type=int, default=DEFAULT_IMBALANCE)
    parser.add_argument("--blocks-per-replica", type=int, help="the router's index (default: the cache, as the app's)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.blocks_per_replica = args.blocks_per_replica or args.kv_cache_blocks - 1
    prefix = report("prefix-aware", *simulate(args, *prefix_aware(args.imbalance, args.blocks_per_replica)))
    default = report("least loaded", *simulate(args, *least_loaded()))
    print(f"hit tokens: prefix-aware x{prefix / max(1, default):.2f} the least-loaded router's")


if __name__ == "__main__":
    main()
