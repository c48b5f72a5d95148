"""Encryption of stored secrets (DKIM private keys, relay passwords, webhook secrets).

Fernet (AES-128-CBC + HMAC-SHA256) with keys derived from the secret key by HKDF. The
current key encrypts; old keys still decrypt, and ``rotate`` re-encrypts a value under the
current key (``postroom secrets rotate`` runs it over every registered column).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from postroom.errors import ConfigurationError


def _fernet_key(secret: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"postroom-secret-box")
    return base64.urlsafe_b64encode(hkdf.derive(secret))


class SecretBox:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ConfigurationError("no secret key configured")
        self._current = Fernet(_fernet_key(keys[0]))
        self._all = MultiFernet([Fernet(_fernet_key(key)) for key in keys])

    def encrypt(self, plaintext: str) -> str:
        return self._current.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._all.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ConfigurationError(
                "a stored secret cannot be decrypted with the configured keys; "
                "add the key it was written with to POSTROOM_OLD_SECRET_KEYS"
            ) from exc

    def is_current(self, token: str) -> bool:
        try:
            self._current.decrypt(token.encode())
        except InvalidToken:
            return False
        return True

    def rotate(self, token: str) -> str:
        """The same plaintext, encrypted under the current key."""
        return self.encrypt(self.decrypt(token))
