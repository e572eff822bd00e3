"""Many clients at once, clients that leave, and the metrics that show both."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import openai

from tests.server.helpers import eventually

PROMPTS = [
    "The quick brown fox",
    "Compilers turn programs into fast code",
    "def main():\n    return 42\n",
    "Héllo wörld",
    "Once upon a time",
    "1, 2, 3, 4,",
    "The lighthouse keeper",
    "日本語のテキスト",
]
GREEDY = dict(temperature=0, max_tokens=24, extra_body={"ignore_eos": True})
METRICS = [
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:inter_token_latency_seconds_bucket",
    "vllm:e2e_request_latency_seconds_bucket",
    "vllm:request_queue_time_seconds_bucket",
]


def test_32_concurrent_streams_all_finish_and_match_one_at_a_time(server, client):
    prompts = PROMPTS * 4

    async def stream_one(api: openai.AsyncOpenAI, prompt: str) -> str:
        chunks = await api.completions.create(model=server.model, prompt=prompt, stream=True, **GREEDY)
        return "".join([chunk.choices[0].text async for chunk in chunks if chunk.choices])

    async def all_at_once() -> list[str]:
        api = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=server.settings.api_key, max_retries=0)
        async with api:
            return await asyncio.gather(*(stream_one(api, p) for p in prompts))

    together = asyncio.run(all_at_once())
    alone = [client.completions.create(model=server.model, prompt=p, **GREEDY).choices[0].text for p in prompts]
    assert together == alone
    assert len(set(together)) > 1


def idle(server) -> bool:
    return server.metric("vllm:num_requests_running") == 0 and server.metric("vllm:kv_cache_usage_perc") == 0


def test_streaming_clients_that_disconnect_are_aborted(server):
    aborted = server.metric("vllm:request_success_total", finished_reason="abort")
    finished = server.metric("vllm:request_success_total", finished_reason="length")
    generated = server.metric("vllm:generation_tokens_total")
    request = {"prompt": "Once upon a time", "max_tokens": 240, "ignore_eos": True, "stream": True}
    with contextlib.ExitStack() as open_streams:
        readers = []  # kept: a discarded line iterator would close its connection early
        for _ in range(4):
            http = open_streams.enter_context(server.http())
            response = open_streams.enter_context(http.stream("POST", "/v1/completions", json=request))
            readers.append(response.iter_lines())
            next(readers[-1]), next(readers[-1])  # generating
        assert server.metric("vllm:num_requests_running") > 0
    # Leaving the block closed every response and client mid-stream. The tiny model is fast and the
    # socket buffers hold a whole reply, so a stream may finish before its client closes: every one of
    # the 4 either ran to its length or was aborted, and at least the ones still running were aborted.
    assert eventually(lambda: idle(server))
    newly_aborted = server.metric("vllm:request_success_total", finished_reason="abort") - aborted
    newly_finished = server.metric("vllm:request_success_total", finished_reason="length") - finished
    assert newly_aborted >= 1 and newly_aborted + newly_finished == 4
    assert server.metric("vllm:generation_tokens_total") - generated < 4 * 240


def test_a_non_streaming_client_that_disconnects_is_aborted(server):
    aborted = server.metric("vllm:request_success_total", finished_reason="abort")
    request = {"prompt": "Once upon a time", "max_tokens": 240, "ignore_eos": True, "n": 4}
    try:
        server.http(timeout=0.1).post("/v1/completions", json=request)
        raise AssertionError("the request finished before the client gave up")
    except httpx.ReadTimeout:
        pass
    assert eventually(lambda: idle(server))
    assert server.metric("vllm:request_success_total", finished_reason="abort") == aborted + 4


def test_metrics_have_vllm_names_and_model_labels(server, client):
    client.completions.create(model=server.model, prompt="Hello", max_tokens=4)
    text = httpx.get(f"{server.url}/metrics").text
    for name in METRICS:
        assert f'{name}{{' in text and any(
            line.startswith(name) and f'model_name="{server.model}"' in line for line in text.splitlines()
        ), name
    assert server.metric("vllm:request_success_total", finished_reason="length") >= 1
    assert 0 <= server.metric("vllm:kv_cache_usage_perc") <= 1
