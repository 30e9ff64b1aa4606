"""Shared benchmark helpers: time a callable, print a table of medians with ratios.

Every table has one baseline row measured in the same process and run, so the
ratios stay meaningful on a loaded or slower machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Row:
    name: str
    samples: list[float]  # seconds
    target: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def quantile(self, q: float) -> float:
        s = sorted(self.samples)
        return s[min(len(s) - 1, int(q * len(s)))]


def measure(fn: Callable[[], object], *, repeat: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeat`` calls of ``fn`` (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def fmt_seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} µs"


def print_table(title: str, rows: list[Row], baseline: str) -> None:
    """Print ``rows`` with median, p90, n and the ratio of each median to the baseline row's."""
    base = next(r for r in rows if r.name == baseline).median
    print(f"\n## {title}\n")
    print("| figure | median | p90 | n | ratio to baseline | target |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        mark = " (baseline)" if r.name == baseline else ""
        print(
            f"| {r.name}{mark} | {fmt_seconds(r.median)} | {fmt_seconds(r.quantile(0.9))} | "
            f"{len(r.samples)} | {r.median / base:.2f}× | {r.target} |"
        )
