"""Tool-call parsers and the streamed deltas of a choice with tools, without a model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from ingot.errors import OptionError
from ingot.server.errors import APIError
from ingot.server.prompts import chat_prompt
from ingot.server.protocol import ChatCompletionRequest, FunctionDefinition, Tool
from ingot.server.settings import DEFAULT_MAX_TOOLS, TOOL_CALL_PARSERS, ServerSettings
from ingot.server.tool_stream import ToolCallStream
from ingot.server.tools import PARSERS, HermesParser, Llama3JsonParser, ToolPlan, plan_tools
from tests.tiny_models import CHAT_TEMPLATE, make_tokenizer

TOOLS = [Tool(type="function", function=FunctionDefinition(name="get_weather", parameters={"type": "object"}))]


def test_hermes_parser_reads_calls_after_text():
    text = 'Let me check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>\n<tool_call>{"name": "get_weather", "arguments": {"city": "Lima"}}</tool_call>'
    parsed = HermesParser().parse(text)
    assert parsed.content == "Let me check."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in parsed.calls] == [
        ("get_weather", {"city": "Oslo"}),
        ("get_weather", {"city": "Lima"}),
    ]
    assert len({c.id for c in parsed.calls}) == 2


def test_a_malformed_call_stays_text():
    for text in ('<tool_call>{"name": "f", "arguments": {"a": </tool_call>', "<tool_call>[1]</tool_call>", "plain"):
        assert HermesParser().parse(text).calls == [] and HermesParser().parse(text).content == text
    assert Llama3JsonParser().parse("{not json").calls == []


def test_llama3_json_parser_reads_parameters():
    parsed = Llama3JsonParser().parse('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}')
    assert parsed.content is None
    assert (parsed.calls[0].function.name, json.loads(parsed.calls[0].function.arguments)) == (
        "get_weather",
        {"city": "Oslo"},
    )


def _stream(plan: ToolPlan, pieces: list[str], finish_reason: str = "stop"):
    stream = ToolCallStream(plan)
    deltas = [stream.feed(piece) for piece in pieces]
    last, reason = stream.finish(finish_reason)
    return [d for d in [*deltas, last] if d is not None], reason


def test_auto_streams_text_then_holds_back_a_call():
    plan = ToolPlan("auto", TOOLS, parser=HermesParser())
    pieces = ["Sure", ", <tool", "_call>", '{"name": "get_weather", ', '"arguments": {"city": "Oslo"}}', "</tool_call>"]
    deltas, reason = _stream(plan, pieces)
    assert reason == "tool_calls"
    assert "".join(d.content or "" for d in deltas) == "Sure, "
    (call,) = [c for d in deltas for c in d.tool_calls or []]
    assert call.index == 0 and call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}


def test_auto_text_that_only_looked_like_a_call_comes_out_whole():
    plan = ToolPlan("auto", TOOLS, parser=HermesParser())
    deltas, reason = _stream(plan, ["a <tool", "box> b"])
    assert reason == "stop" and "".join(d.content for d in deltas) == "a <toolbox> b"


def test_named_streams_arguments_as_they_come():
    plan = ToolPlan("named", TOOLS, named="get_weather")
    deltas, reason = _stream(plan, ['{"city"', ': "Oslo"}'])
    calls = [c for d in deltas for c in d.tool_calls]
    assert reason == "tool_calls"
    assert calls[0].id and calls[0].function.name == "get_weather" and calls[1].id is None
    assert "".join(c.function.arguments for c in calls) == '{"city": "Oslo"}'


HERMES_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n<tools>{% for tool in tools %}{{ tool | tojson }}{% endfor %}</tools>"
    "Answer with <tool_call></tool_call>.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "{% for call in message.get('tool_calls', []) %}<tool_call>{{ call.function | tojson }}</tool_call>{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class FakeEngine(SimpleNamespace):
    __hash__ = object.__hash__  # as an Engine's: tools.py remembers per engine whether its template renders tools


def _engine(template: str) -> FakeEngine:
    """What prompts and tools read of an engine: the tokenizer, its manifest's flag, the context."""
    tokenizer = make_tokenizer()
    tokenizer.chat_template = template
    manifest = SimpleNamespace(tokenizer=SimpleNamespace(has_chat_template=True))
    return FakeEngine(tokenizer=tokenizer, manifest=manifest, max_context=4096, model_name="tiny")


def _request(**fields) -> ChatCompletionRequest:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    return ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "hi"}], "tools": tools, **fields}
    )


def test_a_template_that_renders_tools_gets_them_and_its_parser_is_hermes():
    engine = _engine(HERMES_TEMPLATE)
    body = _request(
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ]
    )
    plan = plan_tools(engine, body, None)
    assert plan.mode == "auto" and plan.template_renders_tools and isinstance(plan.parser, HermesParser)
    prompt = chat_prompt(engine, body.messages, tools=plan)
    assert '<tools>{"type": "function", "function": {"name": "get_weather"' in prompt
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>' in prompt  # an object
    assert "Functions you can call" not in prompt and "sunny" in prompt


def test_a_template_without_tools_gets_them_in_the_system_message():
    engine = _engine(CHAT_TEMPLATE)
    body = _request(
        tool_choice="required", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    )
    plan = plan_tools(engine, body, None)
    assert not plan.template_renders_tools
    prompt = chat_prompt(engine, body.messages, tools=plan)
    assert prompt.count("<|im_start|>system") == 1
    assert 'Be brief.\n\nFunctions you can call, with JSON schemas of their arguments:\n{"name":"get_weather"' in prompt
    assert "answer with a JSON array" in prompt
    with pytest.raises(APIError, match="--tool-call-parser"):
        plan_tools(engine, _request(), None)
    assert isinstance(plan_tools(engine, _request(), "llama3_json").parser, Llama3JsonParser)


def test_the_tool_flags_reach_the_server_settings(monkeypatch):
    monkeypatch.delenv("INGOT_API_KEY", raising=False)
    from ingot.cli import build_parser
    from ingot.cli.serve import server_settings

    defaults = server_settings(build_parser().parse_args(["serve"]))
    assert (defaults.tool_call_parser, defaults.max_tools) == (None, DEFAULT_MAX_TOOLS)
    given = server_settings(build_parser().parse_args(["serve", "--tool-call-parser", "hermes", "--max-tools", "3"]))
    assert (given.tool_call_parser, given.max_tools) == ("hermes", 3)
    assert set(TOOL_CALL_PARSERS) == set(PARSERS)
    with pytest.raises(OptionError, match="--tool-call-parser"):
        ServerSettings(tool_call_parser="mistral")
    with pytest.raises(OptionError, match="--max-tools"):
        ServerSettings(max_tools=0)
