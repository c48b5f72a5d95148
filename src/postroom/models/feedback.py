"""Inbound mail kept for inspection and feedback bookkeeping (owned by the feedback work)."""

from __future__ import annotations
