"""Tool-call parsers: a model's text read as content and tool calls while it is generated.

A parser is fed a choice's text piece by piece and answers with OpenAI's streamed deltas: content while the model
writes text (holding back what may be the start of a call's marker), then for each call a first delta with its index,
id, type and name, sent as soon as the name's string is complete, and its arguments' text in fragments as the model
writes them (exactly as written). A call is a JSON object whose top-level members are read character by character
(``_MemberScanner``), so a parser knows where the name and the arguments start and end without waiting for the end.

The non-streaming response is the same deltas put together (``CallParser.parse``), except that output with a
malformed call (one that is not JSON, or that the output ended inside) is all content there, as it was written; a
stream cannot take back what it has sent, so it keeps the calls it announced (as vLLM's parsers do).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ingot.server.protocol import ChatDelta, FunctionCallDelta, FunctionCallOut, ToolCallDelta, ToolCallOut


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ParsedOutput:
    content: str | None
    calls: list[ToolCallOut] = field(default_factory=list)


class _MemberScanner:
    """One JSON object's top-level members, read a character at a time: each key, and the raw text of its value as
    it grows. It checks only the structure that tells members apart; ``json.loads`` checks the finished object."""

    def __init__(self) -> None:
        self.raw = ""  # the object's text from its "{"
        self.values: dict[str, str] = {}  # key -> its value's text so far, in the order the keys came
        self.finished: set[str] = set()  # keys whose value is complete
        self._state = "open"
        self._key = ""  # the text of the key being read
        self._current = ""  # the key whose value is being read
        self._depth = 0  # brackets open in the current value
        self._in_string = False
        self._escaped = False

    @property
    def done(self) -> bool:
        return self._state == "done"

    @property
    def failed(self) -> bool:
        return self._state == "failed"

    def feed(self, text: str) -> int:
        """Read ``text`` up to the object's end (or to what shows it is none); how many characters were read."""
        for used, char in enumerate(text):
            if self.done or self.failed:
                return used
            self._step(char)
        return len(text)

    def string(self, key: str) -> str | None:
        """The value of ``key`` once it is a complete JSON string, else None."""
        if key not in self.finished:
            return None
        try:
            value = json.loads(self.values[key])
        except ValueError:
            return None
        return value if isinstance(value, str) else None

    def _step(self, char: str) -> None:
        if self._state == "value":
            if self._extends_value(char):
                self.raw += char
                self.values[self._current] += char
                return
            self._end_value()  # a number, true, false or null ends at the character after it
        if self._state == "key":
            self.raw += char
            self._read_key(char)
            return
        if char.isspace():
            self.raw += char if self._state != "open" else ""
            return
        self.raw += char
        state = self._state
        if state == "open" and char == "{":
            self._state = "key_or_end"
        elif state == "key_or_end" and char == '"':
            self._state, self._key = "key", ""
        elif state in ("key_or_end", "after_value") and char == "}":
            self._state = "done"
        elif state == "colon" and char == ":":
            self._state = "value_start"
        elif state == "value_start":
            self._start_value(char)
        elif state == "after_value" and char == ",":
            self._state = "key_or_end"
        else:
            self._state = "failed"

    def _read_key(self, char: str) -> None:
        if char != '"' or self._escaped:
            self._escaped = char == "\\" and not self._escaped
            self._key += char
            return
        try:
            self._current = json.loads(f'"{self._key}"')
        except ValueError:
            self._state = "failed"
            return
        self._state = "colon"

    def _start_value(self, char: str) -> None:
        self.values[self._current] = char
        self.finished.discard(self._current)
        self._state = "value"
        self._depth = 1 if char in "{[" else 0
        self._in_string, self._escaped = char == '"', False

    def _extends_value(self, char: str) -> bool:
        """Whether ``char`` belongs to the value being read (ending the value when it closes it)."""
        if self._in_string:
            if self._escaped:
                self._escaped = False
            elif char == "\\":
                self._escaped = True
            elif char == '"':
                self._in_string = False
                if self._depth == 0:
                    self._end_value()
            return True
        if self._depth == 0:  # a number, true, false or null
            return char not in ",}" and not char.isspace()
        if char == '"':
            self._in_string = True
        elif char in "{[":
            self._depth += 1
        elif char in "}]":
            self._depth -= 1
            if self._depth == 0:
                self._end_value()
        return True

    def _end_value(self) -> None:
        self._state = "after_value"
        self.finished.add(self._current)


@dataclass
class _Call:
    index: int
    scanner: _MemberScanner = field(default_factory=_MemberScanner)
    id: str = field(default_factory=new_call_id)
    name: str | None = None  # set when the call is announced
    arguments: str = ""  # the arguments' text sent so far


Mode = Literal["text", "call", "between", "content", "drop"]


