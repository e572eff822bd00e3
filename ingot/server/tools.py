"""Tool calling on /v1/chat/completions: how tools reach the model, what constrains its answer, and how the answer
becomes ``tool_calls``.

``required`` and a named choice are enforced by the grammar (see ``structured.py``), as vLLM does: a named call's
output is its arguments object; a required call's is a JSON array of ``{"name", "parameters"}``. ``auto`` lets the
model choose and reads its text with the parser of its template's family (``tool_parsers.py``). A chat template that
renders tools gets them through ``apply_chat_template(tools=...)``; any other template gets them described in a system
message (``tools_system_text``; the wording is in docs/structured-outputs.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Literal

from ingot.runtime.engine import Engine
from ingot.runtime.grammar import GrammarSpec
from ingot.server.errors import bad_request
from ingot.server.protocol import ChatCompletionRequest, FunctionCallOut, Tool, ToolCallOut
from ingot.server.tool_parsers import (
    PARSERS,
    CallParser,
    HermesParser,
    Llama3JsonParser,
    ParsedOutput,
    RequiredCallsParser,
    new_call_id,
)

ToolMode = Literal["none", "auto", "required", "named"]


@dataclass(frozen=True)
class ToolPlan:
    """What a chat request's tools mean for its prompt, its grammar and its output."""

    mode: ToolMode
    tools: list[Tool]
    named: str | None = None  # the function of a named choice
    parser: type[HermesParser | Llama3JsonParser] | None = None  # auto's
    template_renders_tools: bool = False
    parallel: bool = True  # parallel_tool_calls: False lets "required" make exactly one call

    def grammar(self) -> GrammarSpec | None:
        if self.mode == "named":
            (tool,) = [t for t in self.tools if t.function.name == self.named]
            return GrammarSpec("json_schema", _schema_text(_parameters(tool)), "tool_choice")
        if self.mode == "required":
            calls = [
                {
                    "type": "object",
                    "properties": {"name": {"const": t.function.name}, "parameters": _parameters(t)},
                    "required": ["name", "parameters"],
                    "additionalProperties": False,
                }
                for t in self.tools
            ]
            schema = {"type": "array", "minItems": 1, "items": {"anyOf": calls}}
            if not self.parallel:
                schema["maxItems"] = 1
            return GrammarSpec("json_schema", _schema_text(schema), "tools")
        return None

    @property
    def call_parser(self) -> type[CallParser] | None:
        """What reads calls out of the output: auto's parser, or the array that required's grammar writes."""
        return RequiredCallsParser if self.mode == "required" else self.parser

    def parse(self, text: str, finish_reason: str | None) -> tuple[ParsedOutput, str | None]:
        """The output as content and calls, and its finish reason ("tool_calls" when it ended with calls). A named
        call is its whole output (cut short by max_tokens: its arguments incomplete, finish reason "length");
        other output cut short stays text."""
        if self.mode == "none":
            return ParsedOutput(text), finish_reason
        if self.mode == "named":
            call = ToolCallOut(id=new_call_id(), function=FunctionCallOut(name=self.named, arguments=text))
            return ParsedOutput(None, [call]), "tool_calls" if finish_reason == "stop" else finish_reason
        if finish_reason != "stop":
            return ParsedOutput(text), finish_reason
        parsed = self.call_parser.parse(text)
        return parsed, "tool_calls" if parsed.calls else finish_reason


def _parameters(tool: Tool) -> dict:
    return tool.function.parameters if tool.function.parameters is not None else {"type": "object", "properties": {}}


def _schema_text(schema: dict) -> str:
    return json.dumps(schema, sort_keys=True)


def plan_tools(engine: Engine, body: ChatCompletionRequest, parser_name: str | None) -> ToolPlan:
    """The request's tool mode, checked; 400 for a choice that names no tool or an ``auto`` nothing can parse."""
    tools = body.tools or []
    choice = body.tool_choice if body.tool_choice is not None else ("auto" if tools else "none")
    if choice == "none":
        return ToolPlan("none", [])
    if not tools:
        raise bad_request("tool_choice needs tools", "tool_choice")
    renders = template_renders_tools(engine)
    parallel = body.parallel_tool_calls is not False
    if not isinstance(choice, str):
        names = [t.function.name for t in tools]
        if choice.function.name not in names:
            raise bad_request(
                f"tool_choice names {choice.function.name!r}, which is not among the tools", "tool_choice"
            )
        return ToolPlan("named", tools, named=choice.function.name, template_renders_tools=renders, parallel=parallel)
    if choice == "required":
        return ToolPlan("required", tools, template_renders_tools=renders, parallel=parallel)
    parser = _parser(engine, parser_name)
    if parser is None:
        message = (
            f'tool_choice "auto" needs a tool-call parser: the chat template of {engine.model_name} does not say how '
            "it writes tool calls; start the server with --tool-call-parser (hermes or llama3_json), or use "
            'tool_choice "required" or a named function'
        )
        raise bad_request(message, "tool_choice" if body.tool_choice is not None else "tools")
    return ToolPlan("auto", tools, parser=parser, template_renders_tools=renders, parallel=parallel)


def _parser(engine: Engine, parser_name: str | None) -> type[HermesParser | Llama3JsonParser] | None:
    """``--tool-call-parser`` when given, else the family the chat template writes calls in."""
    if parser_name is not None:
        return PARSERS[parser_name]
    template = _template_text(engine)
    if HermesParser.marker in template:
        return HermesParser
    if Llama3JsonParser.python_tag in template or "ipython" in template:
        return Llama3JsonParser
    return None


def _template_text(engine: Engine) -> str:
    template = engine.tokenizer.chat_template
    if isinstance(template, dict):
        return "\n".join(template.values())
    return template or ""


@cache
def template_renders_tools(engine: Engine) -> bool:
    """Whether the chat template writes the tools it is given into the prompt (tried once per engine)."""
    if not engine.manifest.tokenizer.has_chat_template:
        return False
    probe = [{"type": "function", "function": {"name": "ingot_probe_tool", "parameters": {"type": "object"}}}]
    conversation = [{"role": "user", "content": "hi"}]
    try:
        rendered = engine.tokenizer.apply_chat_template(conversation, tools=probe, tokenize=False)
    except Exception:  # a template that cannot take tools does not render them  # noqa: BLE001
        return False
    return "ingot_probe_tool" in rendered


def tools_system_text(plan: ToolPlan) -> str:
    """The tools described to a model whose template does not render them."""
    lines = ["Functions you can call, with JSON schemas of their arguments:"]
    for tool in plan.tools:
        function = tool.function
        described = {"name": function.name, "description": function.description, "parameters": function.parameters}
        lines.append(json.dumps({k: v for k, v in described.items() if v is not None}, separators=(",", ":")))
    if plan.mode == "named":
        lines.append(f"Call the function {plan.named}: answer with its arguments as a JSON object.")
    elif plan.mode == "required":
        lines.append('Call one or more of them: answer with a JSON array of {"name": NAME, "parameters": {ARGUMENTS}}.')
    else:
        lines.append(plan.parser.instruction)
    return "\n".join(lines)


def render_call(plan: ToolPlan | None, name: str, arguments: str) -> str:
    """An earlier assistant call written back as text, for a template that does not render tool calls."""
    parsed = json_or_text(arguments)
    if plan is not None and plan.parser is not None:
        return plan.parser.render_call(name, parsed)
    return json.dumps({"name": name, "arguments": parsed})


def json_or_text(arguments: str) -> object:
    """Arguments as the object they spell, or as they are when they are not JSON."""
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments
