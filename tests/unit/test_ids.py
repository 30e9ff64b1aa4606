from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polykey.errors import InvalidInputError
from polykey.ids import NodeId, VaultId, decode_base32hex, encode_base32hex


@given(st.binary(min_size=32, max_size=32))
def test_node_id_round_trips(raw: bytes) -> None:
    text = str(NodeId(raw))
    assert text.startswith("v") and text == text.lower() and "=" not in text
    assert len(text) == 53
    assert NodeId.from_text(text) == NodeId(raw)


@given(st.binary(min_size=16, max_size=16))
def test_vault_id_round_trips(raw: bytes) -> None:
    assert VaultId.from_text(str(VaultId(raw))).raw == raw


@given(st.text(max_size=80))
def test_decoder_accepts_only_canonical_text(text: str) -> None:
    try:
        raw = decode_base32hex(text, 32, "NodeId")
    except InvalidInputError:
        return
    assert encode_base32hex(raw) == text


def test_known_encoding() -> None:
    # RFC 4648 base32hex of "foobar" is CPNMUOJ1E8======
    assert encode_base32hex(b"foobar") == "vcpnmuoj1e8"
    assert decode_base32hex("vcpnmuoj1e8", 6, "x") == b"foobar"


good = str(NodeId(bytes(range(32))))


@pytest.mark.parametrize(
    "bad",
    [
        "z" + good[1:],  # wrong multibase prefix
        good[1:],  # no prefix
        good.upper(),  # upper case is not canonical
        good[:-1],  # too short
        good + "0",  # too long
        good[:10] + "w" + good[11:],  # outside the base32hex alphabet
        good[:10] + "=" + good[11:],
        good[:-1] + "1",  # non-zero padding bits
        "",
    ],
)
def test_node_id_decoder_rejects(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        NodeId.from_text(bad)


def test_node_id_requires_32_bytes() -> None:
    with pytest.raises(InvalidInputError):
        NodeId(b"\x00" * 31)
