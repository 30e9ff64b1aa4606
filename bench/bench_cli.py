"""Everyday commands as users get them, against gopass and pass (issue 9): `python -m bench cli`.

`pk` is the one a user gets: a temporary venv with a normal `pip install .` of this tree
(bench.common.installed), never the checkout's editable install. Every figure is the median of
whole processes (spawn to exit, stdout to /dev/null), each table's commands run round-robin in the
same run so that load from other work hits them alike, with ratios to the peers:

- `pk secrets get` vs `gopass show` / `pass show`;
- `pk secrets set` (value on stdin) vs `gopass insert` / `pass insert -m`;
- `pk secrets ls -r` of 1,000 secrets vs `gopass ls` / `pass ls` of a 1,000-entry store;
- `pk secrets env A=X B=Y -- true` vs two `gopass show` (and two `pass show`) in `sh`;

and always `python -c pass` / `python -S -c pass` of the same venv's interpreter. Where gopass or
pass is not installed the bench says so and those columns are left out.

The peers get a throwaway GNUPGHOME with a key without passphrase (made in batch mode) and
password stores of the same size as the vaults; the store `insert` writes to is a git repository,
as `pk`'s vaults are, so both commit every write. gopass 1.5 (Debian's) reads an inserted value
only from a terminal: from a pipe it stores an empty value -- with the same encryption and commit,
so it is timed anyway.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import Row, installed, print_ratio_table, spawn_time

BIG = 1000
SECRET = b"bench-s3cret-value-0123456789"


def _items(n: int) -> dict[str, bytes]:
    return {f"dir{i // 100:03d}/secret-{i:05d}": f"value-{i:05d}".encode() for i in range(n)}


def _run(argv: list[str], env: dict[str, str], input: bytes = b"") -> bytes:
    r = subprocess.run(argv, input=input, capture_output=True, env=env, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {r.stderr.decode(errors='replace')}")
    return r.stdout


class Peers:
    """gopass and pass with a throwaway key and two stores: a small one (get, set, env) and a big one (ls)."""

    def __init__(self, root: Path) -> None:
        self.gopass = shutil.which("gopass")
        self.pass_ = shutil.which("pass")
        self.gpg = shutil.which("gpg")
        self.available = bool(self.gpg and (self.gopass or self.pass_))
        self.home = root / "gnupg"
        self.small = root / "store-small"
        self.big = root / "store-big"
        self.env = {**os.environ, "GNUPGHOME": str(self.home), "PASSWORD_STORE_DIR": str(self.small)}
        self.big_env = {**self.env, "PASSWORD_STORE_DIR": str(self.big)}
        if self.available:
            self._setup()

    def _setup(self) -> None:
        assert self.gpg is not None
        self.home.mkdir(mode=0o700)
        params = ("%no-protection\nKey-Type: EDDSA\nKey-Curve: ed25519\nSubkey-Type: ECDH\nSubkey-Curve: cv25519\n"
                  "Name-Real: bench\nName-Email: bench@polykey.invalid\nExpire-Date: 0\n%commit\n")
        _run([self.gpg, "--batch", "--quiet", "--gen-key"], self.env, params.encode())
        listing = _run([self.gpg, "--list-keys", "--with-colons"], self.env).decode()
        fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
        tool = self.pass_
        for store in (self.small, self.big):
            store.mkdir()
            (store / ".gpg-id").write_text(fpr + "\n")
        if tool:
            _run([tool, "git", "init"], self.env)
        else:
            _run(["git", "init", "-q", str(self.small)], self.env)
        for name, value in (("bench/db/password", SECRET), ("bench/db/user", b"admin")):
            self._encrypt(fpr, self.small / f"{name}.gpg", value)
        (self.small / "bench" / "set").mkdir()
        self._encrypt(fpr, self.small / "bench" / "set" / "x.gpg", SECRET)
        one = self.big / "one.gpg"
        self._encrypt(fpr, one, SECRET)
        for path in _items(BIG):  # the same valid ciphertext under 1,000 names: listing never decrypts
            target = self.big / f"{path}.gpg"
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(one, target)
        one.unlink()

    def _encrypt(self, fpr: str, path: Path, value: bytes) -> None:
        assert self.gpg is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        _run([self.gpg, "--batch", "--yes", "--quiet", "--trust-model", "always", "-e", "-r", fpr, "-o", str(path)],
             self.env, value)

    def close(self) -> None:
        if self.available and shutil.which("gpgconf"):
            subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=self.env, capture_output=True, check=False)


def _table(title: str, commands: list[tuple[str, list[str], bytes | None, dict[str, str], str]], runs: int,
           peers: list[str]) -> None:
    """Run ``commands`` (name, argv, stdin, env, target) round-robin ``runs`` times and print them."""
    for _, argv, stdin, env, _ in commands * 2:  # warm-up: caches, the agent's open vault, gpg-agent
        spawn_time(argv, env, stdin)
    samples: dict[str, list[float]] = {name: [] for name, *_ in commands}
    for _ in range(runs):
        for name, argv, stdin, env, _ in commands:
            samples[name].append(spawn_time(argv, env, stdin))
    rows = [Row(name, samples[name], target) for name, _, _, _, target in commands]
    print_ratio_table(title, rows, [p for p in peers if p in samples])


def main(quick: bool = False) -> None:
    runs = 15 if quick else 60
    inst = installed()
    py, pk = str(inst.python), str(inst.pk)
    with tempfile.TemporaryDirectory(prefix="pk-bench-cli-") as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
        env.update(PK_NODE_PATH=str(root / "node"), PK_PASSWORD="bench password", PK_KDF_PROFILE="min")
        _run([pk, "bootstrap"], env)
        peers = Peers(root)
        try:
            _run([pk, "vaults", "create", "bench"], env)
            _run([pk, "secrets", "set", "bench:db/password"], env, SECRET)
            _run([pk, "secrets", "set", "bench:db/user"], env, b"admin")
            _run([pk, "vaults", "create", "big"], env)
            from polykey.agent_client.client import connect

            with connect(env["PK_NODE_PATH"]) as c:
                c.call("secrets.import", {"vault": "big", "items": _items(BIG)})
            listed = _run([pk, "secrets", "ls", "-r", "big"], env).decode().splitlines()
            assert sum(not line.endswith("/") for line in listed) == BIG, len(listed)
            _print_tables(py, pk, env, peers, runs)
        finally:
            peers.close()
            subprocess.run([pk, "agent", "stop"], env=env, capture_output=True, check=False)


def _print_tables(py: str, pk: str, env: dict[str, str], peers: Peers, runs: int) -> None:
    interp = [("python -c pass", [py, "-c", "pass"], None, env, ""),
              ("python -S -c pass", [py, "-S", "-c", "pass"], None, env, "")]
    names = ["gopass", "pass"] if peers.available else []
    if not peers.available:
        print("\n(gopass and pass are not installed here, or gpg is missing: the tables compare with "
              "`python -c pass` and `python -S -c pass` only)")
    cols = [n for n, tool in (("gopass", peers.gopass), ("pass", peers.pass_)) if tool and n in names]

    def peer(name: str, tool: str | None, argv: list[str], stdin: bytes | None = None,
             penv: dict[str, str] | None = None) -> list[tuple[str, list[str], bytes | None, dict[str, str], str]]:
        return [(name, [tool, *argv], stdin, penv or peers.env, "")] if tool and name.split()[0] in cols else []

    _table("Everyday commands: `pk secrets get` (agent running)", [
        ("pk secrets get", [pk, "secrets", "get", "bench:db/password"], None, env,
         "≤ 1.0× gopass, ≤ 1.5× python -c pass"),
        *peer("gopass show", peers.gopass, ["show", "bench/db/password"]),
        *peer("pass show", peers.pass_, ["show", "bench/db/password"]),
        *interp,
    ], runs, [f"{n} show" for n in cols] + ["python -c pass"])
    _table("Everyday commands: `pk secrets set`, value on stdin (one commit each)", [
        ("pk secrets set", [pk, "secrets", "set", "bench:set/x"], SECRET, env, "≤ 1.0× gopass"),
        *peer("gopass insert", peers.gopass, ["insert", "-f", "bench/set/x"], SECRET + b"\n" + SECRET + b"\n"),
        *peer("pass insert", peers.pass_, ["insert", "-m", "-f", "bench/set/y"], SECRET),
        *interp,
    ], runs, [f"{n} insert" for n in cols] + ["python -c pass"])
    _table(f"Everyday commands: `pk secrets ls -r` of {BIG:,} secrets", [
        ("pk secrets ls -r", [pk, "secrets", "ls", "-r", "big"], None, env, "≤ 1.5× pass, ≤ 3× gopass"),
        *peer("gopass ls", peers.gopass, ["ls"], None, peers.big_env),
        *peer("pass ls", peers.pass_, ["ls"], None, peers.big_env),
        *interp,
    ], runs, [f"{n} ls" for n in cols] + ["python -c pass"])
    sh_env = {**env, **peers.env}
    two = {n: f'A=$({tool} show bench/db/password) B=$({tool} show bench/db/user) exec true'
           for n, tool in (("gopass", peers.gopass), ("pass", peers.pass_)) if tool and n in cols}
    _table("Everyday commands: `pk secrets env` with two secrets, running `true`", [
        ("pk secrets env", [pk, "secrets", "env", "bench:db/password=A", "bench:db/user=B", "--", "true"], None, env,
         "≤ 1.0× two gopass show"),
        *[(f"two {n} show in sh", ["sh", "-c", script], None, sh_env, "") for n, script in two.items()],
        *interp,
    ], runs, [f"two {n} show in sh" for n in two] + ["python -c pass"])


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
