"""The shared batch window's quiet-period rule (docs/architecture.md, "How batches form")."""

from __future__ import annotations

import asyncio

from conveyor_shared.messaging.batching import BatchWindow


async def test_a_steady_burst_is_one_batch_while_it_keeps_coming() -> None:
    flushed: list[list[int]] = []

    async def flush(_group: str, items: list[int]) -> None:
        flushed.append(items)

    window: BatchWindow[int] = BatchWindow(
        flush, quiet_seconds=0.3, max_wait_seconds=10, max_items=1000
    )

    async def trickle() -> None:
        adds = []
        for i in range(8):  # 8 arrivals 0.1 s apart: never 0.3 s quiet
            adds.append(asyncio.create_task(window.add("H1", i)))
            await asyncio.sleep(0.1)
        await asyncio.gather(*adds)

    await trickle()
    assert flushed == [list(range(8))]


async def test_max_wait_caps_a_batch_that_never_goes_quiet() -> None:
    flushed: list[list[int]] = []

    async def flush(_group: str, items: list[int]) -> None:
        flushed.append(items)

    window: BatchWindow[int] = BatchWindow(
        flush, quiet_seconds=0.3, max_wait_seconds=0.45, max_items=1000
    )
    adds = []
    for i in range(10):
        adds.append(asyncio.create_task(window.add("H1", i)))
        await asyncio.sleep(0.1)
    await asyncio.gather(*adds)
    assert len(flushed) >= 2
    assert sorted(i for batch in flushed for i in batch) == list(range(10))


async def test_groups_are_batched_apart() -> None:
    flushed: list[tuple[str, list[int]]] = []

    async def flush(group: str, items: list[int]) -> None:
        flushed.append((group, items))

    window: BatchWindow[int] = BatchWindow(
        flush, quiet_seconds=0.05, max_wait_seconds=1, max_items=100
    )
    await asyncio.gather(window.add("H1", 1), window.add("H2", 2), window.add("H1", 3))
    assert sorted(flushed) == [("H1", [1, 3]), ("H2", [2])]
