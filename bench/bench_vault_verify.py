"""Verified heads (issue 11 "Bench"): `python -m bench vault-verify`.

1. Verifying one new commit (made behind the agent's back, as sync will bring them) on a vault of
   10,000 commits, against one of 10 commits: target <= 5 ms, and no growth with history.
2. The first `get` after an agent start (a new VaultService: what the agent builds at unlock) on the
   10,000-commit vault, against a fresh vault: target <= 20 ms more. In-process, so the figure is
   the vault work alone, not a process start.
3. `set` with the state file written every write (phase 1) against every 32nd (section 10.5), side
   by side on one vault: the cost of recording the verified head.
The 10,000-commit history is made directly (commits alternating between two trees, each signed
by the node, in one pack), then verified in full once so the node's state records its head.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Row, measure, print_table
from polykey.keys.keypair import KeyPair
from polykey.vaults import ops, trust
from polykey.vaults.identity import author_email
from polykey.vaults.objects import signed_commit_bytes
from polykey.vaults.pack import OBJ_COMMIT
from polykey.vaults.service import VaultService
from polykey.vaults.vault import Vault
from polykey.vaults.verify import verify_new


def _long_history(svc: VaultService, name: str, commits: int) -> None:
    svc.create_vault(name)
    svc.set_secret(name, "db/password", b"a")
    v = svc._vault(name)  # noqa: SLF001 - the bench builds history below the service
    trees = [v.repo.commit_info(v.repo.head() or "").tree]
    svc.set_secret(name, "db/password", b"b")
    trees.append(v.repo.commit_info(v.repo.head() or "").tree)
    me = svc.node_key.node_id
    with v.repo.write_lock():
        parent = v.repo.head() or ""
        when = v.repo.commit_info(parent).time  # commit times never go back (vault-format.md section 8)
        for i in range(commits - 3):
            data = signed_commit_bytes(trees[i % 2], [parent], str(me), author_email(me), when,
                                       "set secret\n", svc.node_key.sign)
            parent = v.repo._stage(OBJ_COMMIT, data)  # noqa: SLF001
        v.repo._flush()  # noqa: SLF001
        v.repo.set_head(parent)
    svc.verify(name)  # the whole history once; the state records the head


def _timed(setup: Callable[[], Callable[[], object]], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        work = setup()
        t0 = time.perf_counter()
        work()
        samples.append(time.perf_counter() - t0)
    return samples


def _one_new_commit(svc: VaultService, name: str, counter: itertools.count[int]) -> Callable[[], object]:
    """A commit made below the service (untimed); the work: verifying it."""
    guarded = svc._vault(name)  # noqa: SLF001
    raw = Vault(guarded.repo.path, guarded.vault_id, svc.node_key, guarded.clock, guarded.rng)
    before = raw.repo.head() or ""
    ops.set_secret(raw, ("db", "password"), b"v%d" % next(counter))
    after = raw.repo.head() or ""
    raw.close()
    return lambda: verify_new(guarded, after, before)


def _sets(svc: VaultService, counter: itertools.count[int], every: int, repeat: int) -> list[float]:
    """``set`` on the fresh vault with the verified head recorded in the state file every ``every`` writes."""
    kept, trust.RECORD_EVERY = trust.RECORD_EVERY, every
    try:
        return measure(lambda: svc.set_secret("fresh", "db/password", b"s%d" % next(counter)), repeat=repeat, warmup=3)
    finally:
        trust.RECORD_EVERY = kept


def main(quick: bool = False) -> None:
    commits = 1_000 if quick else 10_000
    repeat = 10 if quick else 30
    starts = 5 if quick else 15
    counter = itertools.count()
    with tempfile.TemporaryDirectory() as tmp:
        node, pair = Path(tmp) / "node", KeyPair.generate()
        svc = VaultService(node, pair)
        _long_history(svc, "long", commits)
        _long_history(svc, "short", 10)
        svc.create_vault("fresh")
        svc.set_secret("fresh", "db/password", b"a")
        rows = [
            Row("verify 1 new commit (10 commits)", _timed(lambda: _one_new_commit(svc, "short", counter), repeat)),
            Row(f"verify 1 new commit ({commits:,} commits)",
                _timed(lambda: _one_new_commit(svc, "long", counter), repeat), "≤ 5 ms"),
        ]
        sets: dict[int, list[float]] = {1: [], trust.RECORD_EVERY: []}
        for _ in range(4):  # interleaved: the machine's load drifts
            for every, samples in sets.items():
                samples.extend(_sets(svc, counter, every, repeat))
        rows.append(Row("set, state file every write", sets[1]))
        rows.append(Row(f"set, state file once per {trust.RECORD_EVERY} writes", sets[trust.RECORD_EVERY]))
        for name in ("long", "short"):  # leave their heads verified and recorded
            svc.get_secret(name, "db/password")
        svc.close()

        opened: list[VaultService] = []

        def first_get(vault: str) -> Callable[[], Callable[[], object]]:
            def setup() -> Callable[[], object]:
                opened.append(VaultService(node, pair))  # what an agent start builds
                return lambda: opened[-1].get_secret(vault, "db/password")
            return setup

        rows.append(Row("first get after a start (fresh vault)", _timed(first_get("fresh"), starts)))
        rows.append(Row(f"first get after a start ({commits:,} commits)", _timed(first_get("long"), starts),
                        "≤ fresh + 20 ms"))
        for s in opened:
            s.close()
    print_table("Verified heads (in-process VaultService, fsync on)", rows,
                baseline="verify 1 new commit (10 commits)")


if __name__ == "__main__":
    main()
