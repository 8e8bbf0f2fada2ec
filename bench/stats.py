"""Percentiles, result records and the printed table."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``samples``."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Record:
    metric: str
    value: float
    unit: str
    work: str
    target: float | None = None
    target_op: str | None = None  # "<=" or ">="

    @property
    def met(self) -> bool | None:
        if self.target is None or self.target_op is None:
            return None
        if self.target_op == "<=":
            return self.value <= self.target
        return self.value >= self.target

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.target is None:
            del data["target"], data["target_op"]
        else:
            data["met"] = self.met
        return data


class Results:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def add(
        self,
        metric: str,
        value: float,
        unit: str,
        work: str,
        *,
        target: float | None = None,
        target_op: str | None = None,
        digits: int = 3,
    ) -> Record:
        record = Record(metric, round(value, digits), unit, work, target, target_op)
        self.records = [r for r in self.records if r.metric != metric]
        self.records.append(record)
        met = record.met
        verdict = "" if met is None else ("  [met]" if met else "  [NOT MET]")
        print(f"  -> {metric} = {record.value:,} {unit}{verdict}", flush=True)
        return record

    def write(self, path: Path) -> None:
        path.write_text(
            json.dumps([r.as_json() for r in self.records], ensure_ascii=False, indent=2) + "\n",
            encoding="utf-8",
        )

    def table(self) -> str:
        header = ("metric", "value", "unit", "target", "met")
        rows = []
        for r in self.records:
            target = f"{r.target_op} {r.target:g}" if r.target is not None else ""
            met = "" if r.met is None else ("met" if r.met else "NOT MET")
            rows.append((r.metric, f"{r.value:,}", r.unit, target, met))
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
        aligns = ("<", ">", "<", "<", "<")

        def line(cells: tuple[str, ...]) -> str:
            return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, aligns, widths, strict=True))

        out = [line(header), line(tuple("-" * w for w in widths))]
        out += [line(row) for row in rows]
        return "\n".join(out)

    def work_notes(self) -> str:
        """What each figure measured; metrics sharing a description are listed together."""
        groups: dict[str, list[str]] = {}
        for r in self.records:
            groups.setdefault(r.work, []).append(r.metric)
        return "\n".join(f"  {', '.join(metrics)}: {work}" for work, metrics in groups.items())
