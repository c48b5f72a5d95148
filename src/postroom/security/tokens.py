"""Signed, unforgeable tokens for public links (tracking, unsubscribe, confirmation).

Format: ``base64url(payload) + base64url(mac[:16])`` where the MAC is HMAC-SHA256 over a
purpose string and the payload, with a key derived per purpose from the secret key. A
token signed with an old key (``POSTROOM_OLD_SECRET_KEYS``) still verifies, so links in
mail already sent keep working after a rotation. Tokens carry no expiry of their own:
unsubscribe links must work forever; purposes that expire put a time in the payload.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Strict: only the one canonical spelling decodes. base64 leaves spare low bits in
    the last character, so without the check a token would have several valid forms."""
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not canonical base64url")
    return data


def derive_key(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, b"postroom-derive:" + purpose.encode(), hashlib.sha256).digest()


class TokenSigner:
    def __init__(self, keys: Sequence[bytes], purpose: str) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._purpose = purpose.encode()
        self._keys = [derive_key(key, purpose) for key in keys]

    def _mac(self, key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, self._purpose + b"\x00" + payload, hashlib.sha256).digest()[:MAC_BYTES]

    def sign(self, payload: bytes) -> str:
        return _b64(payload) + "." + _b64(self._mac(self._keys[0], payload))

    def verify(self, token: str) -> bytes | None:
        """The payload, or ``None`` for anything not signed by one of our keys."""
        body, dot, mac_text = token.rpartition(".")
        if not dot or len(token) > 4096:
            return None
        try:
            payload = _unb64(body)
            mac = _unb64(mac_text)
        except (ValueError, TypeError):
            return None
        for key in self._keys:
            if hmac.compare_digest(mac, self._mac(key, payload)):
                return payload
        return None