class CallParser:
    """Reads one choice's calls as its text arrives. Subclasses say where calls start (``_read_text``: the text
    before the first call; ``_read_between``: what follows a call) and which member holds the arguments."""

    arguments_keys: ClassVar[tuple[str, ...]] = ("arguments",)

    def __init__(self) -> None:
        self.calls: list[_Call] = []  # announced, and the one being read
        self.malformed = False  # a call JSON cannot read, or text where only calls may be
        self._mode: Mode = "text"
        self._pending = ""  # text not read yet
        self._attempt = ""  # the current call's text so far, its marker included: content after all if no call
        self._content: list[str] = []  # what the next delta carries
        self._call_deltas: dict[int, ToolCallDelta] = {}

    @classmethod
    def parse(cls, text: str) -> ParsedOutput:
        """A whole output's content and calls: the stream's deltas put together, or all content if a call is
        malformed."""
        parser = cls()
        deltas = [parser.feed(text), parser.finish()]
        if parser.malformed or not parser.calls:
            return ParsedOutput(text)
        content = "".join(delta.content or "" for delta in deltas if delta is not None).strip()
        calls = [
            ToolCallOut(id=call.id, function=FunctionCallOut(name=call.name, arguments=call.arguments))
            for call in parser.calls
        ]
        return ParsedOutput(content or None, calls)

    def feed(self, text: str) -> ChatDelta | None:
        """The delta for the next piece of output, or None while it is held back."""
        self._pending += text
        while self._pending:
            before = (self._mode, len(self._pending))
            self._read()
            if (self._mode, len(self._pending)) == before:
                break  # waiting for more text
        return self._delta()

    def finish(self) -> ChatDelta | None:
        """The last delta: what was held back, and the end of the call being read."""
        if self._mode == "call":
            if self.calls[-1].name is None:
                self._abandon()
            else:
                self.malformed = True  # the output ended inside a call
        elif self._mode == "between" and not self._complete():
            self.malformed = True
        if self._mode in ("text", "content"):
            self._send_content(self._pending)
        self._pending = ""
        return self._delta()

    def _read(self) -> None:
        if self._mode == "text":
            self._read_text()
        elif self._mode == "call":
            self._read_call()
        elif self._mode == "between":
            self._read_between()
        elif self._mode == "content":
            self._send_content(self._pending)
            self._pending = ""
        else:
            self._pending = ""

    def _read_text(self) -> None:
        raise NotImplementedError

    def _read_between(self) -> None:
        raise NotImplementedError

    def _complete(self) -> bool:
        """Whether output may end after a call (the array of ``required`` must be closed)."""
        return True

    def _start_call(self, opening: str, rest: str) -> None:
        """A call begins after ``opening`` (its marker, or a separator); ``rest`` is the text after it."""
        self.calls.append(_Call(len(self.calls)))
        self._attempt, self._pending, self._mode = opening, rest, "call"

    def _read_call(self) -> None:
        call = self.calls[-1]
        used = call.scanner.feed(self._pending)
        self._attempt += self._pending[:used]
        self._pending = self._pending[used:]
        self._send_call(call)
        if call.scanner.failed:
            if call.name is None:
                self._abandon()
            else:
                self.malformed, self._mode = True, "drop"
        elif call.scanner.done:
            self._end_call(call)

    def _send_call(self, call: _Call) -> None:
        """The call's id, type and name once its name is complete, then any arguments text not sent yet."""
        if call.name is None:
            call.name = call.scanner.string("name")
            if call.name is None:
                return
            self._call_delta(call, first=True)
        arguments = self._arguments(call.scanner)
        if arguments is not None and len(arguments) > len(call.arguments):
            self._send_arguments(call, arguments[len(call.arguments) :])

    def _arguments(self, scanner: _MemberScanner) -> str | None:
        """The arguments' text so far: an object as written (growing), a string once complete (its value)."""
        key = self._arguments_key(scanner)
        if key is None:
            return None
        text = scanner.values[key]
        return text if text.startswith("{") else scanner.string(key)

    def _arguments_key(self, scanner: _MemberScanner) -> str | None:
        return next((key for key in scanner.values if key in self.arguments_keys), None)

    def _send_arguments(self, call: _Call, fragment: str) -> None:
        call.arguments += fragment
        self._call_delta(call).function.arguments += fragment

    def _call_delta(self, call: _Call, first: bool = False) -> ToolCallDelta:
        """The delta this feed sends for ``call``; a call's first carries its id, type and name."""
        delta = self._call_deltas.get(call.index)
        if delta is None:
            if first:
                function = FunctionCallDelta(name=call.name, arguments="")
                delta = ToolCallDelta(index=call.index, id=call.id, type="function", function=function)
            else:
                delta = ToolCallDelta(index=call.index, function=FunctionCallDelta(arguments=""))
            self._call_deltas[call.index] = delta
        return delta

    def _end_call(self, call: _Call) -> None:
        if call.name is None:  # a JSON object, but no call
            self._abandon()
            return
        scanner = call.scanner
        key = self._arguments_key(scanner)
        if key is None:
            self._send_arguments(call, "{}")  # a call without arguments
        elif not scanner.values[key].startswith(("{", '"')):
            self.malformed = True
        try:
            json.loads(scanner.raw)
        except ValueError:
            self.malformed = True
        self._attempt, self._mode = "", "between"

    def _abandon(self) -> None:
        """The call being read is none (nothing of it was sent): before any call, its text is content after all,
        and so is everything after it; after calls, the rest is dropped."""
        self.calls.pop()
        if self.calls:
            self.malformed, self._mode = True, "drop"
            return
        self._send_content(self._attempt + self._pending)
        self._attempt, self._pending, self._mode = "", "", "content"

    def _send_content(self, text: str) -> None:
        if text:
            self._content.append(text)

    def _delta(self) -> ChatDelta | None:
        content = "".join(self._content) or None
        calls = list(self._call_deltas.values()) or None
        self._content, self._call_deltas = [], {}
        return ChatDelta(content=content, tool_calls=calls) if content or calls else None


