"""Route classification cases of this domain: update ``ROUTES`` and ``PATH_FACTORIES``."""

from __future__ import annotations

from tests.support.routes import PATH_FACTORIES, ROUTES

__all__ = ["PATH_FACTORIES", "ROUTES"]
