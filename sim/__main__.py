"""``python -m sim [--seeds N] [--seed S --trace] [--jobs J]``: the simulation.

Runs seeds and ends with a line ``N seeds, F failing``. A failing seed prints
its violations and the command that replays it, with its trace."""

from __future__ import annotations

import argparse
import os
import sys

from .runner import Summary, run_many
from .world import Config, Outcome, run_seed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim", description=__doc__)
    parser.add_argument("--seeds", type=int, default=10_000, help="how many seeds (from --first)")
    parser.add_argument("--first", type=int, default=1, help="the first seed")
    parser.add_argument("--seed", type=int, help="replay this one seed")
    parser.add_argument("--trace", action="store_true", help="print the seed's trace")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workstations", type=int, default=Config.workstations)
    parser.add_argument("--steps", type=int, default=Config.steps)
    args = parser.parse_args(argv)
    config = Config(workstations=args.workstations, steps=args.steps)
    if args.seed is not None:
        outcome = run_seed(args.seed, config)
        if args.trace or outcome.violations:
            print("\n".join(outcome.trace))
        for violation in outcome.violations:
            print(f"seed {args.seed}: {violation}")
        print(
            f"seed {args.seed}: {outcome.ops} clerk actions, {len(outcome.violations)} violations"
        )
        return 1 if outcome.violations else 0

    def report(outcome: Outcome, summary: Summary) -> None:
        if outcome.violations:
            print(f"seed {outcome.seed} FAILS: {'; '.join(outcome.violations)}", flush=True)
            print(f"  replay: make sim SEED={outcome.seed}", flush=True)
        if summary.seeds % 500 == 0:
            print(f"  {summary.seeds} seeds, {len(summary.failing)} failing", flush=True)

    summary = run_many(range(args.first, args.first + args.seeds), config, args.jobs, report)
    faults = ", ".join(f"{n} {what}" for what, n in sorted(summary.faults.items()))
    print(f"faults injected: {faults}")
    print(
        f"{summary.seeds} seeds, {len(summary.failing)} failing "
        f"({summary.actions} clerk actions, {config.workstations} workstations and "
        f"{config.steps} steps a seed, {summary.elapsed_s:.0f} s on {args.jobs} processes)"
    )
    return 1 if summary.failing else 0


if __name__ == "__main__":
    sys.exit(main())
