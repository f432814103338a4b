"""Client keys: stored as SHA-256 digests, compared in constant time.

Every stored digest is compared on every check (no early exit), so timing
reveals neither whether a key exists nor which one matched.
"""

from __future__ import annotations

import hashlib
import hmac

from config.schema import AuthConfig, ClientKey
from gateway.errors import AuthenticationFailed


def hash_key(plain: str) -> str:
    return "sha256:" + hashlib.sha256(plain.encode()).hexdigest()


class KeyRing:
    def __init__(self, entries: list[tuple[str, bytes]], open_access: bool) -> None:
        self._entries = entries
        self.open_access = open_access

    @classmethod
    def from_config(cls, auth: AuthConfig) -> KeyRing:
        return cls.of(auth.keys, open_access=auth.mode == "none")

    @classmethod
    def of(cls, keys: list[ClientKey], open_access: bool = False) -> KeyRing:
        """The loader has already turned every `key_env` into a hash."""
        return cls([(key.name, bytes.fromhex(key.hash.partition(":")[2])) for key in keys if key.hash], open_access)

    def add(self, name: str, plain: str) -> None:
        self._entries.append((name, hashlib.sha256(plain.encode()).digest()))

    @property
    def has_keys(self) -> bool:
        return bool(self._entries)

    def identify(self, authorization: bytes | None) -> str:
        """Name of the key in an `Authorization: Bearer ...` header; raises when unknown."""
        if self.open_access:
            return "anonymous"
        if not authorization:
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'."
            )
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            raise AuthenticationFailed("Malformed Authorization header; expected 'Bearer YOUR_KEY'.")
        presented = hashlib.sha256(token.strip()).digest()
        found: str | None = None
        for name, digest in self._entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = name
        if found is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return found
