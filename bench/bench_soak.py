"""Agent memory under writes and a long mixed workload (issue 9): `python -m bench soak`.

1. RSS of a real agent after 10,000 overwrites (`secrets.set`) in a 10,000-secret vault, sampled
   every 1,000 (target <= 60 MB at the end).
2. A mixed soak: gets, sets, recursive listings and bulk imports (50 secrets each) over 4 vaults of
   2,000 secrets (their size stays the same: imports replace batches imported at the start), from
   one client connection, for ``--minutes`` (default 30), the agent's RSS printed every
   ``--interval`` seconds (default 60); memory should stay flat (target <= 60 MB throughout).

`python -m bench soak --minutes 2 --interval 10` for a short run; `--quick` makes part 1 do
2,000 overwrites and the soak 1 minute.
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

from bench.bench_agent import PK, _agent_pid, _env, _pk, _rss_mb

VAULTS = ("alpha", "beta", "gamma", "delta")
BATCHES, BATCH = 20, 50


def _items(n: int, tag: str) -> dict[str, bytes]:
    return {f"dir{i // 100:03d}/secret-{i:05d}": f"{tag}-value-{i:05d}".encode() for i in range(n)}


def _batch(batch: int) -> dict[str, bytes]:
    """One .env-sized import: ``BATCH`` secrets under ``imported/NN/`` with fresh values."""
    return {f"imported/{batch:02d}/s{i:03d}": os.urandom(64) for i in range(BATCH)}


def _print_row(label: str, rss: float, extra: str = "") -> None:
    print(f"| {label} | {rss:.1f} MB | {extra} |", flush=True)


def _rss_parts_mb(pid: int) -> tuple[float, float, float]:
    """The agent's resident memory and its split as the kernel counts it, from one read of
    /proc/PID/status: ``(total, anonymous, file-backed)`` MB.
    File-backed pages (shared libraries, and the pack indexes libgit2 maps whole: 28 bytes per
    object of a vault's history) are page cache the kernel can reclaim; the anonymous part is
    what the agent's allocators hold (docs/architecture.md "Agent memory")."""
    parts = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                parts[key] = int(value.split()[0]) / 1024
    return parts["VmRSS"], parts["RssAnon"], parts["RssFile"] + parts.get("RssShmem", 0.0)


def _soak_row(label: str, pid: int, extra: str = "") -> tuple[float, float]:
    """Print one row of the soak table; the ``(total, anonymous)`` MB it shows."""
    rss, anon, files = _rss_parts_mb(pid)
    print(f"| {label} | {rss:.1f} MB | {anon:.1f} MB | {files:.1f} MB | {extra} |", flush=True)
    return rss, anon


def overwrites(node: Path, pid: int, total: int) -> float:
    """RSS (MB) after ``total`` overwrites spread over a 10,000-secret vault."""
    from polykey.agent_client.client import connect

    print("\n## Agent RSS: overwrites in a 10,000-secret vault\n")
    print("| after | agent RSS | elapsed |")
    print("| --- | ---: | ---: |")
    with connect(str(node)) as c:
        c.call("vaults.create", {"name": "big"})
        c.call("secrets.import", {"vault": "big", "items": _items(10_000, "seed")})
        _print_row("import of 10,000 secrets", _rss_mb(pid))
        started = time.perf_counter()
        for i in range(total):
            c.call("secrets.set", {"vault": "big", "path": f"dir{(i % 10_000) // 100:03d}/secret-{i % 10_000:05d}",
                                   "value": b"overwrite-%d" % i})
            if (i + 1) % 1000 == 0:
                _print_row(f"{i + 1:,} overwrites", _rss_mb(pid), f"{time.perf_counter() - started:.0f} s")
    final = _rss_mb(pid)
    print(f"\nRSS after {total:,} overwrites: {final:.1f} MB (target ≤ 60 MB)")
    return final


def soak(node: Path, pid: int, minutes: float, interval: float) -> list[float]:
    """Run the mixed workload for ``minutes``; returns the RSS samples (MB)."""
    from polykey.agent_client.client import connect

    rng = random.Random(9)
    counts = dict.fromkeys(("get", "set", "ls", "import"), 0)
    rows: list[tuple[float, float]] = []  # (total, anonymous) MB of each row printed
    print(f"\n## Agent RSS: mixed soak over {len(VAULTS)} vaults, {minutes:g} min\n")
    print("| at | agent RSS | anonymous | file-backed | operations so far |")
    print("| --- | ---: | ---: | ---: | --- |")
    with connect(str(node)) as c:
        for name in VAULTS:  # the steady state from the start: later imports replace these batches
            c.call("vaults.create", {"name": name})
            c.call("secrets.import", {"vault": name, "items": _items(1000, name)})
            for batch in range(BATCHES):
                c.call("secrets.import", {"vault": name, "items": _batch(batch)})
        rows.append(_soak_row(f"start ({len(VAULTS)} vaults of {1000 + BATCHES * BATCH:,} secrets)", pid))
        started = time.monotonic()
        deadline = started + minutes * 60
        next_sample = started + interval
        imports = itertools.count()
        while (now := time.monotonic()) < deadline:
            if now >= next_sample:
                ops = ", ".join(f"{k} {v:,}" for k, v in counts.items())
                rows.append(_soak_row(f"{now - started:.0f} s", pid, ops))
                next_sample += interval
            vault = rng.choice(VAULTS)
            j = rng.randrange(1000)
            path = f"dir{j // 100:03d}/secret-{j:05d}"
            roll = rng.random()
            if roll < 0.6:
                c.call("secrets.get", {"vault": vault, "path": path})
                counts["get"] += 1
            elif roll < 0.9:
                c.call("secrets.set", {"vault": vault, "path": path, "value": os.urandom(rng.randrange(16, 512))})
                counts["set"] += 1
            elif roll < 0.99:
                c.call("secrets.list", {"vault": vault, "path": "", "recursive": True, "compact": True})  # as pk asks
                counts["ls"] += 1
            else:  # a bulk import: new values for one batch of secrets
                c.call("secrets.import", {"vault": vault, "items": _batch(next(imports) % BATCHES)})
                counts["import"] += 1
    rows.append(_soak_row("end", pid, ", ".join(f"{k} {v:,}" for k, v in counts.items())))
    samples = [rss for rss, _anon in rows]
    print(f"\nRSS over the soak: first {samples[0]:.1f} MB, max {max(samples):.1f} MB, "
          f"last {samples[-1]:.1f} MB (target ≤ 60 MB, flat); anonymous: first {rows[0][1]:.1f} MB, "
          f"last {rows[-1][1]:.1f} MB")
    return samples


def main(quick: bool = False, minutes: float | None = None, interval: float | None = None) -> None:
    total = 2_000 if quick else 10_000
    minutes = minutes if minutes is not None else (1.0 if quick else 30.0)
    interval = interval if interval is not None else (10.0 if quick else 60.0)
    with tempfile.TemporaryDirectory(prefix="pk-bench-soak-") as tmp:
        node = Path(tmp) / "node"
        env = _env(node)
        _pk(env, "bootstrap")
        _pk(env, "agent", "start")
        try:
            pid = _agent_pid(env)
            print(f"agent pid {pid}, fresh RSS {_rss_mb(pid):.1f} MB")
            overwrites(node, pid, total)
            soak(node, pid, minutes, interval)
        finally:
            subprocess.run([PK, "agent", "stop"], env=env, capture_output=True, check=False)
