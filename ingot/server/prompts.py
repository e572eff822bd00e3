"""Request prompts to token ids: completion prompts as given, chat messages through the artifact's chat template."""

from __future__ import annotations

from jinja2 import TemplateError

from ingot.errors import ContextLengthError, RequestError
from ingot.runtime.engine import Engine
from ingot.server.errors import APIError, bad_request
from ingot.server.protocol import ChatMessage
from ingot.server.tools import ToolPlan, json_or_text, render_call, tools_system_text

# How many characters a normalizer may fold into one (NFC composes up to three code points into one character).
NORMALIZATION_SLACK = 4


def max_prompt_chars(engine: Engine) -> int:
    """No longer text fits the context, so none is tokenized (4 MB of text took 6 s): every token stands for at most
    as many characters as the vocabulary's longest entry (byte-level vocabularies spell each byte as a character;
    Llama's and Qwen's tokenizers map unknown text to bytes, never to one unknown token)."""
    longest = max(map(len, engine.tokenizer.get_vocab()))
    return engine.max_context * longest * NORMALIZATION_SLACK


def check_text_length(chars: int, max_chars: int | None, max_context: int, param: str) -> None:
    if max_chars is not None and chars > max_chars:
        message = f"this model's maximum context length is {max_context} tokens; {param} has {chars} characters, more than that many tokens can hold"
        raise APIError(400, message, param=param, code="context_length_exceeded")


def tokenize_text(
    engine: Engine, text: str, param: str, add_special_tokens: bool = False, max_chars: int | None = None
) -> list[int]:
    """The engine's tokenization, refusing text the tokenizer cannot take (a lone UTF-16 surrogate from JSON) or
    that is longer than ``max_chars`` (see ``max_prompt_chars``).

    Completion prompts get the tokenizer's special tokens (vLLM does the same); chat templates write their own.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(f"{param} is not valid Unicode text (it contains a lone surrogate)", param) from None
    check_text_length(len(text), max_chars, engine.max_context, param)
    return engine.tokenize(text, add_special_tokens)


def prompt_list(prompt: str | list[int] | list[list[int]] | list[str]) -> list[str | list[int]]:
    """OpenAI's four prompt forms as a list of prompts: a string, a list of strings, a list of token ids, a list of
    token-id lists (validated: a list's first item says which)."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        return [prompt]
    return list(prompt)


def completion_prompts(
    engine: Engine, prompt: str | list[int] | list[list[int]] | list[str], max_chars: int | None = None
) -> list[list[int]]:
    """Each prompt's token ids; one that is empty or cannot fit the context is refused before the next is tokenized."""
    prompts = prompt_list(prompt)
    if not prompts:
        raise bad_request("prompt must not be empty", "prompt")
    token_lists = []
    for item in prompts:
        if isinstance(item, str):
            token_ids = tokenize_text(engine, item, "prompt", add_special_tokens=True, max_chars=max_chars)
        else:
            _check_fits(len(item), engine.max_context)  # before each id is checked against the vocabulary
            token_ids = engine.tokenize(item)
        if not token_ids:
            raise RequestError("the prompt is empty", param="prompt")
        _check_fits(len(token_ids), engine.max_context)
        token_lists.append(token_ids)
    return token_lists


def _check_fits(prompt_tokens: int, max_context: int) -> None:
    """A prompt that fills the context leaves no room to generate, whatever max_tokens is."""
    if prompt_tokens >= max_context:
        raise ContextLengthError(prompt_tokens, 1, max_context)


def chat_prompt(
    engine: Engine,
    messages: list[ChatMessage],
    add_generation_prompt: bool = True,
    max_chars: int | None = None,
    tools: ToolPlan | None = None,
) -> str:
    """The conversation rendered by the artifact's own chat template, ending with the assistant's turn opened;
    messages whose text alone is longer than ``max_chars`` are refused before rendering. ``tools`` go through the
    template when it renders tools, else into a system message (see ``tools.py``)."""
    if not engine.manifest.tokenizer.has_chat_template:
        raise bad_request(f"{engine.model_name} has no chat template; use /v1/completions", "messages")
    native = tools is not None and tools.template_renders_tools
    conversation = [_message_dict(message, tools, native) for message in messages]
    extra = {}
    if tools is not None and tools.mode != "none":
        if native:
            extra["tools"] = [tool.model_dump(exclude_none=True) for tool in tools.tools]
        else:
            conversation = _with_system_text(conversation, tools_system_text(tools))
    check_text_length(sum(len(m["content"]) for m in conversation), max_chars, engine.max_context, "messages")
    try:
        return engine.tokenizer.apply_chat_template(
            conversation, add_generation_prompt=add_generation_prompt, tokenize=False, **extra
        )
    except TemplateError as error:  # templates raise to reject e.g. a conversation whose roles do not alternate
        raise bad_request(f"the chat template rejected the messages: {error}", "messages") from None


def _message_dict(message: ChatMessage, tools: ToolPlan | None, native: bool) -> dict:
    """A message as chat templates take it. Earlier tool calls are Hugging Face's ``tool_calls`` (arguments as an
    object) for a template that renders tools, else written into the content as the model would have written them."""
    if message.content is None:
        content = ""
    elif isinstance(message.content, str):
        content = message.content
    else:
        content = "\n".join(p.text for p in message.content)
    rendered: dict = {"role": message.role, "content": content}
    if message.name is not None:
        rendered["name"] = message.name
    if message.tool_call_id is not None:
        rendered["tool_call_id"] = message.tool_call_id
    for call in message.tool_calls or []:
        if native:
            arguments = json_or_text(call.function.arguments)
            function = {"name": call.function.name, "arguments": arguments}
            rendered.setdefault("tool_calls", []).append({"id": call.id, "type": "function", "function": function})
        else:
            text = render_call(tools, call.function.name, call.function.arguments)
            rendered["content"] = f"{rendered['content']}\n{text}" if rendered["content"] else text
    return rendered


def _with_system_text(conversation: list[dict], text: str) -> list[dict]:
    """``text`` at the end of the conversation's system message, or in a new one first."""
    if conversation and conversation[0]["role"] == "system":
        first = conversation[0]
        return [{**first, "content": f"{first['content']}\n\n{text}"}, *conversation[1:]]
    return [{"role": "system", "content": text}, *conversation]
