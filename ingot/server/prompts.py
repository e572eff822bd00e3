"""Request prompts to token ids: completion prompts as given, chat messages through the artifact's chat template."""

from __future__ import annotations

from jinja2 import TemplateError

from ingot.errors import RequestError
from ingot.runtime.engine import Engine
from ingot.server.errors import bad_request
from ingot.server.protocol import ChatMessage


def tokenize_text(engine: Engine, text: str, param: str, add_special_tokens: bool = False) -> list[int]:
    """The engine's tokenization, refusing text the tokenizer cannot take (a lone UTF-16 surrogate from JSON).

    Completion prompts get the tokenizer's special tokens (vLLM does the same); chat templates write their own.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(f"{param} is not valid Unicode text (it contains a lone surrogate)", param) from None
    return engine.tokenize(text, add_special_tokens)


def completion_prompts(engine: Engine, prompt: str | list[int] | list[list[int]] | list[str]) -> list[list[int]]:
    """OpenAI's four prompt forms: a string, a list of strings, a list of token ids, a list of token-id lists."""
    if isinstance(prompt, str):
        prompts: list[str | list[int]] = [prompt]
    elif prompt and all(isinstance(token, int) for token in prompt):
        prompts = [prompt]
    else:
        prompts = list(prompt)
    if not prompts:
        raise bad_request("prompt must not be empty", "prompt")
    token_lists = []
    for item in prompts:
        token_ids = tokenize_text(engine, item, "prompt", add_special_tokens=True) if isinstance(item, str) else engine.tokenize(item)
        if not token_ids:
            raise RequestError("the prompt is empty", param="prompt")
        token_lists.append(token_ids)
    return token_lists


def chat_prompt(engine: Engine, messages: list[ChatMessage], add_generation_prompt: bool = True) -> str:
    """The conversation rendered by the artifact's own chat template, ending with the assistant's turn opened."""
    if not engine.manifest.tokenizer.has_chat_template:
        raise bad_request(f"{engine.model_name} has no chat template; use /v1/completions", "messages")
    conversation = [_message_dict(message) for message in messages]
    try:
        return engine.tokenizer.apply_chat_template(
            conversation, add_generation_prompt=add_generation_prompt, tokenize=False
        )
    except TemplateError as error:  # templates raise to reject e.g. a conversation whose roles do not alternate
        raise bad_request(f"the chat template rejected the messages: {error}", "messages") from None


def _message_dict(message: ChatMessage) -> dict[str, str]:
    content = message.content if isinstance(message.content, str) else "\n".join(p.text for p in message.content)
    rendered = {"role": message.role, "content": content}
    if message.name is not None:
        rendered["name"] = message.name
    return rendered
