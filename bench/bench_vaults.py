"""Vault operations in-process through VaultService, on vaults of 10 and 10,000 secrets (issue 3).

Targets on the 2-core development machine: set <= 5 ms median, get <= 0.2 ms median with the
vault open, get on 10,000 secrets within 2x of get on 10, import of 10,000 secrets <= 5 s.
The baseline row is `get` on the 10-secret vault, so the 10,000-secret `get` ratio is the 2x check.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from bench.common import Row, measure, print_table
from polykey.keys.keypair import KeyPair
from polykey.vaults.service import VaultService


def _items(n: int, tag: str) -> dict[str, bytes]:
    """``n`` secrets spread over directories of 100, like a real team vault."""
    return {f"dir{i // 100:03d}/secret-{i:05d}": f"{tag}-value-{i:05d}".encode() for i in range(n)}


def main(quick: bool = False) -> None:
    sets, gets, lists = (30, 300, 5) if quick else (200, 3000, 20)
    revisions = 200 if quick else 1000
    imports = 1 if quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        svc = VaultService(Path(tmp) / "node", KeyPair.generate())
        rows: list[Row] = []
        for n in (10, 10_000):
            name = f"v{n}"
            svc.create_vault(name)
            svc.import_secrets(name, _items(n, "seed"))
            probe = f"dir{(n // 2) // 100:03d}/secret-{n // 2:05d}"
            rows.append(Row(f"get one secret ({n:,} secrets)", measure(lambda nm=name, p=probe: svc.get_secret(nm, p),
                                                                       repeat=gets, warmup=20),
                            "≤ 0.2 ms" + ("; ≤ 2× of 10" if n > 10 else "")))
            counter = itertools.count()
            rows.append(Row(f"set one secret, one commit ({n:,} secrets)",
                            measure(lambda nm=name, p=probe, c=counter: svc.set_secret(nm, p, b"v%d" % next(c)),
                                    repeat=sets, warmup=3), "≤ 5 ms"))
            rows.append(Row(f"list top directory ({n:,} secrets)",
                            measure(lambda nm=name: svc.list_secrets(nm, "", False), repeat=lists)))
            rows.append(Row(f"list recursively ({n:,} secrets)",
                            measure(lambda nm=name: svc.list_secrets(nm, "", True), repeat=lists)))
        svc.create_vault("hist")
        for i in range(revisions):
            svc.set_secret("hist", "rotating/key", b"rev-%d" % i)
        rows.append(Row(f"history of a secret with {revisions:,} revisions",
                        measure(lambda: svc.history("hist", "rotating/key"), repeat=5)))
        rows.append(Row(f"stat of a secret with {revisions:,} revisions",
                        measure(lambda: svc.stat("hist", "rotating/key"), repeat=5)))
        rows.append(Row(f"verify a vault of {revisions + 1:,} commits",
                        measure(lambda: svc.verify("hist"), repeat=3, warmup=0)))
        vaults = (f"imp{i}" for i in itertools.count())

        def import_10k() -> None:
            name = next(vaults)
            svc.create_vault(name)
            svc.import_secrets(name, _items(10_000, name))

        rows.append(Row("import 10,000 secrets in one commit (incl. create)",
                        measure(import_10k, repeat=imports, warmup=0), "≤ 5 s"))
        svc.close()
    print_table("Vaults (in-process VaultService, fsync on)", rows, baseline="get one secret (10 secrets)")


if __name__ == "__main__":
    main()
