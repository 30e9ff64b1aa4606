from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey import crypto
from polykey.errors import KeyFileError, WrongPasswordError
from polykey.keys import keyfile
from polykey.keys.keypair import KeyPair

LIMITS = crypto.KDF_PROFILES["min"]
PAIR = KeyPair.from_seed(bytes(range(32)))


def encoded(password: bytes = b"pw") -> bytes:
    return keyfile.encode(PAIR, password, LIMITS)


def test_round_trip_and_layout() -> None:
    data = encoded()
    assert len(data) == keyfile.FILE_BYTES == 138
    assert data[:4] == b"PKKY" and data[4] == 1 and data[5] == 1
    kf = keyfile.decode(data)
    assert kf.public_key == PAIR.public_key and kf.limits == LIMITS
    assert kf.unlock(b"pw") == PAIR
    assert PAIR.seed not in data


def test_wrong_password() -> None:
    with pytest.raises(WrongPasswordError, match="wrong password"):
        keyfile.decode(encoded()).unlock(b"nope")


def test_deterministic_with_injected_rng() -> None:
    rng = lambda n: b"\x01" * n  # noqa: E731
    assert keyfile.encode(PAIR, b"pw", LIMITS, rng=rng) == keyfile.encode(PAIR, b"pw", LIMITS, rng=rng)


@pytest.mark.parametrize("cut", [0, 3, 10, 66, 100, 137])
def test_truncated(cut: int) -> None:
    with pytest.raises(KeyFileError, match="my.key"):
        keyfile.decode(encoded()[:cut], name="my.key")


def test_trailing_bytes_and_versions() -> None:
    data = encoded()
    with pytest.raises(KeyFileError, match="trailing"):
        keyfile.decode(data + b"\x00")
    with pytest.raises(KeyFileError, match="version"):
        keyfile.decode(data[:4] + b"\x02" + data[5:])
    with pytest.raises(KeyFileError, match="KDF"):
        keyfile.decode(data[:5] + b"\x09" + data[6:])


@pytest.mark.parametrize("offset", [10, 20, 40, 70, 100, 137])
def test_tampered_byte_is_detected(offset: int) -> None:
    data = bytearray(encoded())
    data[offset] ^= 0x40
    with pytest.raises((KeyFileError, WrongPasswordError)):
        keyfile.decode(bytes(data)).unlock(b"pw")


@given(st.binary(max_size=300))
@settings(max_examples=200)
def test_decode_never_crashes_on_garbage(data: bytes) -> None:
    try:
        keyfile.decode(data)
    except KeyFileError:
        pass


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=1, max_size=64))
@settings(max_examples=25, deadline=None)
def test_round_trip_any_seed_and_password(seed: bytes, password: bytes) -> None:
    pair = KeyPair.from_seed(seed)
    data = keyfile.encode(pair, password, LIMITS)
    decoded = keyfile.decode(data)
    assert decoded.header + decoded.sealed == data  # byte-for-byte
    assert decoded.unlock(password) == pair


@pytest.mark.parametrize(
    "opslimit,memlimit",
    [
        (2**32 - 1, 8192),  # blocked pk for ~130 s (issue 8 item 4)
        (keyfile.MAX_OPSLIMIT + 1, 8192),
        (1, 512 << 30),  # killed the agent with a raw nacl traceback
        (1, keyfile.MAX_MEMLIMIT + 1),
        (1, 8191),
        (0, 8192),
    ],
)
def test_kdf_limits_outside_the_key_file_range_are_refused_at_parse(opslimit: int, memlimit: int) -> None:
    data = encoded()
    forged = data[:6] + opslimit.to_bytes(4, "big") + memlimit.to_bytes(8, "big") + data[18:]
    with pytest.raises(KeyFileError, match=r"my\.key has out-of-range KDF limits .*allowed 1\.\.16 and 8192 bytes\.\.4 GiB"):
        keyfile.decode(forged, name="my.key")


def test_the_key_file_range_is_a_few_times_sensitive_and_is_enforced_on_write() -> None:
    assert (keyfile.MAX_OPSLIMIT, keyfile.MAX_MEMLIMIT) == (4 * crypto.SENSITIVE_KDF.opslimit, 4 * crypto.SENSITIVE_KDF.memlimit)
    edge = encoded()[:6] + keyfile.MAX_OPSLIMIT.to_bytes(4, "big") + keyfile.MAX_MEMLIMIT.to_bytes(8, "big") + encoded()[18:]
    assert keyfile.decode(edge).limits == crypto.KdfLimits(keyfile.MAX_OPSLIMIT, keyfile.MAX_MEMLIMIT)
    with pytest.raises(KeyFileError, match="a new key file has out-of-range"):
        keyfile.encode(PAIR, b"pw", crypto.KdfLimits(keyfile.MAX_OPSLIMIT + 1, 8192))


def test_argon2id_without_the_memory_it_needs_is_a_crypto_error_not_a_crash() -> None:
    import subprocess
    import sys

    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))\n"
        "from polykey import crypto\n"
        "from polykey.errors import CryptoError\n"
        "try:\n"
        "    crypto.password_key(b'pw', bytes(16), crypto.KdfLimits(1, 2 << 30))\n"
        "except CryptoError as e:\n"
        "    print(e.message)\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert r.stdout == "not enough memory for Argon2id with a 2048 MiB memory limit\n"
