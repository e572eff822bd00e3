"""The small endpoints: model list, tokenizer access, health, version and metrics."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from ingot import __version__
from ingot.artifacts.manifest import Manifest
from ingot.server.bodies import documented_body, parse_body
from ingot.server.errors import ERROR_RESPONSES, APIError
from ingot.server.prompts import chat_prompt, tokenize_text
from ingot.server.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    ModelCard,
    ModelList,
    ModelMetadata,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
    TokenizeRequest,
    TokenizeResponse,
    VersionResponse,
)
from ingot.server.served import ServedDetector, ServedModel
from ingot.server.state import server_state

router = APIRouter()


@router.get("/v1/models", responses={401: ERROR_RESPONSES[401]})
async def list_models(request: Request) -> ModelList:
    state = server_state(request)
    cards = [_card(m, m.engine.manifest, m.engine.max_context) for m in state.models.values()]
    cards += [_card(d, d.detector.manifest, None) for d in state.detectors.values()]
    return ModelList(data=cards)


def _card(served: ServedModel | ServedDetector, manifest: Manifest, max_model_len: int | None) -> ModelCard:
    llm = manifest.kind == "llm"
    metadata = ModelMetadata(
        artifact=manifest.key,
        model=manifest.model.name,
        target=manifest.target,
        weight_format=manifest.options.get("weight_format", "fp32") if llm else None,
        activation_dtype=manifest.options.get("activation_dtype", "fp32") if llm else None,
    )
    return ModelCard(
        id=served.name, created=served.created, root=manifest.model.name, max_model_len=max_model_len,
        metadata=metadata,
    )  # fmt: skip


@router.post("/tokenize", responses=ERROR_RESPONSES, openapi_extra=documented_body(TokenizeRequest))
async def tokenize(request: Request) -> TokenizeResponse:
    """vLLM's /tokenize: the token ids the completion or chat endpoint would feed the model."""
    state = server_state(request)
    body = (await parse_body(request, TokenizeRequest, state.check_sizes)).root
    served = state.model(body.model)
    return await anyio.to_thread.run_sync(_tokenize, served, body)  # CPU work, off the event loop


def _tokenize(served: ServedModel, body: TokenizeCompletionRequest | TokenizeChatRequest) -> TokenizeResponse:
    engine, max_chars = served.engine, served.max_prompt_chars
    if isinstance(body, TokenizeChatRequest):
        text = chat_prompt(engine, body.messages, body.add_generation_prompt, max_chars)
        tokens = tokenize_text(engine, text, "messages", max_chars=max_chars)
    else:
        tokens = tokenize_text(engine, body.prompt, "prompt", body.add_special_tokens, max_chars)
    strs = engine.tokenizer.convert_ids_to_tokens(tokens) if body.return_token_strs else None
    return TokenizeResponse(count=len(tokens), max_model_len=engine.max_context, tokens=tokens, token_strs=strs)


@router.post("/detokenize", responses=ERROR_RESPONSES)
async def detokenize(body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
    engine = server_state(request).model(body.model).engine

    def decode() -> str:
        return engine.tokenizer.decode(engine.tokenize(body.tokens))  # tokenize checks the ids against the vocabulary

    return DetokenizeResponse(prompt=await anyio.to_thread.run_sync(decode))


@router.get("/health")
async def health(request: Request) -> Response:
    """200 once every model has warmed up; load balancers and `ingot serve`'s callers wait for it."""
    if not server_state(request).ready:
        raise APIError(503, "warming up", type="server_error", code="unavailable", headers={"Retry-After": "1"})
    return Response(status_code=200)


@router.get("/version")
async def version() -> VersionResponse:
    return VersionResponse(version=__version__)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(server_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
