"""Run benchmarks: `python -m bench` (every benchmark but the long ones) or `python -m bench keys
vaults ...` (a dash in a name reads as an underscore: `dht-scale` is `dht_scale`).

The long benchmarks (`soak`, 30 minutes by default; `dht_scale`, about an hour at 5,000 nodes) run
only when named. Options: `--quick` (fewer repetitions, smaller sizes); `--minutes N` and
`--interval S` for the benchmarks that take them (`soak`); `--nodes N` (`dht_scale`: one network size).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # the benchmarks write nothing into the source tree


#: Run only when named: each takes from half an hour to an hour.
LONG = ("soak", "dht_scale")


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


#: Options that take a number, passed to each benchmark whose ``main`` has that keyword.
VALUE_OPTIONS = {"--minutes": "minutes", "--interval": "interval", "--nodes": "nodes"}


def parse(argv: list[str]) -> tuple[list[str], dict[str, float]]:
    """``(names and flags, numeric options)``; SystemExit with a message for a bad value."""
    rest: list[str] = []
    values: dict[str, float] = {}
    args = iter(argv)
    for arg in args:
        option, eq, text = arg.partition("=")
        if option in VALUE_OPTIONS:
            text = text if eq else next(args, "")
            try:
                values[VALUE_OPTIONS[option]] = float(text)
            except ValueError:
                raise SystemExit(f"{option} takes a number") from None
        else:
            rest.append(arg)
    return rest, values


#: Flags that take no value.
FLAGS = ("--quick",)


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print((__doc__ or "").strip())
        print(f"\nbenchmarks: {', '.join(available())} (long, run only when named: {', '.join(LONG)})")
        return 0
    argv, values = parse(argv)
    bad = [a for a in argv if a.startswith("-") and a not in FLAGS]
    if bad:
        print(f"unknown option(s): {', '.join(bad)}; see python -m bench --help", file=sys.stderr)
        return 64
    quick = "--quick" in argv
    names = [a.replace("-", "_") for a in argv if not a.startswith("-")] or [n for n in available() if n not in LONG]
    unknown = [n for n in names if n not in available()]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available())}", file=sys.stderr)
        return 64
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        accepted = inspect.signature(module.main).parameters
        module.main(quick=quick, **{k: v for k, v in values.items() if k in accepted})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
