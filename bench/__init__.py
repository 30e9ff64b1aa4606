"""Benchmarks: `python -m bench [--quick] [NAME ...]` prints tables of medians and ratios.

Each ``bench/bench_NAME.py`` defines ``main(quick: bool = False) -> None`` that prints one or
more tables with :func:`bench.common.print_table` (one baseline row measured in the same run).
"""
