"""POST /v1/completions: OpenAI's legacy text completions."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response

from ingot.server.access_log import access_record
from ingot.server.bodies import documented_body, parse_body
from ingot.server.errors import bad_request
from ingot.server.generation import Choice, Generation, failure
from ingot.server.logprobs import TokenText, completion_logprobs
from ingot.server.prompts import completion_prompts, prompt_list
from ingot.server.protocol import CompletionChoice, CompletionRequest, CompletionResponse, Usage
from ingot.server.sampling import check_n, make_choices
from ingot.server.served import ServedModel
from ingot.server.state import server_state
from ingot.server.streaming import DONE, run_generation, sse, sse_error
from ingot.server.structured import compile_grammar, requested_grammar

router = APIRouter()


@router.post("/v1/completions", response_model=CompletionResponse, openapi_extra=documented_body(CompletionRequest))
async def create_completion(request: Request) -> Response | CompletionResponse:
    state = server_state(request)
    body = await parse_body(request, CompletionRequest, state.check_sizes)
    served = state.model(body.model)
    _reject_unsupported(body)
    check_n(body.n, served.max_queue, len(prompt_list(body.prompt)))
    # Tokenizing is CPU work: on a worker thread, so that other requests (and /health) are answered meanwhile.
    prompts, choices = await anyio.to_thread.run_sync(_prepare, served, body)
    record = access_record(request)
    if state.settings.log_prompts:
        record.prompt = body.prompt if isinstance(body.prompt, str) else str(body.prompt)
    request_id = f"cmpl-{uuid.uuid4().hex}"
    generation = Generation(served, state.metrics, request_id, choices, sum(map(len, prompts)), record)
    token_text = TokenText(served.engine.tokenizer)
    results = await run_generation(request, generation, _events(generation, body, token_text) if body.stream else None)
    if isinstance(results, Response):
        return results
    return CompletionResponse(
        id=request_id,
        created=int(time.time()),
        model=served.name,
        choices=[
            CompletionChoice(
                index=index,
                text=result.text,
                logprobs=completion_logprobs(token_text, result.logprobs, 0) if body.logprobs is not None else None,
                finish_reason=result.finish_reason,
            )
            for index, result in enumerate(results)
        ],
        usage=generation.usage(),
    )


def _prepare(served: ServedModel, body: CompletionRequest) -> tuple[list[list[int]], list[Choice]]:
    grammar = compile_grammar(served.engine, requested_grammar(body))
    prompts = completion_prompts(served.engine, body.prompt, served.max_prompt_chars)
    choices = make_choices(
        body,
        prompts,
        max_tokens=body.max_tokens,
        logprobs=body.logprobs,
        max_context=served.engine.max_context,
        grammar=grammar,
    )
    return prompts, choices


def _reject_unsupported(body: CompletionRequest) -> None:
    if body.echo:
        raise bad_request("echo is not supported", "echo")
    if body.suffix:
        raise bad_request("suffix is not supported", "suffix")
    if body.best_of is not None and body.best_of < body.n:
        raise bad_request(f"best_of must be >= n ({body.n}), got {body.best_of}", "best_of")
    if body.best_of is not None and body.best_of > body.n:
        raise bad_request("best_of > n is not supported: no extra candidates are generated", "best_of")
    if body.stream_options is not None and not body.stream:
        raise bad_request("stream_options is only allowed when stream is true", "stream_options")


async def _events(generation: Generation, body: CompletionRequest, token_text: TokenText) -> AsyncIterator[str]:
    created = int(time.time())
    offsets = [0] * len(generation.choices)  # where each choice's next token starts in its text, for text_offset

    def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> str:
        return sse(
            CompletionResponse(
                id=generation.request_id, created=created, model=generation.served.name, choices=choices, usage=usage
            )
        )

    async for index, output in generation.outputs():
        message = failure(output)
        if message is not None:  # after the 200: the error travels in the stream
            yield sse_error(message)
            yield DONE
            return
        logprobs = None
        if body.logprobs is not None:
            logprobs = completion_logprobs(token_text, output.logprobs, offsets[index])
            offsets[index] += sum(map(len, logprobs.tokens))
        if output.text or output.logprobs or output.finished:
            choice = CompletionChoice(
                index=index, text=output.text, logprobs=logprobs, finish_reason=output.finish_reason
            )
            yield chunk([choice])
    if body.stream_options is not None and body.stream_options.include_usage:
        yield chunk([], generation.usage())
    yield DONE
