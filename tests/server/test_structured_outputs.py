"""Structured outputs and tool calling through the official openai client, on the tiny random-weight model: the
grammar alone makes its output valid."""

from __future__ import annotations

import concurrent.futures
import gc
import json
import re
import weakref
from typing import Literal

import jsonschema
import pytest
from pydantic import BaseModel

from tests.server.helpers import eventually
from tests.server.test_errors import CHAT, COMPLETIONS, HELLO, assert_openai_error

# Enums and booleans only: a random-weight model's greedy choice could repeat a digit or a letter until max_tokens,
# while these schemas have a bounded longest output, so every request here finishes by itself. Names are short: the
# tiny model's context is 256 tokens, and its tokenizer spends about a token per character of JSON.
WEATHER = {
    "type": "object",
    "properties": {"city": {"enum": ["Oslo", "Lima"]}},
    "required": ["city"],
    "additionalProperties": False,
}
ALARM = {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "alarm", "parameters": ALARM}},
]
SCHEMAS = {"weather": WEATHER, "alarm": ALARM}
ASK = [{"role": "user", "content": "Weather in Oslo?"}]


@pytest.fixture(scope="module")
def tool_server(serve_long):
    return serve_long()


@pytest.fixture(scope="module")
def tool_client(tool_server):
    return tool_server.client()


@pytest.fixture(scope="module")
def hermes_server(serve_long):
    """`auto` needs a parser: the tiny model's template shows no call format."""
    return serve_long(tool_call_parser="hermes")


class Answer(BaseModel):
    ok: bool
    color: Literal["red", "green", "blue"]
    size: Literal["S", "M", "L"]


def test_parse_returns_the_pydantic_model(client, server):
    completion = client.chat.completions.parse(
        model=server.model, messages=HELLO, response_format=Answer, max_tokens=60, temperature=0
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, Answer)
    assert Answer.model_validate_json(choice.message.content) == choice.message.parsed


def test_sampled_json_schema_outputs_are_valid(client, server):
    """Sampling at temperature 1 from many seeds explores the grammar; every output still validates."""
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
            "on": {"type": "boolean"},
        },
        "required": ["tags", "on"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "tags", "schema": schema, "strict": True}}
    chat = client.chat.completions.create(
        model=server.model, messages=HELLO, response_format=response_format, max_tokens=60, n=4, seed=7
    )
    for choice in chat.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), schema)


def test_json_object_on_completions_is_an_object(client, server):
    completion = client.completions.create(
        model=server.model,
        prompt="JSON:",
        max_tokens=60,
        n=3,
        seed=3,
        extra_body={"response_format": {"type": "json_object"}},
    )
    for choice in completion.choices:
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.text), dict)
        else:
            assert choice.finish_reason == "length" and choice.text.startswith("{")


def test_an_output_cut_by_max_tokens_finishes_with_length(client, server):
    response_format = {"type": "json_schema", "json_schema": {"name": "a", "schema": Answer.model_json_schema()}}
    chat = client.chat.completions.create(
        model=server.model, messages=HELLO, max_tokens=3, temperature=0, response_format=response_format
    )
    assert chat.choices[0].finish_reason == "length" and chat.usage.completion_tokens == 3
    assert chat.choices[0].message.content.startswith("{")


def test_regex_and_choice_through_structured_outputs(client, server):
    regex = client.completions.create(
        model=server.model,
        prompt="Code:",
        max_tokens=20,
        temperature=0,
        extra_body={"structured_outputs": {"regex": "[0-9]{3}-[a-z]{2}"}},
    )
    assert re.fullmatch("[0-9]{3}-[a-z]{2}", regex.choices[0].text)
    assert regex.choices[0].finish_reason == "stop"
    choices = ["yes", "no", 'maybe "so"']
    chat = client.chat.completions.create(
        model=server.model,
        messages=HELLO,
        max_tokens=20,
        n=3,
        seed=1,
        extra_body={"structured_outputs": {"choice": choices}},
    )
    assert all(c.message.content in choices and c.finish_reason == "stop" for c in chat.choices)
    grammar = 'root ::= "(" item ("," item)* ")"\nitem ::= "x" | "y"'
    ebnf = client.completions.create(
        model=server.model,
        prompt="List:",
        max_tokens=30,
        temperature=0,
        extra_body={"structured_outputs": {"grammar": grammar}},
    )
    if ebnf.choices[0].finish_reason == "stop":
        assert re.fullmatch(r"\((x|y)(,(x|y))*\)", ebnf.choices[0].text)
    else:
        assert re.fullmatch(r"\((x|y)(,(x|y))*,?", ebnf.choices[0].text)


