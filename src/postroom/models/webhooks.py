"""Outbound webhook endpoints, their deliveries and the outbox cursor (webhooks work)."""

from __future__ import annotations
