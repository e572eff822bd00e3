"""Outputs cross from the engine thread into an event loop's queues: all of them, in order, with few wake-ups."""

import asyncio
import threading

from ingot.runtime.relay import relay_for


def test_outputs_put_from_another_thread_arrive_in_order_with_one_wake_up_per_burst():
    async def main() -> tuple[list, list, int]:
        loop = asyncio.get_running_loop()
        relay = relay_for(loop)
        assert relay_for(loop) is relay
        wake_ups = 0
        call_soon_threadsafe = loop.call_soon_threadsafe

        def counting(*args):
            nonlocal wake_ups
            wake_ups += 1
            return call_soon_threadsafe(*args)

        loop.call_soon_threadsafe = counting
        first, second = asyncio.Queue(), asyncio.Queue()
        # the loop is busy in this coroutine while the thread puts: one burst, one wake-up
        thread = threading.Thread(target=lambda: [relay.put(q, i) for i in range(50) for q in (first, second)])
        thread.start()
        thread.join()
        got = [[await q.get() for _ in range(50)] for q in (first, second)]
        return got[0], got[1], wake_ups

    first, second, wake_ups = asyncio.run(main())
    assert first == second == list(range(50))
    assert wake_ups == 1


def test_a_closed_loop_drops_outputs_instead_of_failing_the_engine_thread():
    loop = asyncio.new_event_loop()
    relay = relay_for(loop)
    loop.close()
    relay.put(asyncio.Queue(), "late")  # no exception: the stream's consumer has gone
