"""Tool-call parsers and the streamed deltas of a choice with tools, without a model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from ingot.errors import OptionError
from ingot.server.errors import APIError
from ingot.server.prompts import chat_prompt
from ingot.server.protocol import ChatCompletionRequest, ChatDelta, FunctionDefinition, Tool
from ingot.server.settings import DEFAULT_MAX_TOOLS, TOOL_CALL_PARSERS, ServerSettings
from ingot.server.tool_parsers import PARSERS, CallParser, HermesParser, Llama3JsonParser, RequiredCallsParser
from ingot.server.tool_stream import ToolCallStream
from ingot.server.tools import ToolPlan, plan_tools
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


def _reassembled(deltas) -> tuple[str, list[dict]]:
    """Content and calls put back together as OpenAI's clients do: calls by index, arguments concatenated."""
    calls: dict[int, dict] = {}
    for delta in deltas:
        for piece in delta.tool_calls or []:
            call = calls.setdefault(piece.index, {"id": None, "name": None, "arguments": "", "fragments": 0})
            if piece.id is not None:
                assert call["id"] is None and piece.type == "function" and piece.function.name  # the first delta
                call.update(id=piece.id, name=piece.function.name)
            assert call["id"] is not None  # nothing of a call comes before its first delta
            call["arguments"] += piece.function.arguments
            call["fragments"] += piece.function.arguments != ""
    return "".join(d.content or "" for d in deltas), [calls[i] for i in sorted(calls)]


def test_auto_streams_text_then_the_call_as_it_is_written():
    plan = ToolPlan("auto", TOOLS, parser=HermesParser)
    pieces = ["Sure", ", <tool", "_call>", '{"name": "get_weather", ', '"arguments": {"city": ', '"Oslo"}}']
    pieces.append("</tool_call>")
    deltas, reason = _stream(plan, pieces)
    assert reason == "tool_calls"
    content, (call,) = _reassembled(deltas)
    assert content == "Sure, "
    assert call["id"].startswith("call_") and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Oslo"}
    assert deltas[2].tool_calls[0].function.name == "get_weather"  # announced as soon as its name was complete
    assert call["fragments"] == 2


# The outputs of the three call formats, each with two calls whose arguments nest, hold strings with the formats'
# separators and brackets, and are spelt with and without spaces (the parsers send the arguments as written).
WRITTEN_CALLS = {
    HermesParser: 'I will look both up.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", '
    '"days": [1, 2], "note": "a } and a \\" in ; text"}}\n</tool_call>\n<tool_call>{"arguments":{"city":"Lima"},'
    '"name":"get_weather"}</tool_call>',
    Llama3JsonParser: '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo", "where": {"lat": 59.9}}}; '
    '{"name": "alarm", "parameters": {"on": true, "note": "]; {"}}',
    RequiredCallsParser: '[{"name": "get_weather", "parameters": {"city": "Oslo", "days": [1, 2]}}, '
    '{"name": "alarm", "parameters": {"on": false, "at": "07:30"}}]',
}


@pytest.mark.parametrize("parser", list(WRITTEN_CALLS), ids=lambda parser: parser.__name__)
def test_calls_streamed_token_by_token_reassemble_to_the_parsed_calls(parser: type[CallParser]):
    """The tiny tokenizer spends about a token per character of JSON: each call's name is announced once and its
    arguments arrive in many fragments (once the name is known), which put together are the non-streaming
    response's calls."""
    text = WRITTEN_CALLS[parser]
    tokenizer = make_tokenizer()
    pieces = [tokenizer.decode([token]) for token in tokenizer.encode(text)]
    assert "".join(pieces) == text
    reading = parser()
    deltas = [d for d in [*(reading.feed(piece) for piece in pieces), reading.finish()] if d is not None]
    content, calls = _reassembled(deltas)
    whole = parser.parse(text)
    assert len(whole.calls) == 2 and not reading.malformed
    parsed = [(c.function.name, c.function.arguments) for c in whole.calls]
    assert [(c["name"], c["arguments"]) for c in calls] == parsed
    first, second = (c["fragments"] for c in calls)
    # Hermes' second call writes its arguments before its name: they wait for the name, then go out at once
    assert first > 5 and (second == 1 if parser is HermesParser else second > 5)
    assert (content.strip() or None) == whole.content
    assert json.loads(whole.calls[0].function.arguments)["city"] == "Oslo"


def test_a_call_is_announced_when_its_name_is_complete_and_held_back_text_is_released():
    reading = HermesParser()
    sent = [reading.feed(char) for char in 'ok <tool_call>{"name": "get_weather"']
    assert "".join(d.content for d in sent if d is not None and d.content) == "ok "
    (header,) = sent[-1].tool_calls  # the closing quote of the name
    assert (header.index, header.type, header.function.name) == (0, "function", "get_weather")
    assert header.id.startswith("call_") and header.function.arguments == ""
    assert all(d is None for d in sent[-len('"get_weather"') : -1])
    ends = HermesParser()
    assert ends.feed("a <tool_ca") == ChatDelta(content="a ") and ends.finish() == ChatDelta(content="<tool_ca")


def test_output_that_is_no_call_streams_as_content():
    for parser, text in [
        (HermesParser, "see <tool_call>[1]</tool_call> there"),
        (Llama3JsonParser, '{"answer": 42}'),
        (Llama3JsonParser, "The answer is 42."),
        (RequiredCallsParser, "[]"),
    ]:
        reading = parser()
        deltas = [d for d in [*(reading.feed(char) for char in text), reading.finish()] if d is not None]
        assert _reassembled(deltas) == (text, []) and not reading.calls
        assert parser.parse(text).content == text


def test_auto_text_that_only_looked_like_a_call_comes_out_whole():
    plan = ToolPlan("auto", TOOLS, parser=HermesParser)
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
    assert plan.mode == "auto" and plan.template_renders_tools and plan.parser is HermesParser
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
    assert plan_tools(engine, _request(), "llama3_json").parser is Llama3JsonParser


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
