"""Probes on a thread and event loop of their own, so that what they time is the network and
the engine, not the daemon's other work.

On the daemon's loop, an answer that arrives while a run is being stored, or while drift is
compared, waits until that work yields, and its TTFT and e2e grow by the wait. On this loop
nothing else runs: the probe's request, its reading and its timestamps. What still delays it is
Python's global lock, held by the daemon's thread at most a switch interval before it must hand
it over; `SWITCH_INTERVAL_S` makes that half a millisecond.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
SWITCH_INTERVAL_S = 0.0005  # CPython's default is 5 ms


class ProbeLoop:
    """Its own thread and event loop, and the HTTP client the probes use there (made and
    closed on that loop: a client's pool belongs to the loop it was made on)."""

    def __init__(self, make_client: Callable[[], httpx.AsyncClient]):
        self._make_client = make_client
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="mlops-watchdog-probes", daemon=True
        )
        self._client: httpx.AsyncClient | None = None
        self._there = Mailbox(self.loop)
        self._back: Mailbox | None = None  # to the loop that awaits the runs

    @property
    def client(self) -> httpx.AsyncClient:
        assert self._client is not None, "ProbeLoop.start() first"
        return self._client

    def start(self) -> ProbeLoop:
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.thread.start()
        self._client = self._call(self._opened())
        return self

    async def _opened(self) -> httpx.AsyncClient:
        client = self._make_client()
        await client.__aenter__()
        return client

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run on the probe loop and wait for it, from a thread that is not running a loop."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """`work()` on the probe loop, awaited from the daemon's loop. Cancelling the await
        cancels the work there."""
        back = self._back
        if back is None or back.loop is not asyncio.get_running_loop():
            back = self._back = Mailbox(asyncio.get_running_loop())
        done: asyncio.Future[T] = back.loop.create_future()
        there: list[asyncio.Task[T] | None] = [None]

        def start() -> None:  # on the probe loop, as are `cancel` and the task's callback
            if done.cancelled():
                return
            task = there[0] = self.loop.create_task(_awaited(work))
            task.add_done_callback(lambda ended: back.put(lambda: _settle(done, ended)))

        def cancel() -> None:
            if there[0] is not None:
                there[0].cancel()

        self._there.put(start)
        try:
            return await done
        except asyncio.CancelledError:
            self._there.put(cancel)
            raise

    async def close(self) -> None:
        """Close the client on its loop, then stop the loop and its thread."""
        if self._client is not None:
            client, self._client = self._client, None
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(client.__aexit__(None, None, None), self.loop)
            )
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self.thread.join, 5)
        if not self.thread.is_alive():
            self.loop.close()


class Mailbox:
    """Calls handed to another thread's event loop, in batches: the loop wakes once for all
    the calls put in before it got round to them, not once each. Each wake is a write to its
    self-pipe and a switch of Python's lock; runs started together on a tick, and answers
    that arrive together, share one."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._calls: deque[Callable[[], object]] = deque()
        self._waking = False

    def put(self, call: Callable[[], object]) -> None:
        """From any thread. Appended before the flag is read, and the flag cleared before
        the calls are taken: a call is never left behind without a wake to take it."""
        self._calls.append(call)
        if not self._waking:
            self._waking = True
            self.loop.call_soon_threadsafe(self._take)

    def _take(self) -> None:
        self._waking = False
        while self._calls:
            self._calls.popleft()()


async def _awaited(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


def _settle(done: asyncio.Future[T], ended: asyncio.Task[T]) -> None:
    if done.cancelled():
        return
    if ended.cancelled():
        done.cancel()
    elif (error := ended.exception()) is not None:
        done.set_exception(error)
    else:
        done.set_result(ended.result())
