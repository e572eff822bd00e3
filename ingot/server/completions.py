"""POST /v1/completions: OpenAI's legacy text completions."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response

from ingot.server.access_log import access_record
from ingot.server.bodies import documented_body, parse_body
from ingot.server.errors import bad_request
from ingot.server.generation import Choice, ChoiceResult, Generation, failure
from ingot.server.logprobs import TokenText, completion_logprobs, echoed_prompt, vllm_prompt_logprobs
from ingot.server.prompts import completion_prompts, prompt_list
from ingot.server.protocol import CompletionChoice, CompletionRequest, CompletionResponse, Usage
from ingot.server.sampling import check_n, make_choices
from ingot.server.served import ServedModel
from ingot.server.state import server_state
from ingot.server.streaming import DONE, chunk_sse, run_generation, sse_error
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
    prompts, choices, echoes = await anyio.to_thread.run_sync(_prepare, served, body)
    record = access_record(request)
    if state.settings.log_prompts:
        record.prompt = body.prompt if isinstance(body.prompt, str) else str(body.prompt)
    request_id = f"cmpl-{uuid.uuid4().hex}"
    generation = Generation(served, state.metrics, request_id, choices, sum(map(len, prompts)), record)
    token_text = TokenText(served.engine.tokenizer)
    events = _events(generation, body, token_text, echoes) if body.stream else None
    results = await run_generation(request, generation, events)
    if isinstance(results, Response):
        return results
    choices = []
    for index, result in enumerate(results):
        echo = echoes[index // body.n] if echoes else None
        logprobs = None
        if body.logprobs is not None:
            logprobs = completion_logprobs(token_text, _with_echo(echo, result, body.logprobs) + result.logprobs, 0)
        prompt_logprobs = None
        if body.prompt_logprobs is not None:
            prompt_logprobs = vllm_prompt_logprobs(token_text, result.prompt_logprobs or [])
        text = result.text if echo is None else echo.text + result.text
        choice = CompletionChoice(
            index=index, text=text, logprobs=logprobs, finish_reason=result.finish_reason,
            prompt_logprobs=prompt_logprobs,
        )  # fmt: skip
        choices.append(choice)
    return CompletionResponse(
        id=request_id, created=int(time.time()), model=served.name, choices=choices, usage=generation.usage()
    )


@dataclass(frozen=True)
class Echo:
    """A prompt as an echoing response repeats it: its text (as given, or its token ids decoded) and token ids."""

    text: str
    token_ids: list[int]


def _prepare(served: ServedModel, body: CompletionRequest) -> tuple[list[list[int]], list[Choice], list[Echo]]:
    """Each prompt's token ids, every choice, and (with echo) each prompt's echo."""
    engine = served.engine
    grammar = compile_grammar(engine, requested_grammar(body))
    prompts = completion_prompts(engine, body.prompt, served.max_prompt_chars)
    choices = make_choices(
        body, prompts, max_tokens=body.max_tokens, logprobs=body.logprobs, max_context=engine.max_context,
        grammar=grammar, prompt_logprobs=_prompt_logprobs(body),
    )  # fmt: skip
    echoes = []
    if body.echo:
        for given, token_ids in zip(prompt_list(body.prompt), prompts):
            text = given if isinstance(given, str) else engine.tokenizer.decode(token_ids, skip_special_tokens=False)
            echoes.append(Echo(text, token_ids))
    return prompts, choices, echoes


def _prompt_logprobs(body: CompletionRequest) -> int | None:
    """How many alternatives the engine computes for each prompt token (None: it does not score the prompt).
    An echo with ``max_tokens`` 0 scores the prompt even without logprobs: that is what a request that generates
    nothing runs for."""
    echoed = body.logprobs if body.echo and body.logprobs is not None else None
    if body.echo and body.max_tokens == 0 and echoed is None:
        echoed = 0
    wanted = [count for count in (echoed, body.prompt_logprobs) if count is not None]
    return max(wanted) if wanted else None


def _with_echo(echo: Echo | None, result: ChoiceResult, top: int) -> list:
    """The echoed prompt's logprob entries that come before a choice's own (none without echo)."""
    if echo is None:
        return []
    return echoed_prompt(echo.token_ids, result.prompt_logprobs or [None], top)


def _reject_unsupported(body: CompletionRequest) -> None:
    if body.max_tokens == 0 and not body.echo:
        raise bad_request("max_tokens must be >= 1 (0 only with echo, to score the prompt), got 0", "max_tokens")
    if body.prompt_logprobs is not None and body.stream:
        raise bad_request("prompt_logprobs is not available when streaming (as in vLLM); use echo", "prompt_logprobs")
    if body.suffix:
        raise bad_request("suffix is not supported", "suffix")
    if body.best_of is not None and body.best_of < body.n:
        raise bad_request(f"best_of must be >= n ({body.n}), got {body.best_of}", "best_of")
    if body.best_of is not None and body.best_of > body.n:
        raise bad_request("best_of > n is not supported: no extra candidates are generated", "best_of")
    if body.stream_options is not None and not body.stream:
        raise bad_request("stream_options is only allowed when stream is true", "stream_options")


async def _events(
    generation: Generation, body: CompletionRequest, token_text: TokenText, echoes: list[Echo]
) -> AsyncIterator[str]:
    """A choice's first chunk carries its echoed prompt (and the prompt's logprobs) before its first text, as
    vLLM streams it."""
    created = int(time.time())
    offsets = [0] * len(generation.choices)  # where each choice's next token starts in its text, for text_offset
    unechoed = set(range(len(generation.choices))) if echoes else set()

    def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> str:
        return chunk_sse(
            CompletionResponse(
                id=generation.request_id, created=created, model=generation.served.name, choices=choices, usage=usage
            ),
            body.include_usage,
        )

    async for index, output in generation.outputs():
        message = failure(output)
        if message is not None:  # after the 200: the error travels in the stream
            yield sse_error(message)
            yield DONE
            return
        echo = echoes[index // body.n] if index in unechoed else None
        unechoed.discard(index)
        text = output.text if echo is None else echo.text + output.text
        logprobs = None
        if body.logprobs is not None:
            echoed = [] if echo is None else echoed_prompt(echo.token_ids, output.prompt_logprobs or [None], body.logprobs)
            logprobs = completion_logprobs(token_text, echoed + output.logprobs, offsets[index])
            offsets[index] += sum(map(len, logprobs.tokens))
        if text or output.logprobs or output.finished:
            choice = CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=output.finish_reason)
            yield chunk([choice])
    if body.include_usage:
        yield chunk([], generation.usage())
    yield DONE
