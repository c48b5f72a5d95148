"""Per-workspace SMTP relays and the shared rate-limit windows (owned by the relays work)."""

from __future__ import annotations
