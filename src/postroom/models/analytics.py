"""Analytics counters maintained as events arrive (owned by the analytics work)."""

from __future__ import annotations
