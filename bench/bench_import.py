"""Bulk import and listing through a real agent (issue 9): `python -m bench import`.

1. Whole-process `pk secrets import VAULT FILE` of a 10,000-line .env file into a new vault
   (target <= 1.5 s), against `python -c pass` in the same run.
2. `secrets.list` recursive of the 10,000-secret vault over the agent socket, timed from the
   client (request, listing, JSON both ways): unchanged vault (target <= 20 ms), and right after
   one write (only the trees on the changed path are decrypted again). The compact answer (spec
   agent-protocol.md s.6) as `pk secrets ls` reads it (its lines) and as `polykey.Client` does
   (rows of dicts), and for reference the answer in rows that clients without `compact` get.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.bench_agent import PK, PY, _env, _pk
from bench.common import Row, measure, print_table


def main(quick: bool = False) -> None:
    runs = 3 if quick else 7
    lists = 10 if quick else 50
    with tempfile.TemporaryDirectory(prefix="pk-bench-import-") as tmp:
        node = Path(tmp) / "node"
        env = _env(node)
        dotenv = Path(tmp) / "big.env"
        dotenv.write_text("".join(f"SECRET_{i:05d}='value-{i:05d}-0123456789abcdef'\n" for i in range(10_000)))
        _pk(env, "bootstrap")
        _pk(env, "agent", "start")
        try:
            names = (f"imp{i}" for i in itertools.count())
            made: list[str] = []

            def make() -> None:
                made.append(next(names))
                _pk(env, "vaults", "create", made[-1])

            def run_import() -> None:
                subprocess.run([PK, "secrets", "import", made[-1], str(dotenv)], env=env, check=True,
                               stdout=subprocess.DEVNULL)

            base: list[float] = []
            imports: list[float] = []
            for _ in range(runs):
                base += measure(lambda: subprocess.run([PY, "-c", "pass"], check=True), repeat=1, warmup=0)
                make()
                imports += measure(run_import, repeat=1, warmup=0)
            from polykey.agent_client.client import connect
            from polykey.agent_client.protocol import listing_lines, listing_rows

            with connect(str(node)) as c:
                params = {"vault": made[0], "path": "", "recursive": True}
                compact = {**params, "compact": True}
                lines = lambda: listing_lines(c.call("secrets.list", compact))  # noqa: E731
                unchanged = measure(lines, repeat=lists, warmup=1)
                as_rows = measure(lambda: listing_rows(c.call("secrets.list", compact)), repeat=lists, warmup=1)
                old_rows = measure(lambda: c.call("secrets.list", params), repeat=lists, warmup=1)
                counter = itertools.count()

                def after_write() -> None:
                    c.call("secrets.set", {"vault": made[0], "path": "SECRET_00001", "value": b"%d" % next(counter)})

                changed: list[float] = []
                for _ in range(lists):
                    after_write()
                    changed += measure(lines, repeat=1, warmup=0)
            print_table("Import and listing through the agent", [
                Row("python -c pass", base),
                Row("pk secrets import of a 10,000-line .env (whole process)", imports, "≤ 1.5 s"),
                Row("secrets.list -r, 10,000 secrets, unchanged vault (client side, compact: lines)", unchanged, "≤ 20 ms"),
                Row("the same, compact answer turned into rows (polykey.Client)", as_rows, "≤ 20 ms"),
                Row("(reference) the same answered in rows (clients without compact)", old_rows),
                Row("secrets.list -r, 10,000 secrets, after one write (compact: lines)", changed),
            ], baseline="python -c pass")
        finally:
            subprocess.run([PK, "agent", "stop"], env=env, capture_output=True, check=False)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
