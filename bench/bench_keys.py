"""Key unlock time at the default and the test KDF limits (issue: foundation)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import Row, measure, print_table
from polykey import crypto
from polykey.keys.keypair import KeyPair
from polykey.keys.store import NodeDir


def main(quick: bool = False) -> None:
    pair = KeyPair.generate()
    rows = [Row("Ed25519 sign 64 B", measure(lambda: pair.sign(b"x" * 64), repeat=200))]
    with tempfile.TemporaryDirectory() as tmp:
        for profile, repeat in (("min", 50), ("interactive", 5), ("moderate", 3 if quick else 7)):
            node = NodeDir(Path(tmp) / profile)
            node.create(pair, b"bench password", crypto.KDF_PROFILES[profile])
            rows.append(Row(f"unlock node.key ({profile})", measure(lambda n=node: n.unlock(b"bench password"), repeat=repeat)))
    print_table("Key unlock (Argon2id + XChaCha20-Poly1305)", rows, baseline="Ed25519 sign 64 B")


if __name__ == "__main__":
    main()
