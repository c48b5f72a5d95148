"""Postroom: a self-hosted email campaign platform."""

__version__ = "0.1.0"