class HermesParser(CallParser):
    """Qwen2.5 / Qwen3 (Hermes style): ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, any number,
    after optional text (the message's content). Text between and after calls is dropped."""

    name = "hermes"
    marker = "<tool_call>"
    instruction = (
        'To call a function, answer with <tool_call>{"name": "NAME", "arguments": {ARGUMENTS}}</tool_call> '
        "(one such block per call); otherwise answer normally."
    )

    @staticmethod
    def render_call(name: str, arguments: object) -> str:
        return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"

    def _read_text(self) -> None:
        self._skip_to_marker(send=True)

    def _read_between(self) -> None:
        self._skip_to_marker(send=False)

    def _skip_to_marker(self, send: bool) -> None:
        """Up to the next marker (sent as content, or dropped), holding back what may be the start of one."""
        pending = self._pending
        found = pending.find(self.marker)
        end = found if found >= 0 else len(pending) - _held_back(pending, self.marker)
        if send:
            self._send_content(pending[:end])
        if found >= 0:
            self._start_call(self.marker, pending[found + len(self.marker) :])
        else:
            self._pending = pending[end:]


class Llama3JsonParser(CallParser):
    """Llama 3.x: the whole answer is ``{"name": ..., "parameters": {...}}`` (after an optional ``<|python_tag|>``),
    several separated by ``;``."""

    name = "llama3_json"
    python_tag = "<|python_tag|>"
    arguments_keys = ("parameters", "arguments")
    instruction = (
        'To call a function, answer with only {"name": "NAME", "parameters": {ARGUMENTS}}; otherwise answer normally.'
    )

    @staticmethod
    def render_call(name: str, arguments: object) -> str:
        return json.dumps({"name": name, "parameters": arguments})

    def _read_text(self) -> None:
        body = self._pending.lstrip()
        opening = self._pending[: len(self._pending) - len(body)]
        if body.startswith(self.python_tag):
            self._start_call(opening + self.python_tag, body[len(self.python_tag) :])
        elif body.startswith("{"):
            self._start_call(opening, body)
        elif body and not self.python_tag.startswith(body):
            self._mode = "content"  # an answer in words: no call follows

    def _read_between(self) -> None:
        body = self._pending.lstrip()
        if body.startswith(";"):
            self._start_call(self._pending[: len(self._pending) - len(body) + 1], body[1:])
        elif body:
            self.malformed, self._mode = True, "drop"


class RequiredCallsParser(CallParser):
    """What the grammar of ``tool_choice: "required"`` writes: a JSON array of ``{"name", "parameters"}``."""

    arguments_keys = ("parameters",)

    def __init__(self) -> None:
        super().__init__()
        self._closed = False

    def _read_text(self) -> None:
        body = self._pending.lstrip()
        if body.startswith("["):
            self._start_call(self._pending[: len(self._pending) - len(body) + 1], body[1:])
        elif body:
            self._mode = "content"

    def _read_between(self) -> None:
        body = self._pending.lstrip()
        if body.startswith(","):
            self._start_call(self._pending[: len(self._pending) - len(body) + 1], body[1:])
        elif body.startswith("]"):
            self._closed, self._mode = True, "drop"
        elif body:
            self.malformed, self._mode = True, "drop"

    def _complete(self) -> bool:
        return self._closed


PARSERS: dict[str, type[HermesParser | Llama3JsonParser]] = {"hermes": HermesParser, "llama3_json": Llama3JsonParser}


def _held_back(text: str, marker: str) -> int:
    """How many characters at the end of ``text`` could begin ``marker``."""
    for length in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-length:]):
            return length
    return 0