@pytest.mark.parametrize(
    ("path", "body", "param", "words"),
    [
        (
            CHAT,
            {
                "messages": HELLO,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "nonsense"}},
                },
            },
            "response_format",
            "JSON schema",
        ),
        (COMPLETIONS, {"prompt": "hi", "structured_outputs": {"regex": "([a-"}}, "structured_outputs", "regex"),
        (
            COMPLETIONS,
            {"prompt": "hi", "structured_outputs": {"grammar": "root ::= undefined_rule"}},
            "structured_outputs",
            "grammar",
        ),
        (
            COMPLETIONS,
            {"prompt": "hi", "structured_outputs": {"regex": "a", "choice": ["a"]}},
            "structured_outputs",
            "exactly one",
        ),
        (COMPLETIONS, {"prompt": "hi", "structured_outputs": {"json": "{not json"}}, "structured_outputs", "not JSON"),
        (
            CHAT,
            {"messages": HELLO, "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
            "nope",
        ),
        (
            CHAT,
            {"messages": HELLO, "tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
            "tool_choice",
            "structured outputs",
        ),
        (
            CHAT,
            {
                "messages": HELLO,
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "properties": {"a": {"type": "wrong"}}},
                        },
                    }
                ],
                "tool_choice": "required",
            },
            "tools",
            "JSON schema",
        ),
        (
            CHAT,
            {"messages": HELLO, "response_format": {"type": "json_object"}, "ignore_eos": True},
            "ignore_eos",
            "ignore_eos",
        ),
    ],
)
def test_an_invalid_constraint_is_400_naming_the_problem(server, path, body, param, words):
    error = assert_openai_error(server.http().post(path, json=body), 400, param)
    assert words in error["message"]


def test_too_many_tools_are_refused_before_validation(server):
    tools = [{"type": "function", "function": {"name": f"f{i}"}} for i in range(server.settings.max_tools + 1)]
    error = assert_openai_error(server.http().post(CHAT, json={"messages": HELLO, "tools": tools}), 400, "tools")
    assert str(server.settings.max_tools) in error["message"]


def test_auto_on_a_template_without_tools_and_no_parser_is_400(server):
    body = {"messages": ASK, "tools": TOOLS, "tool_choice": "auto"}
    error = assert_openai_error(server.http().post(CHAT, json=body), 400, "tool_choice")
    assert "--tool-call-parser" in error["message"]


def test_required_tool_call_arguments_validate(tool_client, tool_server):
    chat = tool_client.chat.completions.create(
        model=tool_server.model,
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=60,
        temperature=0,
    )
    choice = chat.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def _reassembled(chunks) -> tuple[list[dict], str | None]:
    """Streamed tool-call deltas put back together as OpenAI's clients do: by index, arguments concatenated."""
    calls: dict[int, dict] = {}
    finish_reason = None
    for chunk in chunks:
        for choice in chunk.choices:
            finish_reason = choice.finish_reason or finish_reason
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
                call["id"] = delta.id or call["id"]
                call["name"] = (delta.function.name if delta.function else None) or call["name"]
                call["arguments"] += (delta.function.arguments if delta.function else None) or ""
    return [calls[i] for i in sorted(calls)], finish_reason


@pytest.mark.parametrize(
    "tool_choice", [{"type": "function", "function": {"name": "weather"}}, "required"], ids=["named", "required"]
)
def test_streamed_tool_call_deltas_reassemble_to_the_same_call(tool_client, tool_server, tool_choice):
    request = dict(
        model=tool_server.model,
        messages=ASK,
        tools=TOOLS,
        tool_choice=tool_choice,
        parallel_tool_calls=False,
        max_tokens=60,
        temperature=0,
    )
    whole = tool_client.chat.completions.create(**request).choices[0]
    chunks = list(tool_client.chat.completions.create(**request, stream=True))
    calls, finish_reason = _reassembled(chunks)
    assert finish_reason == whole.finish_reason == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        (c.function.name, json.loads(c.function.arguments)) for c in whole.message.tool_calls
    ]
    assert all(c["id"].startswith("call_") for c in calls)
    jsonschema.validate(json.loads(calls[0]["arguments"]), SCHEMAS[calls[0]["name"]])


