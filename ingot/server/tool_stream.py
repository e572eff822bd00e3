"""A streamed chat choice's text as OpenAI's deltas when the request has tools: content while the model writes text,
``delta.tool_calls`` once it calls (the first delta of a call carries its id, type and name; arguments follow)."""

from __future__ import annotations

from ingot.server.protocol import ChatDelta, FunctionCallDelta, ToolCallDelta, ToolCallOut
from ingot.server.tools import ToolPlan, new_call_id


class ToolCallStream:
    """One choice's deltas. A named call streams its arguments as they come; calls of ``required`` and ``auto``
    are parsed when the output ends (``auto`` streams the text before a call as content, holding back what could be
    the start of one)."""

    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self._text = ""  # all of the output
        self._sent = 0  # how much of it went out as content or as a named call's arguments
        self._buffering = plan.mode == "required"  # the rest is a call (or text that only the end can tell)
        self._call_id = new_call_id()

    def feed(self, text: str) -> ChatDelta | None:
        """The delta for the next piece of output, or None while it is held back."""
        self._text += text
        plan = self.plan
        if plan.mode == "none":
            return self._content(len(self._text))
        if plan.mode == "named":
            first = self._sent == 0 and text != ""
            self._sent = len(self._text)
            if not text:
                return None
            return ChatDelta(tool_calls=[self._named_delta(text, first)])
        if self._buffering:
            return None
        start = plan.parser.start
        if plan.parser.start_anywhere:
            found = self._text.find(start, self._sent)
            if found >= 0:
                self._buffering = True
                return self._content(found)
            return self._content(len(self._text) - _held_back(self._text, start))
        stripped = self._text.lstrip()
        if not stripped:
            return None
        if stripped.startswith((start, "<|python_tag|>")):
            self._buffering = True
            return None
        return self._content(len(self._text))

    def finish(self, finish_reason: str | None) -> tuple[ChatDelta | None, str | None]:
        """The last delta (what was held back: calls, or text after all) and the choice's finish reason."""
        if self.plan.mode in ("none", "named"):
            _, reason = self.plan.parse(self._text, finish_reason)
            return self._content(len(self._text)) if self.plan.mode == "none" else None, reason
        parsed, reason = self.plan.parse(self._text, finish_reason)
        if not parsed.calls:
            return self._content(len(self._text)), reason
        return ChatDelta(tool_calls=[_call_delta(index, call) for index, call in enumerate(parsed.calls)]), reason

    def _content(self, end: int) -> ChatDelta | None:
        piece, self._sent = self._text[self._sent : end], max(self._sent, end)
        return ChatDelta(content=piece) if piece else None

    def _named_delta(self, arguments: str, first: bool) -> ToolCallDelta:
        if first:
            function = FunctionCallDelta(name=self.plan.named, arguments=arguments)
            return ToolCallDelta(index=0, id=self._call_id, type="function", function=function)
        return ToolCallDelta(index=0, function=FunctionCallDelta(arguments=arguments))


def _call_delta(index: int, call: ToolCallOut) -> ToolCallDelta:
    function = FunctionCallDelta(name=call.function.name, arguments=call.function.arguments)
    return ToolCallDelta(index=index, id=call.id, type="function", function=function)


def _held_back(text: str, start: str) -> int:
    """How many characters at the end of ``text`` could begin ``start``."""
    for length in range(min(len(start) - 1, len(text)), 0, -1):
        if start.startswith(text[-length:]):
            return length
    return 0
