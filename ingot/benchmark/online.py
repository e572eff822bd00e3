"""Online benchmark: stream from any OpenAI-compatible server, `concurrency` requests in flight."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from ingot.benchmark.report import RequestRecord

REPLICA_HEADER = "x-ingot-replica"  # the replica of ingot on Ray Serve that answered (ingot.deploy.replica sets it)


def request_body(endpoint: str, model: str, prompt: str, output_len: int, extra: dict | None = None) -> dict:
    """A streamed request for ``output_len`` tokens; ``extra`` adds fields or replaces these (a JSON schema, say)."""
    body = {
        "model": model,
        "max_tokens": output_len,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,  # vLLM's and llama.cpp's extension: fixed output lengths make runs comparable
    }
    if endpoint.endswith("/chat/completions"):
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body | (extra or {})


def served_metadata(base_url: str, model: str, api_key: str | None = None) -> dict:
    """What an ingot server's /v1/models says of ``model`` (its artifact, target, weight format); {} from a server
    that says nothing (another server, or one that cannot be reached yet)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        cards = httpx.get(base_url.rstrip("/") + "/v1/models", headers=headers, timeout=30).json()["data"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return {}
    card = next((c for c in cards if isinstance(c, dict) and c.get("id") == model), {})
    return card.get("metadata") or {}


async def _one(client: httpx.AsyncClient, url: str, body: dict, prompt_tokens: int) -> RequestRecord:
    record = RequestRecord(prompt_tokens=prompt_tokens)
    start = last = time.perf_counter()
    chunks = 0
    try:
        async with client.stream("POST", url, json=body) as response:
            record.replica = response.headers.get(REPLICA_HEADER)
            if response.status_code != 200:
                await response.aread()
                record.error = f"HTTP {response.status_code}: {response.text[:200]}"
                return record
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if data.get("usage"):
                    record.output_tokens = data["usage"].get("completion_tokens", record.output_tokens)
                    record.prompt_tokens = data["usage"].get("prompt_tokens", record.prompt_tokens)
                choice = (data.get("choices") or [{}])[0]
                # a chunk with text, or the last one (its tokens may have had no text: special tokens), counts;
                # the chat stream's opening chunk (role only) does not
                if choice.get("text") or (choice.get("delta") or {}).get("content") or choice.get("finish_reason"):
                    now = time.perf_counter()
                    if chunks == 0:
                        record.ttft = now - start
                    else:
                        record.itl.append(now - last)
                    chunks += 1
                    last = now
    except httpx.HTTPError as error:
        record.error = f"{type(error).__name__}: {error}"
        return record
    record.output_tokens = record.output_tokens or chunks
    record.e2el = time.perf_counter() - start
    return record


async def run_online(
    base_url: str, endpoint: str, model: str, prompts: list[tuple[str, int]], output_len: int, concurrency: int,
    api_key: str | None = None, extra_body: dict | None = None,
) -> tuple[list[RequestRecord], float]:
    """``prompts`` are (text, token count) pairs; ``extra_body`` goes into every request (see ``request_body``)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limit = asyncio.Semaphore(concurrency)
    url = base_url.rstrip("/") + endpoint
    # A connection per request: a kept-alive connection the server has just closed fails the next request
    # sent on it ("Server disconnected without sending a response", seen with llama-server one stream at a time).
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), headers=headers, limits=limits) as client:

        async def bounded(text: str, tokens: int) -> RequestRecord:
            async with limit:
                body = request_body(endpoint, model, text, output_len, extra_body)
                return await _one(client, url, body, tokens)

        start = time.perf_counter()
        records = await asyncio.gather(*(bounded(text, tokens) for text, tokens in prompts))
    return list(records), time.perf_counter() - start
