"""What every long-running flowgate process (`flowgate worker`, each `flowgate serve` worker)
does about its runtime: the event loop it runs on, and its heap once started.

- `run()`: uvloop, the libuv event loop. asyncpg, redis and the servers do their socket work
  through the loop, and a worker spends a large share of its CPU there (README "Performance",
  figure 5a). granian and uvicorn are told to use it too (web.cli).
- `settle_heap()`: after startup, everything made so far (modules, the app, pools, clients)
  lives as long as the process. `gc.freeze()` moves it out of the collector's generations, so a
  collection no longer walks those objects again each time the oldest generation fills.
  Called once per process, after its startup: never from tests' short-lived workers, whose
  process keeps making new long-lived objects.
"""

from __future__ import annotations

import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`main` to completion on a new uvloop event loop (asyncio.run's contract otherwise)."""
    return uvloop.run(main)


def settle_heap() -> None:
    """Collect what startup left as garbage, then freeze the rest (see the module's docs)."""
    gc.collect()
    gc.freeze()
