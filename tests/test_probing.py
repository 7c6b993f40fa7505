"""The probe thread: runs handed to its loop and their results handed back, in batches."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator

import httpx
import pytest

from watchdog.runtime.probing import Mailbox, ProbeLoop


@pytest.fixture
async def probing() -> AsyncIterator[ProbeLoop]:
    loop = ProbeLoop(httpx.AsyncClient).start()
    yield loop
    await loop.close()


async def test_work_runs_on_the_probe_thread_and_its_result_comes_back(probing: ProbeLoop) -> None:
    async def where() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    async def fails() -> None:
        raise ValueError("from the probe thread")

    assert await probing.run(where) == "mlops-watchdog-probes"
    with pytest.raises(ValueError, match="from the probe thread"):
        await probing.run(fails)
    names = await asyncio.gather(*(probing.run(where) for _ in range(50)))
    assert set(names) == {"mlops-watchdog-probes"}


async def test_cancelling_the_await_cancels_the_work_there(probing: ProbeLoop) -> None:
    started, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    waiting = asyncio.create_task(probing.run(forever))
    assert await asyncio.to_thread(started.wait, 5)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await asyncio.to_thread(cancelled.wait, 5)


def test_calls_put_before_the_loop_gets_to_them_share_one_wake() -> None:
    loop = asyncio.new_event_loop()
    wakes: list[int] = []

    class Counting(Mailbox):
        def _take(self) -> None:
            wakes.append(1)
            super()._take()

    try:
        box, took = Counting(loop), list[int]()
        for n in range(10):
            box.put(functools.partial(took.append, n))
        loop.run_until_complete(asyncio.sleep(0.01))
        assert took == list(range(10)) and len(wakes) == 1
        box.put(functools.partial(took.append, 10))  # all taken: this one wakes the loop again
        loop.run_until_complete(asyncio.sleep(0.01))
        assert took[-1] == 10 and len(wakes) == 2
    finally:
        loop.close()
