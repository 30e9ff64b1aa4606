"""Noise handshake and transport against the published cacophony vectors.

tests/vectors/noise-cacophony-25519-chachapoly.json: its "source" field says where it comes
from (the cacophony vectors distributed in mcginty/snow, filtered to 25519/ChaChaPoly XX, IK
and NN).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from polykey.wire.noise import HandshakeState

VECTORS = Path(__file__).parent.parent / "vectors" / "noise-cacophony-25519-chachapoly.json"
DATA = json.loads(VECTORS.read_text())


def _b(v: dict[str, Any], key: str) -> bytes | None:
    return bytes.fromhex(v[key]) if key in v else None


def _ids(v: dict[str, Any]) -> str:
    return str(v["protocol_name"])


def test_vector_file_has_a_source_and_the_xx_suites() -> None:
    assert "cacophony" in DATA["source"]
    names = {v["protocol_name"] for v in DATA["vectors"]}
    assert {"Noise_XX_25519_ChaChaPoly_SHA256", "Noise_XX_25519_ChaChaPoly_BLAKE2b"} <= names


@pytest.mark.parametrize("v", DATA["vectors"], ids=_ids)
def test_cacophony_vector(v: dict[str, Any]) -> None:
    name = v["protocol_name"]
    init = HandshakeState(
        name,
        initiator=True,
        prologue=bytes.fromhex(v["init_prologue"]),
        s=_b(v, "init_static"),
        e=_b(v, "init_ephemeral"),
        rs=_b(v, "init_remote_static"),
    )
    resp = HandshakeState(
        name,
        initiator=False,
        prologue=bytes.fromhex(v["resp_prologue"]),
        s=_b(v, "resp_static"),
        e=_b(v, "resp_ephemeral"),
        rs=_b(v, "resp_remote_static"),
    )
    sides = [init, resp]
    messages = v["messages"]
    i = 0
    # Handshake phase: the writer alternates initiator, responder, ...
    while not init.complete:
        m = messages[i]
        sender, receiver = sides[i % 2], sides[(i + 1) % 2]
        ct = sender.write_message(bytes.fromhex(m["payload"]))
        assert ct.hex() == m["ciphertext"], f"handshake message {i}"
        assert receiver.read_message(ct).hex() == m["payload"]
        i += 1
    assert resp.complete
    assert init.h.hex() == v["handshake_hash"] == resp.h.hex()
    i_send, i_recv = init.split()
    r_send, r_recv = resp.split()
    # Transport phase: messages keep alternating (the patterns here are all interactive).
    for j in range(i, len(messages)):
        m = messages[j]
        send, recv = (i_send, r_recv) if j % 2 == 0 else (r_send, i_recv)
        ct = send.encrypt_with_ad(b"", bytes.fromhex(m["payload"]))
        assert ct.hex() == m["ciphertext"], f"transport message {j}"
        assert recv.decrypt_with_ad(b"", ct).hex() == m["payload"]
