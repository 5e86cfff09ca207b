"""Webhook signatures (docs/alerts.md): ``t=T,v1=HMAC-SHA256(secret, f"{t}." + body)``."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from streamer.adapters.alert_delivery import sign, verify

SECRET = b"whsec-test-0123456789"
BODY = b'{"kind":"opened","stream_id":"1710452430000-0","alert":{"id":"A-20250314-0007"}}'
T = 1_710_452_430


def test_sign_is_the_hmac_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET, b"1710452430." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, T) == f"t=1710452430,v1={expected}"


def test_sign_matches_a_fixed_vector() -> None:
    # computed outside Python:
    # printf '%s' '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
    assert sign(b"secret", b'{"a":1}', 1_700_000_000) == (
        "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
    )


def test_verify_accepts_a_fresh_signature() -> None:
    header = sign(SECRET, BODY, T)
    assert verify(SECRET, BODY, header, now=T)
    assert verify(SECRET, BODY, header, now=T + 299.5)
    assert verify(SECRET, BODY, header, now=T + 30, tolerance_s=30)


def test_verify_rejects_a_tampered_body() -> None:
    header = sign(SECRET, BODY, T)
    assert not verify(SECRET, BODY.replace(b"opened", b"closed"), header, now=T)
    assert not verify(SECRET, BODY + b" ", header, now=T)


def test_verify_rejects_a_wrong_secret_or_tampered_header() -> None:
    header = sign(SECRET, BODY, T)
    assert not verify(b"another-secret", BODY, header, now=T)
    # the timestamp is signed too: moving it forward breaks the signature
    assert not verify(SECRET, BODY, header.replace(f"t={T}", f"t={T + 1}"), now=T)
    last = header[-1]
    flipped = header[:-1] + ("0" if last != "0" else "1")
    assert not verify(SECRET, BODY, flipped, now=T)


def test_verify_rejects_an_old_or_far_future_timestamp() -> None:
    header = sign(SECRET, BODY, T)
    assert not verify(SECRET, BODY, header, now=T + 301)
    assert not verify(SECRET, BODY, header, now=T + 31, tolerance_s=30)
    assert not verify(SECRET, BODY, header, now=T - 301)


def test_verify_rejects_malformed_headers() -> None:
    digest = hmac.new(SECRET, f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    for header in (
        "",
        f"v1={digest}",  # no timestamp
        f"t={T}",  # no signature
        f"t=soon,v1={digest}",
        f"t={T};v1={digest}",
        digest,
    ):
        assert not verify(SECRET, BODY, header, now=T), header


def test_verify_accepts_any_matching_v1_among_several() -> None:
    digest = hmac.new(SECRET, f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert verify(SECRET, BODY, f"t={T},v1={'0' * 64},v1={digest}", now=T)
    assert not verify(SECRET, BODY, f"t={T},v1={'0' * 64}", now=T)


@given(
    secret=st.binary(min_size=1, max_size=64), body=st.binary(max_size=512), t=st.integers(0, 2**33)
)
def test_round_trip_and_any_changed_byte_is_rejected(secret: bytes, body: bytes, t: int) -> None:
    header = sign(secret, body, t)
    assert verify(secret, body, header, now=t)
    for i in range(len(body)):
        changed = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]
        assert not verify(secret, changed, header, now=t)
