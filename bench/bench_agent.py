"""Agent benchmarks (issue 4): `python -m bench agent`.

1. Whole-process `pk secrets get` against a running agent vs. `python -c pass`, same
   interpreter, interleaved in the same run (ratio; target <= 1.5x).
2. Agent throughput: `secrets.get` over the socket by 1 and 8 concurrent client processes
   (gets/s; target >= 5,000 with 8).
3. Idle agent RSS (target <= 60 MB), fresh and after the throughput runs.

Whole processes are those of the installed `pk`: a temporary venv with a normal `pip install .` of
this tree (bench.common.installed), byte-compiled by pip as for any user, never this checkout's
editable install. The everyday commands against gopass and pass are `python -m bench cli`.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Row, installed, measure, print_table

PY = sys.executable
PK = str(Path(PY).parent / "pk")
SECRET = b"bench-s3cret-value-0123456789"


def _env(node: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
    env.update(PK_NODE_PATH=str(node), PK_PASSWORD="bench password", PK_KDF_PROFILE="min")
    return env


def _pk(env: dict[str, str], *args: str, input: bytes = b"") -> bytes:
    r = subprocess.run([PK, *args], input=input, capture_output=True, env=env, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"pk {' '.join(args)} failed: {r.stderr.decode()}")
    return r.stdout


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _client_loop(node: str, start: multiprocessing.synchronize.Event, seconds: float, out: multiprocessing.Queue[int]) -> None:
    from polykey.agent_client.client import connect

    with connect(node) as c:
        c.call("secrets.get", {"vault": "bench", "path": "db/password"})
        start.wait()
        n = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            c.call("secrets.get", {"vault": "bench", "path": "db/password"})
            n += 1
    out.put(n)


def throughput(node: Path, clients: int, seconds: float) -> float:
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    out: multiprocessing.Queue[int] = ctx.Queue()
    procs = [ctx.Process(target=_client_loop, args=(str(node), start, seconds, out)) for _ in range(clients)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # every client connected and warmed up
    start.set()
    total = sum(out.get(timeout=seconds + 60) for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def _agent_pid(env: dict[str, str]) -> int:
    return int(_pk(env, "agent", "status", "--format", "json").split(b'"pid": ')[1].split(b",")[0])


def _wait_exit(pid: int) -> None:
    import select

    fd = os.pidfd_open(pid)
    try:
        select.select([fd], [], [], 30)
    finally:
        os.close(fd)


def stop_latency(env: dict[str, str], runs: int) -> tuple[list[float], list[float]]:
    """Seconds for `pk agent stop` (whole command) and from SIGTERM to the agent's exit."""
    import signal

    by_command: list[float] = []
    by_signal: list[float] = []
    for _ in range(runs):
        _pk(env, "agent", "start")
        t0 = time.perf_counter()
        _pk(env, "agent", "stop")
        by_command.append(time.perf_counter() - t0)
        _pk(env, "agent", "start")
        pid = _agent_pid(env)
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGTERM)
        _wait_exit(pid)
        by_signal.append(time.perf_counter() - t0)
    return by_command, by_signal


def main(quick: bool = False) -> None:
    global PY, PK
    inst = installed()
    PY, PK = str(inst.python), str(inst.pk)
    runs = 15 if quick else 60
    seconds = 2.0 if quick else 5.0
    with tempfile.TemporaryDirectory(prefix="pk-bench-agent-") as tmp:
        node = Path(tmp) / "node"
        env = _env(node)
        _pk(env, "bootstrap")
        _pk(env, "vaults", "create", "bench")
        _pk(env, "secrets", "set", "bench:db/password", input=SECRET)
        try:
            pid = _agent_pid(env)
            time.sleep(1.0)
            rss_fresh = _rss_mb(pid)
            assert _pk(env, "secrets", "get", "bench:db/password") == SECRET

            def run(cmd: list[str]) -> None:
                subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)

            base: list[float] = []
            get: list[float] = []
            for _ in range(runs):  # interleaved, so load changes hit both alike
                base += measure(lambda: run([PY, "-c", "pass"]), repeat=1, warmup=0)
                get += measure(lambda: run([PK, "secrets", "get", "bench:db/password"]), repeat=1, warmup=0)
            print_table(
                "Agent: whole-process `pk secrets get`",
                [
                    Row("python -c pass", base),
                    Row("pk secrets get (agent running)", get, "≤ 1.5×"),
                ],
                baseline="python -c pass",
            )
            one = throughput(node, 1, seconds)
            eight = throughput(node, 8, seconds)
            time.sleep(1.0)
            rss_after = _rss_mb(pid)
            print("\n## Agent: throughput and memory\n")
            print("| figure | value | ratio to 1 client | target |")
            print("| --- | ---: | ---: | --- |")
            print(f"| secrets.get, 1 client (baseline) | {one:,.0f} gets/s | 1.00× |  |")
            print(f"| secrets.get, 8 concurrent clients | {eight:,.0f} gets/s | {eight / one:.2f}× | ≥ 5,000 gets/s |")
            print(f"| idle agent RSS, fresh (one vault open) | {rss_fresh:.1f} MB |  | ≤ 60 MB |")
            print(f"| idle agent RSS, after the throughput runs | {rss_after:.1f} MB |  | ≤ 60 MB |")
            by_command, by_signal = stop_latency(env, 3 if quick else 7)
            print_table(
                "Agent: stopping",
                [
                    Row("python -c pass", base),
                    Row("pk agent stop (whole command, until the agent is gone)", by_command, "agent gone < 1 s"),
                    Row("SIGTERM to agent exit", by_signal, "< 1 s"),
                ],
                baseline="python -c pass",
            )
        finally:
            subprocess.run([PK, "agent", "stop"], env=env, capture_output=True, check=False)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
