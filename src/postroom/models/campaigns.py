"""Broadcast campaigns (owned by the campaigns work)."""

from __future__ import annotations
