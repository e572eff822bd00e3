"""A streamed chat choice's text as OpenAI's deltas when the request has tools: content while the model writes text,
``delta.tool_calls`` as it writes calls (the first delta of a call carries its id, type and name; its arguments
follow in fragments as they are generated)."""

from __future__ import annotations

from ingot.server.protocol import ChatDelta, FunctionCallDelta, ToolCallDelta
from ingot.server.tool_parsers import new_call_id
from ingot.server.tools import ToolPlan


class ToolCallStream:
    """One choice's deltas. A named call's output is its arguments, sent as they come; the calls of ``auto`` and
    ``required`` are read by the plan's call parser (``tool_parsers.py``) as the text arrives."""

    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self._parser = plan.call_parser() if plan.call_parser is not None else None
        self._named_started = False
        self._call_id = new_call_id()

    def feed(self, text: str) -> ChatDelta | None:
        """The delta for the next piece of output, or None while it is held back."""
        if self._parser is not None:
            return self._parser.feed(text)
        if not text:
            return None
        if self.plan.mode == "named":
            return ChatDelta(tool_calls=[self._named_delta(text)])
        return ChatDelta(content=text)

    def finish(self, finish_reason: str | None) -> tuple[ChatDelta | None, str | None]:
        """The last delta (what was held back) and the choice's finish reason ("tool_calls" when it ended with
        calls)."""
        last = self._parser.finish() if self._parser is not None else None
        called = self.plan.mode == "named" or (self._parser is not None and bool(self._parser.calls))
        return last, "tool_calls" if called and finish_reason == "stop" else finish_reason

    def _named_delta(self, arguments: str) -> ToolCallDelta:
        if self._named_started:
            return ToolCallDelta(index=0, function=FunctionCallDelta(arguments=arguments))
        self._named_started = True
        function = FunctionCallDelta(name=self.plan.named, arguments=arguments)
        return ToolCallDelta(index=0, id=self._call_id, type="function", function=function)
