"""The runtime of flowgate's long-running processes (web.process): uvloop, and a frozen heap."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys

import uvloop

from web import process


def test_run_runs_the_coroutine_on_uvloop_and_answers_its_result() -> None:
    async def main() -> type:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop())

    assert process.run(main()) is uvloop.Loop


def test_settling_the_heap_freezes_what_exists_and_collects_its_garbage() -> None:
    # In a process of its own: a frozen heap is never collected again, and this one is pytest's.
    script = (
        "import gc, weakref\n"
        "from web import process\n"
        "class Cycle:\n"
        "    def __init__(self): self.me = self\n"
        "gc.disable()\n"
        "ref = weakref.ref(Cycle())\n"
        "alive = ref() is not None\n"
        "process.settle_heap()\n"
        "print(alive, ref() is None, gc.get_freeze_count() > 1000)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True"]  # alive, then collected; rest frozen
    assert gc.get_freeze_count() == 0  # this process's own heap was left alone
