"""Hands outputs from the engine thread to the asyncio queues of one event loop."""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any


class LoopRelay:
    """Wakes the loop once for all the outputs a step produces, not once per output: each wake-up is a system call
    on the engine thread (~40 us, so ~1 ms of every 32-stream decode step) and a turn of the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # relays live as long as their loop, not the other way round
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Queue, Any]] = []

    def put(self, queue: asyncio.Queue, item: Any) -> None:
        """Any thread: ``item`` reaches ``queue`` on the loop's thread."""
        with self._lock:
            self._pending.append((queue, item))
            if len(self._pending) > 1:
                return  # a wake-up is already on its way
        loop = self._loop()
        if loop is not None and not loop.is_closed():  # the consumer may be gone already (an aborted stream)
            loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for queue, item in pending:
            queue.put_nowait(item)


_relays: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopRelay] = weakref.WeakKeyDictionary()
_relays_lock = threading.Lock()


def relay_for(loop: asyncio.AbstractEventLoop) -> LoopRelay:
    """The one relay of ``loop``."""
    with _relays_lock:
        relay = _relays.get(loop)
        if relay is None:
            relay = _relays[loop] = LoopRelay(loop)
        return relay
