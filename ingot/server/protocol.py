"""OpenAI's request and response bodies (with vLLM's extra sampling fields), as pydantic models.

Requests forbid unknown fields: a misspelt parameter is a 400, never silently ignored. Types are strict, as OpenAI's
are: ``"stream": "yes"`` or a prompt of booleans is a 400, not true or token ids (a float field still takes an
integer). Ranges are checked once, by ``SamplingParams``, so they are not repeated here.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, RootModel, Tag, model_validator


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: object) -> object:
        """OpenAI's API takes null for any optional parameter and means its default; clients send it."""
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class StreamOptions(_Request):
    include_usage: bool = False


class JsonSchemaFormat(_Request):
    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict | None = Field(None, alias="schema")  # None: any JSON object
    strict: bool | None = None  # the schema is always enforced, strict or not


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputs(_Request):
    """vLLM's ``structured_outputs``: exactly one constraint on the output."""

    json_: dict | str | None = Field(None, alias="json")  # a JSON schema, as an object or as its text
    regex: str | None = None
    choice: list[str] | None = Field(None, min_length=1)
    grammar: str | None = None  # EBNF (xgrammar's GBNF dialect)
    json_object: bool | None = None


class SamplingFields(_Request):
    """What both generation endpoints share. None means "the SamplingParams default"."""

    model: str | None = None  # None: the first served model
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None  # None: the rest of the context, capped (see sampling.py)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    logit_bias: dict[str, float] | None = None  # JSON keys are strings; they name token ids
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    min_tokens: int | None = None
    ignore_eos: bool | None = None
    skip_special_tokens: bool | None = None
    user: str | None = None  # accepted for compatibility; identifies the end user to the operator only
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None

    @property
    def include_usage(self) -> bool:
        """A stream's chunks carry ``usage`` (null until the last one, which has only the usage)."""
        return self.stream_options is not None and self.stream_options.include_usage


def _prompt_form(prompt: object) -> str:
    """Which of OpenAI's four prompt forms this is, from its first element, so that only that form is validated
    (a union tries every form, each failing item by item). The tags read as types, so error locations skip them."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        return "list[str]"
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], list):
        return "list[list[int]]"
    return "list[int]" if isinstance(prompt, list) else "str"


Prompt = Annotated[
    Union[
        Annotated[str, Tag("str")],
        Annotated[list[str], Tag("list[str]"), Field(fail_fast=True)],
        Annotated[list[int], Tag("list[int]"), Field(fail_fast=True)],
        Annotated[list[Annotated[list[int], Field(fail_fast=True)]], Tag("list[list[int]]"), Field(fail_fast=True)],
    ],
    Discriminator(_prompt_form),
]


class CompletionRequest(SamplingFields):
    prompt: Prompt
    logprobs: int | None = None
    # Scoring prompts (what evaluation harnesses ask for): echo returns the prompt before the completion, with its
    # tokens' logprobs when logprobs is set (max_tokens may then be 0); prompt_logprobs is vLLM's field for them.
    echo: bool | None = Field(
        None, description="return the prompt before the completion (with its tokens' logprobs when logprobs is set)"
    )
    prompt_logprobs: int | None = Field(
        None, description="vLLM's: each prompt token's logprob with this many alternatives, in choices[].prompt_logprobs"
    )
    suffix: str | None = None  # not supported: rejected unless empty
    best_of: int | None = None  # only best_of == n (no extra candidates are generated)


class TextPart(_Request):
    type: Literal["text"]
    text: str


class FunctionCall(_Request):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(_Request):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Request):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None  # None only for an assistant message with tool_calls
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool message: the call it answers

    @model_validator(mode="after")
    def _fits_role(self) -> ChatMessage:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only assistant messages have tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("a tool message needs tool_call_id, and only a tool message has one")
        if self.content is None and not self.tool_calls:
            raise ValueError("content is required, except in an assistant message with tool_calls")
        return self


class FunctionDefinition(_Request):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")  # OpenAI's rule for function names
    description: str | None = None
    parameters: dict | None = None  # a JSON schema; None: no arguments
    strict: bool | None = None  # the schema is always enforced when the grammar generates the call


class Tool(_Request):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Request):
    name: str


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: FunctionName


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None  # OpenAI's newer name for max_tokens; wins when both are given
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None  # None: "auto" with tools
    parallel_tool_calls: bool | None = None  # with "required": False asks for exactly one call
    # The deprecated functions API is not supported; accepted only so that its absence or "none" is not an error.
    functions: list[dict] | None = None
    function_call: str | dict | None = None


class TokenizeCompletionRequest(_Request):
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool = False


class TokenizeChatRequest(_Request):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    add_generation_prompt: bool = True
    return_token_strs: bool = False


class TokenizeRequest(RootModel[TokenizeCompletionRequest | TokenizeChatRequest]):
    """vLLM's /tokenize takes either form."""


class DetokenizeRequest(_Request):
    model: str | None = None
    tokens: list[int]


# --- responses ------------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]  # None: an echoed prompt's first token, which nothing predicts
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class PromptTokenLogprob(BaseModel):
    """vLLM's prompt_logprobs entry for one token."""

    logprob: float
    rank: int
    decoded_token: str


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None
    # vLLM's: per prompt token (None for the first), token id -> its entry; the prompt token and the alternatives
    prompt_logprobs: list[dict[str, PromptTokenLogprob] | None] | None = Field(
        None, exclude_if=lambda value: value is None
    )


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None  # None only in a stream's chunks, which leave it out unless include_usage


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] = Field(default_factory=list, exclude_if=lambda calls: not calls)


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: ChatLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls"]


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class FunctionCallDelta(BaseModel):
    name: str | None = Field(None, exclude_if=lambda name: name is None)
    arguments: str


class ToolCallDelta(BaseModel):
    """OpenAI's incremental tool call: the first delta of a call has its id, type and name; the arguments' text
    may follow in pieces."""

    index: int
    id: str | None = Field(None, exclude_if=lambda id: id is None)
    type: Literal["function"] | None = Field(None, exclude_if=lambda type: type is None)
    function: FunctionCallDelta


class ChatDelta(BaseModel):
    """A streamed message fragment: OpenAI sends the role once, then content pieces, omitting what is absent."""

    role: Literal["assistant"] | None = Field(None, exclude_if=lambda role: role is None)
    content: str | None = Field(None, exclude_if=lambda content: content is None)
    tool_calls: list[ToolCallDelta] | None = Field(None, exclude_if=lambda calls: calls is None)


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None  # left out unless include_usage


class ModelMetadata(BaseModel):
    """ingot's own: the artifact behind a served name, so that a client can tell two artifacts of one model apart
    (e.g. its fp32 and bfp8 weights, served together under --served-model-name)."""

    artifact: str  # the artifact's key
    model: str  # the model it was compiled from
    target: str
    weight_format: str | None  # a language model's --weight-format (fp32, bf16, bfp8, bfp4, accuracy, performance)
    activation_dtype: str | None  # a language model's --activation-dtype (fp32, bf16: linears' inputs in bfloat16)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ingot"
    root: str  # the model the artifact was compiled from (id, unless --served-model-name renamed it)
    parent: str | None = None
    max_model_len: int | None  # None for a detection model
    metadata: ModelMetadata


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeResponse(BaseModel):
    prompt: str


class VersionResponse(BaseModel):
    version: str


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body; every 4xx and 5xx the server sends has this shape."""

    error: ErrorInfo
