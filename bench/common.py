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


# -- whole processes of the installed `pk` --------------------------------------------------------

import atexit  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

SOURCE = Path(__file__).resolve().parents[1]
#: What a copy of the tree leaves out: local environments, caches and build artefacts.
_NOT_COPIED = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache",
                                     ".pytest_cache", ".hypothesis", "results")


@dataclass(frozen=True)
class Installed:
    """A temporary venv holding a normal (non-editable) ``pip install`` of this tree."""

    prefix: Path

    @property
    def python(self) -> Path:
        return self.prefix / "bin" / "python"

    @property
    def pk(self) -> Path:
        return self.prefix / "bin" / "pk"


_installed: Installed | None = None


def installed() -> Installed:
    """Build (once per run) a venv with ``pip install .`` of a copy of this tree, as a user gets it.

    The tree is copied to a temporary directory first, so the build's artefacts (``build/``,
    ``*.egg-info``) never land in the source tree; pip byte-compiles what it installs, as for any
    user. Removed when the run ends. ``PK_BENCH_PIP_ARGS`` adds pip options (e.g. an index).
    """
    global _installed
    if _installed is not None:
        return _installed
    root = Path(tempfile.mkdtemp(prefix="pk-bench-venv-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    tree = root / "src"
    shutil.copytree(SOURCE, tree, ignore=_NOT_COPIED, symlinks=True)
    prefix = root / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(prefix)], check=True)
    extra = os.environ.get("PK_BENCH_PIP_ARGS", "").split()
    print(f"(installing this tree into a temporary venv with `pip install .`: {prefix})", file=sys.stderr)
    r = subprocess.run([str(prefix / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        *extra, str(tree)], capture_output=True, env={**os.environ, "PIP_NO_INPUT": "1"})
    if r.returncode != 0:
        sys.stderr.write(r.stderr.decode(errors="replace"))
        raise RuntimeError(f"pip install of {tree} failed")
    _installed = Installed(prefix)
    return _installed


def spawn_time(argv: list[str], env: dict[str, str], stdin: bytes | None = None) -> float:
    """Seconds from spawning ``argv`` to its exit (stdout to /dev/null, stdin from ``stdin``);
    RuntimeError if it fails."""
    devnull = os.open(os.devnull, os.O_RDWR)
    rfd = None
    try:
        actions = [(os.POSIX_SPAWN_DUP2, devnull, 1)]
        if stdin is not None:
            tmp = tempfile.TemporaryFile()
            tmp.write(stdin)
            tmp.flush()
            tmp.seek(0)
            rfd = os.dup(tmp.fileno())
            tmp.close()
            actions.append((os.POSIX_SPAWN_DUP2, rfd, 0))
        else:
            actions.append((os.POSIX_SPAWN_DUP2, devnull, 0))
        t0 = time.perf_counter()
        pid = os.posix_spawnp(argv[0], argv, env, file_actions=actions)
        _, status = os.waitpid(pid, 0)
        elapsed = time.perf_counter() - t0
    finally:
        os.close(devnull)
        if rfd is not None:
            os.close(rfd)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (exit {os.waitstatus_to_exitcode(status)})")
    return elapsed


def alternate(commands: dict[str, tuple[list[str], bytes | None]], env: dict[str, str], runs: int,
              warmup: int = 2) -> dict[str, list[float]]:
    """Time every command ``runs`` times, round-robin (one of each in turn), so that load from
    elsewhere hits all of them alike."""
    for _ in range(warmup):
        for argv, stdin in commands.values():
            spawn_time(argv, env, stdin)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, (argv, stdin) in commands.items():
            samples[name].append(spawn_time(argv, env, stdin))
    return samples


def print_ratio_table(title: str, rows: list[Row], peers: list[str]) -> None:
    """Print ``rows`` with median, p90, n and one ratio column per peer row (median / peer median)."""
    by_name = {r.name: r for r in rows}
    print(f"\n## {title}\n")
    print("| figure | median | p90 | n | " + " | ".join(f"× {p}" for p in peers) + " | target |")
    print("| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in peers) + " | --- |")
    for r in rows:
        ratios = " | ".join(f"{r.median / by_name[p].median:.2f}×" for p in peers)
        print(f"| {r.name} | {fmt_seconds(r.median)} | {fmt_seconds(r.quantile(0.9))} | {len(r.samples)} | "
              f"{ratios} | {r.target} |")
