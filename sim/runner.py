"""Run many seeds over a few processes and sum up what they found."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from .world import Config, Outcome, run_seed


def run_one(args: tuple[int, Config]) -> Outcome:
    seed, config = args
    outcome = run_seed(seed, config)
    if not outcome.violations:
        outcome.trace = []  # only a failing seed's story travels back
    return outcome


@dataclass
class Summary:
    seeds: int = 0
    failing: list[Outcome] = field(default_factory=list)
    actions: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0


def run_many(
    seeds: Iterable[int],
    config: Config,
    jobs: int,
    on_outcome: Callable[[Outcome, Summary], None] | None = None,
) -> Summary:
    """Every seed, ``jobs`` at a time, each in a spawned process of its own
    (a fresh interpreter, whatever the caller holds: threads, event loops)."""
    summary = Summary()
    started = time.monotonic()
    work = [(seed, config) for seed in seeds]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        for outcome in pool.map(run_one, work, chunksize=4):
            summary.seeds += 1
            summary.actions += outcome.ops
            summary.faults.update(outcome.faults)
            if outcome.violations:
                summary.failing.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome, summary)
    summary.elapsed_s = time.monotonic() - started
    return summary
