"""ingot on a local Ray cluster: two engine replicas of the tiny llama behind Ray Serve's proxy on 127.0.0.1.

One application for the module (starting two replicas is most of its time, on the session's cluster); the test that
kills a replica runs last and leaves the application recovered.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from ray import serve

from ingot.artifacts.integrity import check_artifact
from ingot.deploy import ray as ingot_ray
from ingot.deploy.prefixes import DEFAULT_IMBALANCE
from ingot.deploy.ray import APP_NAME, AppOptions, build_app
from ingot.runtime.engine import Engine
from ingot.server.settings import DEFAULT_MAX_REQUEST_BYTES
from tests.deploy.conftest import deployed, running_replicas
from tests.server.helpers import eventually
from tests.server.test_errors import assert_openai_error

SYSTEM = "You are the keeper of a lighthouse on a rocky coast; answer every question in one short line. " * 3


@dataclass
class Cluster:
    url: str
    model: str
    artifact: Path
    cache_dir: Path


@pytest.fixture(scope="module")
def cluster(ray_cluster, compiled, session_store):
    artifact = compiled("llama")
    options = AppOptions(
        model=str(artifact.path), cache_dir=str(session_store.root), replicas=2, threads=1, kv_cache_gb=0.02
    )
    with deployed(build_app(options)):
        url = ray_cluster.url
        assert eventually(lambda: httpx.get(f"{url}/health").status_code == 200, timeout=60)
        yield Cluster(url, artifact.manifest.model.name, artifact.path, session_store.root)


def replica_metrics(cluster: Cluster) -> dict[str, dict[str, float]]:
    """metric sample name -> replica -> value, from the application's /metrics."""
    text = httpx.get(f"{cluster.url}/metrics", timeout=30).text
    values: dict[str, dict[str, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            replica = sample.labels.get("replica")
            if replica is not None and "le" not in sample.labels:
                values[sample.name][replica] = values[sample.name].get(replica, 0) + sample.value
    return values


def test_sixteen_openai_streams_use_both_replicas(cluster: Cluster):
    async def one(client: openai.AsyncOpenAI, n: int) -> tuple[str | None, int | None]:
        """The stream's finish reason and its completion tokens (from its usage chunk)."""
        stream = await client.completions.create(
            model=cluster.model, prompt=f"Stream {n} says", max_tokens=12, temperature=0, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
        )
        finish, tokens = None, None
        async for chunk in stream:
            if chunk.choices:
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        return finish, tokens

    async def all_streams() -> list[tuple[str | None, int | None]]:
        async with openai.AsyncOpenAI(base_url=f"{cluster.url}/v1", api_key="none", max_retries=0) as client:
            return await asyncio.gather(*(one(client, n) for n in range(16)))

    before = replica_metrics(cluster)
    results = asyncio.run(all_streams())
    # A random-weight model's tokens may decode to no text (part of a character), so the tokens are counted.
    assert results == [("length", 12)] * 16
    after = replica_metrics(cluster)
    finished = {r: after["vllm:request_success_total"][r] - before["vllm:request_success_total"].get(r, 0) for r in after["vllm:request_success_total"]}
    assert len(finished) == 2 and all(count > 0 for count in finished.values()), finished
    assert sum(finished.values()) == 16
    # Every replica's engine metrics under vLLM's names, told apart by the replica label.
    for name in ("vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "vllm:prefix_cache_hits_total"):
        assert set(after[name]) == set(finished), name


def test_requests_sharing_a_prefix_go_to_one_replica(cluster: Cluster):
    before = replica_metrics(cluster)
    with httpx.Client(base_url=cluster.url, timeout=60) as client:
        answered_by = set()
        for n in range(6):
            body = {"model": cluster.model, "prompt": f"{SYSTEM}Question {n}: why?", "max_tokens": 2}
            response = client.post("/v1/completions", json=body)
            assert response.status_code == 200, response.text
            answered_by.add(response.headers["x-ingot-replica"])
    assert len(answered_by) == 1
    [replica] = answered_by
    after = replica_metrics(cluster)
    prompt_tokens = {r: after["vllm:prompt_tokens_total"][r] - before["vllm:prompt_tokens_total"].get(r, 0) for r in after["vllm:prompt_tokens_total"]}
    assert prompt_tokens[replica] > 0 and all(v == 0 for r, v in prompt_tokens.items() if r != replica), prompt_tokens
    hits = after["vllm:prefix_cache_hits_total"][replica] - before["vllm:prefix_cache_hits_total"].get(replica, 0)
    assert hits > 0  # the shared prefix was computed once and then found in the replica's cache


def test_serve_run_arguments_build_the_application(cluster: Cluster):
    """What `serve run ingot.deploy.ray:app NAME=VALUE ...` does with its arguments (text, as the command line gives
    them), through the function of Ray's that it calls."""
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary as build_with_args

    args = {"model": str(cluster.artifact), "cache_dir": str(cluster.cache_dir), "replicas": "2", "threads": "1"}
    assert isinstance(build_with_args(ingot_ray.app, args), serve.Application)
    with pytest.raises(ValidationError, match="replicas"):
        build_with_args(ingot_ray.app, {**args, "replicas": "0"})
    with pytest.raises(ValidationError, match="no_such_option"):
        build_with_args(ingot_ray.app, {**args, "no_such_option": "1"})


def test_autoscaling_bounds_and_threads_reach_the_replicas_deployment(cluster: Cluster):
    """What Ray is handed (read through Ray's private fields: nothing public exposes a bound application's config);
    that Ray then scales on it is Ray's."""
    options = AppOptions(
        model=str(cluster.artifact), cache_dir=str(cluster.cache_dir), min_replicas=1, max_replicas=3, threads=1,
        target_ongoing_requests=4, upscale_delay_s=2, downscale_delay_s=5,
    )
    ingress = build_app(options)._bound_deployment
    [replicas] = [arg._bound_deployment for arg in ingress.init_args if isinstance(arg, serve.Application)]
    assert replicas.name == "IngotReplica" and replicas.ray_actor_options["num_cpus"] == 1
    scaling = replicas._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.initial_replicas, scaling.max_replicas) == (1, 1, 3)
    assert scaling.target_ongoing_requests == 4
    assert (scaling.upscale_delay_s, scaling.downscale_delay_s) == (2, 5)
    assert ingress.ray_actor_options["num_cpus"] == 0


def test_the_prefix_router_remembers_as_many_blocks_as_a_replica_caches(cluster: Cluster):
    """The router's index is bounded by a replica's prefix cache, so that it stops counting a replica a holder of a
    prefix about when that replica's cache has evicted it (read through Ray's private fields, as above)."""
    options = AppOptions(
        model=str(cluster.artifact), cache_dir=str(cluster.cache_dir), replicas=2, threads=1, kv_cache_gb=0.02
    )
    ingress = build_app(options)._bound_deployment
    [replicas] = [arg._bound_deployment for arg in ingress.init_args if isinstance(arg, serve.Application)]
    kwargs = replicas._deployment_config.request_router_config.request_router_kwargs
    engine = Engine(cluster.artifact, check_artifact(cluster.artifact), kv_cache_gb=0.02)  # what a replica runs
    try:
        assert kwargs == {"imbalance": DEFAULT_IMBALANCE, "blocks_per_replica": engine.blocks.capacity}
    finally:
        engine.shutdown()


def test_chat_streamed_and_not_says_the_same(cluster: Cluster):
    messages = [{"role": "user", "content": "Name a colour."}]
    with openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="none", max_retries=0) as client:
        chat = client.chat.completions.create(model=cluster.model, messages=messages, max_tokens=8, temperature=0)
        stream = client.chat.completions.create(
            model=cluster.model, messages=messages, max_tokens=8, temperature=0, stream=True
        )
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens > 0
    assert streamed == chat.choices[0].message.content


def test_health_and_errors_pass_through_in_openai_shape(cluster: Cluster):
    assert httpx.get(f"{cluster.url}/health").status_code == 200
    response = httpx.post(f"{cluster.url}/v1/completions", json={"model": cluster.model, "prompt": "x", "max_tokens": -1})
    assert_openai_error(response, 400, "max_tokens")
    unknown = httpx.post(
        f"{cluster.url}/v1/chat/completions",
        json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert assert_openai_error(unknown, 404, "model")["code"] == "model_not_found"
    too_big = httpx.post(f"{cluster.url}/v1/completions", content=b"x" * (DEFAULT_MAX_REQUEST_BYTES + 1))
    assert_openai_error(too_big, 413)
    assert httpx.get(f"{cluster.url}/v1/models").json()["data"][0]["id"] == cluster.model


def _replica_pids() -> set[int]:
    found = set()
    for process in psutil.process_iter(["cmdline"]):
        if any(f"ServeReplica:{APP_NAME}:IngotReplica" in part for part in process.info["cmdline"] or []):
            found.add(process.pid)
    return found


def test_a_killed_replica_fails_only_its_requests_and_is_replaced(cluster: Cluster):
    pids = _replica_pids()
    assert len(pids) == 2, pids

    async def one(client: httpx.AsyncClient, n: int, started: asyncio.Event, counter: list[int]) -> tuple[str, bool]:
        body = {
            "model": cluster.model, "prompt": f"Long story {n}:", "max_tokens": 200, "stream": True,
            "ignore_eos": True, "temperature": 0,
        }
        finished = False
        async with client.stream("POST", "/v1/completions", json=body) as response:
            replica = response.headers["x-ingot-replica"]
            try:
                async for line in response.aiter_lines():
                    if line.startswith("data: {"):
                        counter[0] += 1
                        started.set()
                        finished = finished or json.loads(line[6:])["choices"][0]["finish_reason"] == "length"
            except httpx.HTTPError:
                pass
        return replica, finished

    async def run() -> list[tuple[str, bool]]:
        started, counter = asyncio.Event(), [0]
        async with httpx.AsyncClient(base_url=cluster.url, timeout=120) as client:
            tasks = [asyncio.create_task(one(client, n, started, counter)) for n in range(8)]
            await started.wait()
            while counter[0] < 16:  # every stream under way
                await asyncio.sleep(0.01)
            os.kill(min(pids), signal.SIGKILL)
            return await asyncio.gather(*tasks)

    results = asyncio.run(run())
    by_replica: dict[str, list[bool]] = defaultdict(list)
    for replica, finished in results:
        by_replica[replica].append(finished)
    assert len(by_replica) == 2, results  # both replicas had streams in flight
    survivors = [replica for replica, done in by_replica.items() if all(done)]
    assert len(survivors) == 1, results  # every stream on the surviving replica completed
    assert not any(done for replica, done in by_replica.items() if replica not in survivors for done in done)
    assert httpx.get(f"{cluster.url}/health").status_code == 200  # one replica is still ready

    assert eventually(lambda: running_replicas() == 2 and len(_replica_pids() - {min(pids)}) == 2, timeout=180)
    answered = set()
    for n in range(6):
        response = httpx.post(
            f"{cluster.url}/v1/completions", json={"model": cluster.model, "prompt": f"Again {n}", "max_tokens": 2},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        answered.add(response.headers["x-ingot-replica"])
    assert answered, answered
