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


def b64(data: bytes) -> str:
    """Unpadded base64url, the encoding of both halves of a token."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_b64 = b64


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
        # The HMAC state after the key and the purpose prefix, copied for each token
        # (saves two of the four or five SHA-256 blocks a short token costs).
        self._signing = hmac.new(self._keys[0], self._purpose + b"\x00", hashlib.sha256)

    def _mac(self, key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, self._purpose + b"\x00" + payload, hashlib.sha256).digest()[:MAC_BYTES]

    def sign(self, payload: bytes) -> str:
        return self.sign_encoded(payload, _b64(payload))

    def sign_encoded(self, payload: bytes, encoded: str) -> str:
        """:meth:`sign` for a payload whose base64url form (``b64(payload)``) the caller
        already has: several signers signing the same payload encode it once."""
        mac = self._signing.copy()
        mac.update(payload)
        return encoded + "." + _b64(mac.digest()[:MAC_BYTES])

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
