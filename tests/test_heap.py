"""workstation.heap: start-up objects frozen, cycles made afterwards still collected."""

from __future__ import annotations

import gc
import weakref

from workstation.heap import GEN0_THRESHOLD, settle_heap


class _Node:
    other: _Node | None = None


def test_settle_heap_freezes_start_up_and_still_collects_later_cycles() -> None:
    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 1_000  # the imported modules' objects, at least
        assert gc.get_threshold() == (GEN0_THRESHOLD, before[1], before[2])
        node = _Node()
        node.other = node  # a cycle: reference counting alone never frees it
        gone = weakref.ref(node)
        del node
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
