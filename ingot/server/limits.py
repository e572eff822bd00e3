"""Per-request limits, checked on the raw JSON before validation: what a request could never be served with is
refused before it costs per-item work (validation, tokenization, per-token stop matching and bias)."""

from __future__ import annotations

from ingot.server.errors import bad_request
from ingot.server.settings import ServerSettings


def check_sizes(data: dict, settings: ServerSettings, max_context: int) -> None:
    """``max_context``: the longest context any served model has (every message takes at least one token)."""
    prompt = data.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)) and len(prompt) > settings.max_queue:
        message = f"prompt has {len(prompt)} prompts; this server queues at most {settings.max_queue} requests"
        raise bad_request(message, "prompt")
    stop = data.get("stop")
    if isinstance(stop, list) and len(stop) > settings.max_stop_sequences:
        message = f"stop has {len(stop)} sequences; at most {settings.max_stop_sequences} are allowed"
        raise bad_request(message, "stop")
    bias = data.get("logit_bias")
    if isinstance(bias, dict) and len(bias) > settings.max_logit_bias:
        message = f"logit_bias has {len(bias)} entries; at most {settings.max_logit_bias} are allowed"
        raise bad_request(message, "logit_bias")
    tools = data.get("tools")
    if isinstance(tools, list) and len(tools) > settings.max_tools:
        message = f"tools has {len(tools)} tools; at most {settings.max_tools} are allowed"
        raise bad_request(message, "tools")
    messages = data.get("messages")
    if isinstance(messages, list) and len(messages) > max_context:
        message = f"{len(messages)} messages cannot fit a context of {max_context} tokens"
        raise bad_request(message, "messages", code="context_length_exceeded")
