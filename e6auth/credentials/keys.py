"""Secret keys kept beside the embedded database: generated once, 0600, announced once."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
from pathlib import Path

__all__ = ["Pepper", "ensure_home", "load_or_create_key"]

log = logging.getLogger("e6auth")

KEY_BYTES = 32
MIN_KEY_BYTES = 32


class Pepper:
    """The HMAC key for token digests. Its repr and str never show the key."""

    __slots__ = ("_inner", "_outer", "id", "key")

    def __init__(self, key: bytes, *, id: int = 1) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a pepper needs at least {MIN_KEY_BYTES} bytes")
        self.key = key
        self.id = id
        # HMAC-SHA256 (RFC 2104) from its two keyed hash states, made once and copied for each
        # digest: six C calls. hmac.new looks SHA-256 up in OpenSSL and keys it on every call,
        # and a copied hmac.HMAC runs four Python methods: 24,000 and 17,500 instructions a
        # digest against 12,000 (measured). tests/test_tokens.py checks it against hmac.
        block = hashlib.sha256().block_size
        padded = (hashlib.sha256(key).digest() if len(key) > block else key).ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in padded))
        self._outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in padded))

    def digest(self, secret: str) -> bytes:
        """What the store keeps of a token's secret: HMAC-SHA256 of it, keyed by this pepper."""
        inner = self._inner.copy()
        inner.update(secret.encode("ascii"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def __repr__(self) -> str:
        return f"Pepper(id={self.id}, key=<hidden>)"

    __str__ = __repr__


def ensure_home(home: Path) -> Path:
    """Create the state folder, readable by its owner only."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return home


def load_or_create_key(path: Path, *, purpose: str) -> bytes:
    """Read a key file, or create it (0600) with fresh random bytes if there is none.

    Creation is atomic: the key is written to a private temporary file and linked into place, so
    two processes starting at once agree on one key and nobody reads a half-written file.
    """
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    ensure_home(path.parent)
    encoded = base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES))
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(encoded + b"\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return _read_key(path)
    finally:
        temporary.unlink(missing_ok=True)
    log.warning(
        "generated a new %s in %s (mode 0600); back it up: it cannot be recovered", purpose, path
    )
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    text = path.read_bytes().strip()
    try:
        key = base64.urlsafe_b64decode(text)
    except ValueError as exc:
        raise ValueError(f"{path} does not hold a base64 key") from exc
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{path} holds a key shorter than {MIN_KEY_BYTES} bytes")
    return key
