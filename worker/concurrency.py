"""Running many coroutines of one step at once: all of them, or at most `limit` at a time, with
the first error cancelling the others. Used by the steps and by the HTTP messengers alike, so
it imports no other module of worker/."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
Item = TypeVar("Item")


async def run_all(coroutines: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Like asyncio.gather, but the first error cancels the others before it is re-raised, so
    no row's work goes on behind a failed step."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    if not tasks:
        return []
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        raise


async def map_bounded(
    items: Sequence[Item], limit: int, work: Callable[[Item], Awaitable[T]]
) -> list[T]:
    """`work` for every item, at most `limit` at a time; the results in the items' order (as
    run_all: the first error cancels the rest)."""
    slots = asyncio.Semaphore(limit)

    async def one(item: Item) -> T:
        async with slots:
            return await work(item)

    return await run_all([one(item) for item in items])
