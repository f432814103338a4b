"""Client keys: stored hashed, compared in constant time, open access only when configured."""

from __future__ import annotations

import hashlib

import pytest

from config.schema import AuthConfig, ClientKey
from gateway.auth import KeyRing, hash_key
from gateway.errors import AuthenticationFailed


def test_hash_key_format() -> None:
    digest = hash_key("sk-a")
    assert digest == "sha256:" + hashlib.sha256(b"sk-a").hexdigest()
    prefix, _, hexpart = digest.partition(":")
    assert prefix == "sha256"
    assert len(hexpart) == 64
    assert set(hexpart) <= set("0123456789abcdef")
    # What hash-key prints must be accepted by the config schema.
    assert ClientKey(name="a", hash=digest).hash == digest


def _ring() -> KeyRing:
    return KeyRing.from_config(
        AuthConfig(keys=[ClientKey(name="alpha", hash=hash_key("sk-a")), ClientKey(name="beta", hash=hash_key("sk-b"))])
    )


@pytest.mark.parametrize(
    ("header", "name"),
    [(b"Bearer sk-a", "alpha"), (b"Bearer sk-b", "beta"), (b"bearer sk-b", "beta"), (b"Bearer  sk-a ", "alpha")],
)
def test_identify_right_key(header: bytes, name: str) -> None:
    assert _ring().identify(header) == name


@pytest.mark.parametrize(
    "header",
    [None, b"", b"Bearer sk-c", b"Bearer sk-A", b"Bearer", b"Bearer    ", b"Basic c2stYQ==", b"sk-a", b"Token sk-a"],
)
def test_identify_rejects(header: bytes | None) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        _ring().identify(header)
    assert caught.value.status == 401
    # Never echo what was presented: it may be someone's real key sent to the wrong place.
    token = (header or b"").partition(b" ")[2].strip().decode()
    if token:
        assert token not in caught.value.message


def test_mode_none_is_open() -> None:
    ring = KeyRing.from_config(AuthConfig(mode="none"))
    assert ring.open_access
    assert ring.identify(None) == "anonymous"
    assert ring.identify(b"Bearer anything") == "anonymous"


def test_keyring_with_no_keys_rejects_everything() -> None:
    ring = KeyRing.from_config(AuthConfig(mode="keys", keys=[]))
    with pytest.raises(AuthenticationFailed):
        ring.identify(b"Bearer sk-a")