def test_a_tool_result_continues_the_conversation(tool_client, tool_server):
    first = tool_client.chat.completions.create(
        model=tool_server.model,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "weather"}},
        max_tokens=60,
        temperature=0,
    )
    call = first.choices[0].message.tool_calls[0]
    messages = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 3}'},
    ]
    second = tool_client.chat.completions.create(
        model=tool_server.model, messages=messages, tools=TOOLS, tool_choice="none", max_tokens=8, temperature=0
    )
    assert second.choices[0].finish_reason in ("stop", "length")
    assert second.choices[0].message.tool_calls is None


def test_the_tool_call_and_result_reach_the_prompt(server):
    http = server.http()
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
    messages = [
        *ASK,
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "RESULT-42"},
    ]
    tokens = http.post("/tokenize", json={"messages": messages, "return_token_strs": True}).json()
    assert tokens["count"] > 0
    text = "".join(server.engine.tokenizer.convert_tokens_to_string(tokens["token_strs"]))
    assert "RESULT-42" in text and '"Oslo"' in text


def test_constrained_and_unconstrained_requests_share_a_batch(client, server):
    """Unconstrained greedy outputs are the same bits alone or beside constrained rows; constrained ones validate."""
    plain = dict(
        model=server.model, prompt="The quick brown fox", max_tokens=24, temperature=0, extra_body={"ignore_eos": True}
    )
    alone = client.completions.create(**plain).choices[0].text
    constrained = dict(
        model=server.model,
        prompt="Answer:",
        max_tokens=60,
        temperature=0,
        extra_body={
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": Answer.model_json_schema()},
            }
        },
    )
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client.completions.create, **(plain if i % 2 else constrained)) for i in range(4)]
        results = [f.result().choices[0] for f in futures]
    for i, result in enumerate(results):
        if i % 2:
            assert result.text == alone
        else:
            Answer.model_validate_json(result.text)


def test_aborting_a_constrained_stream_frees_its_grammar_state(server):
    engine = server.engine
    body = {"prompt": "Letters:", "max_tokens": 200, "stream": True, "structured_outputs": {"regex": "[ab]{150,}"}}
    with server.http() as http, http.stream("POST", COMPLETIONS, json=body) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data:"))
        states = [weakref.ref(r.sampling.grammar) for r in list(engine.core.requests.values()) if r.sampling.grammar]
        assert len(states) == 1
    assert eventually(lambda: not engine.core.requests)
    gc.collect()
    assert states[0]() is None


def test_hermes_auto_parses_calls_and_keeps_text(hermes_server):
    """--tool-call-parser hermes on a template that does not render tools: the tools are described in a system
    message and the model's text is parsed (a random model writes no call, so its text comes back as content)."""
    parsing = hermes_server
    body = {"messages": ASK, "tools": TOOLS, "max_tokens": 8, "temperature": 0}
    response = parsing.http().post(CHAT, json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] in ("stop", "length") and "tool_calls" not in choice["message"]
    tokens = parsing.http().post("/tokenize", json={"messages": ASK}).json()["count"]
    assert response.json()["usage"]["prompt_tokens"] > tokens  # the tools' description is in the prompt


def test_auto_streams_a_call_as_the_model_writes_it(hermes_server):
    """A regex makes the random model write some text and a Hermes call, so that `auto` has a call to read: the
    stream sends the text as content, then the call's name, then its arguments in several fragments, which put
    together are the non-streaming response's call."""
    parsing = hermes_server
    call = r'<tool_call>\{"name": "weather", "arguments": \{"city": "(Oslo|Lima)"\}\}</tool_call>'
    request = dict(
        model=parsing.model,
        messages=ASK,
        tools=TOOLS,
        tool_choice="auto",
        max_tokens=120,
        temperature=0,
        extra_body={"structured_outputs": {"regex": r"Sure\. " + call}},
    )
    client = parsing.client()
    whole = client.chat.completions.create(**request).choices[0]
    assert whole.finish_reason == "tool_calls" and whole.message.content == "Sure."
    (expected,) = whole.message.tool_calls
    assert expected.function.name == "weather"
    jsonschema.validate(json.loads(expected.function.arguments), WEATHER)

    chunks = list(client.chat.completions.create(**request, stream=True))
    calls, finish_reason = _reassembled(chunks)
    assert finish_reason == "tool_calls"
    assert [(c["name"], c["arguments"]) for c in calls] == [(expected.function.name, expected.function.arguments)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Sure. "
    pieces = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert pieces[0].id.startswith("call_") and pieces[0].function.name == "weather"
    assert all(p.id is None and p.function.name is None for p in pieces[1:])
    assert len([p for p in pieces if p.function.arguments]) > 1
