"""CLI commands of this domain (registered on the ``postroom`` app by ``register``)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this domain's commands to ``app`` (none yet)."""
