"""POST /v1/chat/completions: the conversation through the artifact's chat template, then a completion."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response

from ingot.runtime.sampling_params import MAX_LOGPROBS
from ingot.server.access_log import access_record
from ingot.server.bodies import documented_body, parse_body
from ingot.server.errors import bad_request
from ingot.server.generation import Choice, Generation, failure
from ingot.server.logprobs import TokenText, chat_logprobs
from ingot.server.prompts import chat_prompt, tokenize_text
from ingot.server.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatMessageOut,
    Usage,
)
from ingot.server.sampling import check_n, make_choices
from ingot.server.served import ServedModel
from ingot.server.state import server_state
from ingot.server.streaming import DONE, run_generation, sse, sse_error

router = APIRouter()


@router.post(
    "/v1/chat/completions", response_model=ChatCompletionResponse, openapi_extra=documented_body(ChatCompletionRequest)
)
async def create_chat_completion(request: Request) -> Response | ChatCompletionResponse:
    state = server_state(request)
    body = await parse_body(request, ChatCompletionRequest, state.check_sizes)
    served = state.model(body.model)
    _reject_unsupported(body)
    check_n(body.n, served.max_queue)
    # Templating and tokenizing are CPU work: on a worker thread, so that other requests are answered meanwhile.
    prompt, prompt_ids, choices = await anyio.to_thread.run_sync(_prepare, served, body)
    record = access_record(request)
    if state.settings.log_prompts:
        record.prompt = prompt
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    generation = Generation(served, state.metrics, request_id, choices, len(prompt_ids), record)
    token_text = TokenText(served.engine.tokenizer)
    results = await run_generation(request, generation, _events(generation, body, token_text) if body.stream else None)
    if isinstance(results, Response):
        return results
    return ChatCompletionResponse(
        id=request_id,
        created=int(time.time()),
        model=served.name,
        choices=[
            ChatChoice(
                index=index,
                message=ChatMessageOut(content=result.text),
                logprobs=chat_logprobs(token_text, result.logprobs) if body.logprobs else None,
                finish_reason=result.finish_reason,
            )
            for index, result in enumerate(results)
        ],
        usage=generation.usage(),
    )


def _prepare(served: ServedModel, body: ChatCompletionRequest) -> tuple[str, list[int], list[Choice]]:
    prompt = chat_prompt(served.engine, body.messages, max_chars=served.max_prompt_chars)
    prompt_ids = tokenize_text(served.engine, prompt, "messages", max_chars=served.max_prompt_chars)
    choices = make_choices(
        body,
        [prompt_ids],
        max_tokens=body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        max_context=served.engine.max_context,
    )
    return prompt, prompt_ids, choices


def _reject_unsupported(body: ChatCompletionRequest) -> None:
    if body.tools:
        raise bad_request("tools are not supported", "tools")
    if body.functions:
        raise bad_request("functions are not supported", "functions")
    if body.tool_choice not in (None, "none"):
        raise bad_request('tool_choice must be "none": tools are not supported', "tool_choice")
    if body.function_call not in (None, "none"):
        raise bad_request('function_call must be "none": functions are not supported', "function_call")
    if body.response_format is not None and body.response_format.type != "text":
        raise bad_request(f"response_format {body.response_format.type} is not supported", "response_format")
    if body.top_logprobs is not None and not body.logprobs:
        raise bad_request("top_logprobs requires logprobs to be true", "top_logprobs")
    if body.top_logprobs is not None and not 0 <= body.top_logprobs <= MAX_LOGPROBS:
        raise bad_request(f"top_logprobs must be in [0, {MAX_LOGPROBS}], got {body.top_logprobs}", "top_logprobs")
    if body.stream_options is not None and not body.stream:
        raise bad_request("stream_options is only allowed when stream is true", "stream_options")


async def _events(generation: Generation, body: ChatCompletionRequest, token_text: TokenText) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None) -> str:
        return sse(
            ChatCompletionChunk(
                id=generation.request_id, created=created, model=generation.served.name, choices=choices, usage=usage
            )
        )

    for index in range(len(generation.choices)):  # OpenAI opens every choice with the role, before any content
        yield chunk([ChatChunkChoice(index=index, delta=ChatDelta(role="assistant", content=""))])
    async for index, output in generation.outputs():
        message = failure(output)
        if message is not None:  # after the 200: the error travels in the stream
            yield sse_error(message)
            yield DONE
            return
        if output.text or output.logprobs or output.finished:
            delta = ChatDelta(content=output.text) if output.text else ChatDelta()
            logprobs = chat_logprobs(token_text, output.logprobs) if body.logprobs else None
            choice = ChatChunkChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=output.finish_reason)
            yield chunk([choice])
    if body.stream_options is not None and body.stream_options.include_usage:
        yield chunk([], generation.usage())
    yield DONE
