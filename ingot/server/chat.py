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
from ingot.server.streaming import DONE, chunk_sse, run_generation, sse_error
from ingot.server.structured import compile_grammar, requested_grammar
from ingot.server.tool_stream import ToolCallStream
from ingot.server.tools import ToolPlan, plan_tools

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
    prompt, prompt_ids, choices, tools = await anyio.to_thread.run_sync(
        _prepare, served, body, state.settings.tool_call_parser
    )
    record = access_record(request)
    if state.settings.log_prompts:
        record.prompt = prompt
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    generation = Generation(served, state.metrics, request_id, choices, len(prompt_ids), record)
    token_text = TokenText(served.engine.tokenizer)
    events = _events(generation, body, token_text, tools) if body.stream else None
    results = await run_generation(request, generation, events)
    if isinstance(results, Response):
        return results
    choices_out = []
    for index, result in enumerate(results):
        parsed, finish_reason = tools.parse(result.text, result.finish_reason)
        message = ChatMessageOut(content=parsed.content, tool_calls=parsed.calls)
        logprobs = chat_logprobs(token_text, result.logprobs) if body.logprobs else None
        choices_out.append(ChatChoice(index=index, message=message, logprobs=logprobs, finish_reason=finish_reason))
    return ChatCompletionResponse(
        id=request_id, created=int(time.time()), model=served.name, choices=choices_out, usage=generation.usage()
    )


def _prepare(
    served: ServedModel, body: ChatCompletionRequest, tool_call_parser: str | None
) -> tuple[str, list[int], list[Choice], ToolPlan]:
    """Tools, grammar, prompt and choices: template rendering, tokenizing and grammar compiling are CPU work."""
    tools = plan_tools(served.engine, body, tool_call_parser)
    tool_grammar, requested = tools.grammar(), requested_grammar(body)
    if tool_grammar is not None and requested is not None:
        raise bad_request(f"tool_choice {tools.mode} cannot be combined with structured outputs", "tool_choice")
    grammar = compile_grammar(served.engine, tool_grammar or requested)
    prompt = chat_prompt(served.engine, body.messages, max_chars=served.max_prompt_chars, tools=tools)
    prompt_ids = tokenize_text(served.engine, prompt, "messages", max_chars=served.max_prompt_chars)
    choices = make_choices(
        body,
        [prompt_ids],
        max_tokens=body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        max_context=served.engine.max_context,
        grammar=grammar,
    )
    return prompt, prompt_ids, choices, tools


def _reject_unsupported(body: ChatCompletionRequest) -> None:
    if body.functions:
        raise bad_request("functions are not supported; use tools", "functions")
    if body.function_call not in (None, "none"):
        raise bad_request('function_call must be "none": functions are not supported; use tools', "function_call")
    if body.top_logprobs is not None and not body.logprobs:
        raise bad_request("top_logprobs requires logprobs to be true", "top_logprobs")
    if body.top_logprobs is not None and not 0 <= body.top_logprobs <= MAX_LOGPROBS:
        raise bad_request(f"top_logprobs must be in [0, {MAX_LOGPROBS}], got {body.top_logprobs}", "top_logprobs")
    if body.stream_options is not None and not body.stream:
        raise bad_request("stream_options is only allowed when stream is true", "stream_options")


async def _events(
    generation: Generation, body: ChatCompletionRequest, token_text: TokenText, tools: ToolPlan
) -> AsyncIterator[str]:
    created = int(time.time())
    streams = [ToolCallStream(tools) for _ in generation.choices]

    def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None) -> str:
        return chunk_sse(
            ChatCompletionChunk(
                id=generation.request_id, created=created, model=generation.served.name, choices=choices, usage=usage
            ),
            body.include_usage,
        )

    for index in range(len(generation.choices)):  # OpenAI opens every choice with the role, before any content
        yield chunk([ChatChunkChoice(index=index, delta=ChatDelta(role="assistant", content=""))])
    async for index, output in generation.outputs():
        message = failure(output)
        if message is not None:  # after the 200: the error travels in the stream
            yield sse_error(message)
            yield DONE
            return
        delta = streams[index].feed(output.text)
        finish_reason = None
        if output.finished:
            last, finish_reason = streams[index].finish(output.finish_reason)
            delta = _merged(delta, last)
        if delta is not None or output.logprobs or output.finished:
            logprobs = chat_logprobs(token_text, output.logprobs) if body.logprobs else None
            choice = ChatChunkChoice(
                index=index, delta=delta or ChatDelta(), logprobs=logprobs, finish_reason=finish_reason
            )
            yield chunk([choice])
    if body.include_usage:
        yield chunk([], generation.usage())
    yield DONE


def _merged(first: ChatDelta | None, second: ChatDelta | None) -> ChatDelta | None:
    """One delta for a step's text and the held-back end of its choice."""
    if first is None or second is None:
        return first or second
    content = (first.content or "") + (second.content or "") if first.content or second.content else None
    calls = (first.tool_calls or []) + (second.tool_calls or []) or None
    return ChatDelta(content=content, tool_calls=calls)
